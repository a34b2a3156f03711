"""The Spark scoring job on the real engine (``local[2]``), from a real registered model, on real
CIFAKE test JPEGs plus broken and unsupported files; compared with in-process ``cifake predict``.
"""

from __future__ import annotations

import shlex
import tarfile
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import hostile
import mlflow
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import (
    SHARED_DATA,
    jpeg_bytes,
    small_champion_store,
    synthetic_image,
)

from cifake_mlflow.cli import main
from cifake_mlflow.serving.batch import find_images, local_scorer, predict_rows

pyspark = pytest.importorskip("pyspark", reason="the Spark extra: pip install -e '.[spark]'")
spark_scoring = pytest.importorskip("cifake_mlflow.serving.spark")

MODEL = "cifake-detector"
URI = f"models:/{MODEL}@champion"
IMAGES = 300  # real CIFAKE test JPEGs (half REAL, half FAKE)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A sqlite registry whose champion is a briefly trained detector; the work folder."""
    yield from small_champion_store(tmp_path_factory, "spark", seed=9, epochs=1, model=MODEL)


@pytest.fixture(scope="module")
def spark(store: Path) -> Iterator[object]:
    session = spark_scoring.spark_session("local[2]")
    session.conf.set("spark.sql.shuffle.partitions", "2")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def images(store: Path) -> Path:
    """A nested folder of real CIFAKE JPEGs, a broken JPEG, an EPS named .png, and a text
    file (not an image suffix: not picked up)."""
    root = store / "archive"
    (root / "REAL").mkdir(parents=True)
    (root / "FAKE" / "deeper").mkdir(parents=True)
    archive = SHARED_DATA / "cifake-test.tar.gz"
    written = {"REAL": 0, "FAKE": 0}
    if archive.is_file():
        with tarfile.open(archive) as tar:
            for member in tar:
                cls = Path(member.name).parent.name
                if member.isfile() and cls in written and written[cls] < IMAGES // 2:
                    folder = root / cls / ("deeper" if cls == "FAKE" and written[cls] % 3 else "")
                    (folder / Path(member.name).name).write_bytes(tar.extractfile(member).read())
                    written[cls] += 1
                if sum(written.values()) == IMAGES:
                    break
    else:
        rng = np.random.default_rng(3)
        for i in range(IMAGES):
            cls = "FAKE" if i % 2 else "REAL"
            (root / cls / f"{i} (1).jpg").write_bytes(jpeg_bytes(synthetic_image(i % 2, rng)))
    good = next((root / "REAL").glob("*.jpg")).read_bytes()
    (root / "REAL" / "broken.jpg").write_bytes(good[: len(good) // 2])
    (root / "FAKE" / "poster.png").write_bytes(hostile.eps())
    (root / "FAKE" / "empty.JPG").write_bytes(b"")
    (root / "notes.txt").write_text("not an image, not picked up")
    return root


def local_path(spark_path: str) -> str:
    return unquote(urlsplit(spark_path).path)


@pytest.fixture(scope="module")
def expected(store: Path, images: Path) -> pd.DataFrame:
    """In-process ``cifake predict`` rows for the same files, by local path."""
    scorer = local_scorer(URI)
    rows = [r for batch in predict_rows(find_images([images]), scorer, 64, False) for r in batch]
    return pd.DataFrame(rows).set_index("path")


def test_spark_job_scores_like_cifake_predict_with_error_rows(
    spark: object, store: Path, images: Path, expected: pd.DataFrame
) -> None:
    out = store / "scores.parquet"
    summary = spark_scoring.run_job(spark, [str(images)], str(out), URI, batch_size=32)
    version = str(mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion").version)
    assert (summary.found, summary.scored, summary.skipped) == (IMAGES + 2, IMAGES + 2, 0)
    assert summary.model_version == version and summary.errors == 2
    got = spark_scoring.read_scores(spark, str(out))
    assert list(got.columns) == list(spark_scoring.COLUMNS)
    assert len(got) == IMAGES + 2 and got["path"].is_unique
    got = got.assign(path=got["path"].map(local_path)).set_index("path").sort_index()
    # Spark's file source skips zero-byte files; cifake predict gives them an error row.
    empty = str(images / "FAKE" / "empty.JPG")
    assert expected.loc[empty, "error"] == "empty file"
    assert sorted(got.index) == sorted(set(expected.index) - {empty})
    assert set(got["model_version"]) == {version}
    ok = expected[expected["error"] == ""]
    assert len(ok) == IMAGES
    # float32 scores of the same images in batches of other sizes (Spark's Arrow batches, the
    # local scorer's chunks) agree to about 1e-6; seen 1.7e-6 apart when both cores are busy.
    np.testing.assert_allclose(got.loc[ok.index, "prob_fake"], ok["prob_fake"], atol=1e-5)
    assert list(got.loc[ok.index, "label"]) == list(ok["label"])
    assert np.ptp(ok["prob_fake"]) > 1e-4, "precondition: scores must differ between images"
    errors = got[got["error"] != ""]
    assert sorted(Path(p).name for p in errors.index) == ["broken.jpg", "poster.png"]
    assert errors["prob_fake"].isna().all()
    for path in errors.index:
        assert errors.loc[path, "error"] == expected.loc[path, "error"]
    assert (
        "format EPS/PostScript is not supported"
        in errors.loc[str(images / "FAKE" / "poster.png"), "error"]
    )


def test_rerun_scores_nothing_twice_and_a_killed_job_resumes(
    spark: object, store: Path, images: Path
) -> None:
    out = str(store / "resumed.csv")

    def crash_after_first_chunk(line: str) -> None:
        if line.startswith("chunk 1:"):
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        spark_scoring.run_job(
            spark, [str(images)], out, URI, fmt="csv", commit_every=100, log=crash_after_first_chunk
        )
    kept = spark_scoring.read_scores(spark, out, "csv")
    assert len(kept) == 100  # the committed chunk survives the crash
    resumed = spark_scoring.run_job(spark, [str(images)], out, URI, fmt="csv", commit_every=100)
    assert (resumed.skipped, resumed.scored) == (100, IMAGES + 2 - 100)
    again = spark_scoring.run_job(spark, [str(images)], out, URI, fmt="csv", commit_every=100)
    assert (again.skipped, again.scored) == (IMAGES + 2, 0)
    final = spark_scoring.read_scores(spark, out, "csv")
    assert len(final) == IMAGES + 2 and final["path"].is_unique
    assert set(kept["path"]) <= set(final["path"])


def test_empty_input_and_missing_path_say_so(spark: object, store: Path) -> None:
    empty = store / "nothing-here"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    with pytest.raises(spark_scoring.SparkJobError, match="no image files"):
        spark_scoring.run_job(spark, [str(empty)], str(store / "none.parquet"), URI)
    with pytest.raises(spark_scoring.SparkJobError, match="cannot read"):
        spark_scoring.run_job(spark, [str(store / "missing")], str(store / "none.parquet"), URI)


def test_cli_predict_spark_writes_parquet(store: Path, images: Path, spark: object) -> None:
    out = store / "cli.parquet"
    result = CliRunner().invoke(
        main, ["predict-spark", str(images / "REAL"), "-o", str(out), "--master", "local[2]"]
    )
    assert result.exit_code == 0, result.output
    assert "scored" in result.output and URI.split("@")[0] in result.output
    assert len(spark_scoring.read_scores(spark, str(out))) == IMAGES // 2 + 1


def test_mlproject_predict_spark_entry_point_runs(store: Path, images: Path, spark: object) -> None:
    """The entry point's command, rendered as `mlflow run -e predict_spark` renders it, runs."""
    from mlflow.projects import _project_spec

    root = Path(__file__).resolve().parents[1]
    entry = _project_spec.load_project(str(root)).get_entry_point("predict_spark")
    out = store / "entry.csv"
    # format and master are not declared: MLflow passes them on as --format csv --master ...
    values = {"inputs": str(images / "FAKE"), "output": str(out), "format": "csv"}
    values |= {"master": "local[2]", "model_uri": "models:/cifake-detector@champion"}
    args = shlex.split(entry.compute_command(values, str(store)))
    assert args[:3] == ["python", "-m", "cifake_mlflow"]
    result = CliRunner().invoke(main, args[3:])
    assert result.exit_code == 0, result.output
    assert len(spark_scoring.read_scores(spark, str(out), "csv")) == IMAGES // 2 + 1
