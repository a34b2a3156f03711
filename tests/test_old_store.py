"""A store written by the flat-package code (before the stage subpackages) keeps working.

The code of the last flat-layout commit is taken from git, trains and registers a detector
into a sqlite store in a subprocess; today's code then loads, compares and serves it. Every
logged model carries the package it was logged with, so an old model must keep scoring the
same under the new layout.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_cifake

from cifake_mlflow.cli import main
from cifake_mlflow.serving.server import Server, encode, post
from cifake_mlflow.tracking.schema import frame

ROOT = Path(__file__).resolve().parents[1]
#: The last commit of the flat layout (``cifake_mlflow/pyfunc.py``, ``cifake_mlflow/tracking.py``).
FLAT_LAYOUT_COMMIT = "9079dc088a81bd62cd1b0fb8489fd1a6083645d5"
MODEL = "cifake-detector"


def _old_package(dest: Path) -> Path:
    """Extract the flat-layout package from git into ``dest``; skip where history is absent."""
    done = subprocess.run(
        ["git", "-C", str(ROOT), "archive", FLAT_LAYOUT_COMMIT, "cifake_mlflow"],
        capture_output=True,
        timeout=60,
    )
    if done.returncode != 0:
        pytest.skip(f"git history without {FLAT_LAYOUT_COMMIT[:7]}: {done.stderr[:200]!r}")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as archive:
        archive.extractall(dest, filter="data")
    return dest


@pytest.fixture(scope="module")
def old_store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A store the old code wrote: one training run, registered as champion; its scores."""
    work = tmp_path_factory.mktemp("old-store")
    old = _old_package(work / "old-code")
    data = write_cifake(work / "cifake", {"train": 60, "test": 8}, seed=5)
    env = {
        **os.environ,
        "PYTHONPATH": str(old),
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "CIFAKE_CACHE_DIR": str(work / "cache"),
    }

    def old_cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cifake_mlflow", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done.stdout

    probe = subprocess.run(
        [sys.executable, "-c", "import cifake_mlflow; print(cifake_mlflow.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert probe.stdout.strip() == str(old / "cifake_mlflow" / "__init__.py"), probe.stdout
    old_cli(
        "train", "--data", str(data), "--weights", "none", "--image-size", "32", "--epochs", "1"
    )
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    (run,) = mlflow.search_runs(experiment_names=["cifake"], output_format="list")
    old_cli("register", run.info.run_id)
    images = sorted((data / "test").rglob("*.jpg"))
    scores = old_cli("predict", *map(str, images), "--model-uri", f"models:/{MODEL}@champion")
    old_scores = {
        row["path"]: float(row["prob_fake"]) for row in csv.DictReader(io.StringIO(scores))
    }
    return {"work": work, "uri": env["MLFLOW_TRACKING_URI"], "run": run, "scores": old_scores}


@pytest.fixture
def in_old_store(old_store: dict, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(old_store["work"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", old_store["uri"])
    mlflow.set_tracking_uri(old_store["uri"])
    return old_store


def test_an_old_registered_model_loads_and_scores_as_before(in_old_store: dict) -> None:
    paths = sorted(in_old_store["scores"])
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@champion")
    answer = model.predict(frame([Path(p).read_bytes() for p in paths]))
    expected = np.array([in_old_store["scores"][p] for p in paths])
    np.testing.assert_allclose(answer["prob_fake"].to_numpy(), expected, atol=1e-6)


def test_an_old_run_and_version_compare(in_old_store: dict) -> None:
    run_id = in_old_store["run"].info.run_id
    result = CliRunner().invoke(main, ["compare", run_id, f"models:/{MODEL}/1", "--no-reference"])
    assert result.exit_code == 0, result.output
    run = in_old_store["run"]
    assert run.info.run_name in result.output
    accuracy = f"{run.data.metrics['test_accuracy']:.4f}"
    row = next(line for line in result.output.splitlines() if line.startswith("| test accuracy"))
    assert row.count(accuracy) == 2, row  # the run and the version it registered


def test_an_old_champion_serves(in_old_store: dict) -> None:
    path = sorted(in_old_store["scores"])[0]
    with Server(f"models:/{MODEL}@champion", log=in_old_store["work"] / "serve.log") as server:
        payload = {"dataframe_records": [{"image": encode(Path(path).read_bytes())}]}
        answer = post(server.url, payload)
    score = answer["predictions"][0]["prob_fake"]
    assert score == pytest.approx(in_old_store["scores"][path], abs=1e-6)
