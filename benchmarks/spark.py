"""Spark benchmark: ``cifake predict-spark`` on ``local[2]`` against ``cifake predict`` in-process.

    python benchmarks/spark.py [--model-uri models:/cifake-detector@champion] [--images 4000]

Writes ``--images`` real CIFAKE test JPEGs (half REAL, half FAKE) into a temporary folder and
scores them both ways with the same model:
- in-process ``cifake predict`` (one Python process, batches of 64): the baseline;
- the Spark job on ``local[2]``, after a one-file job has started the session and loaded the
  model in each Python worker, so its images/s is the steady rate;
- the Spark job's fixed start-up cost: session start plus that first one-file job.
It checks that both give the same prob_fake (within 1e-6). Run it where the tracking store
holding the model is (``mlflow.db``), or set MLFLOW_TRACKING_URI. Results are printed and
merged into benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from common import DEFAULT_DATA, print_table, result, save, test_jpegs

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run(model_uri: str, data: Path, images: int) -> dict[str, dict]:
    """Measure; returns results.json entries."""
    from cifake_mlflow.serving import spark as spark_scoring
    from cifake_mlflow.serving.batch import find_images, local_scorer, predict_rows

    files, _ = test_jpegs(data, images // 2)
    work = Path(tempfile.mkdtemp(prefix="cifake-spark-bench-"))
    (work / "images").mkdir()
    for index, content in enumerate(files):
        (work / "images" / f"{index:06d}.jpg").write_bytes(content)

    start = time.perf_counter()
    scorer = local_scorer(model_uri)
    paths = find_images([work / "images"])
    loaded = time.perf_counter()
    local = [r for rows in predict_rows(paths, scorer, 64, progress=False) for r in rows]
    local_s = time.perf_counter() - loaded
    local_load_s = loaded - start

    start = time.perf_counter()
    spark = spark_scoring.spark_session("local[2]")
    quiet = lambda line: None  # noqa: E731
    spark_scoring.run_job(spark, [str(paths[0])], str(work / "warm"), model_uri, log=quiet)
    startup_s = time.perf_counter() - start
    start = time.perf_counter()
    spark_scoring.run_job(spark, [str(work / "images")], str(work / "out"), model_uri, log=quiet)
    spark_s = time.perf_counter() - start
    scores = spark_scoring.read_scores(spark, str(work / "out"))
    spark.stop()

    local_paths = scores["path"].map(lambda p: unquote(urlsplit(p).path))
    by_path = dict(zip(local_paths, scores["prob_fake"], strict=True))
    diff = max(abs(by_path[row["path"]] - row["prob_fake"]) for row in local)
    return {
        "spark_local2_images_per_s": result(len(files) / spark_s, len(files) / local_s, "images/s"),
        "spark_startup_s": result(startup_s, local_load_s, "s (baseline: in-process model load)"),
        "spark_max_abs_diff": result(float(diff), 1e-6, "prob_fake (baseline: tolerance)"),
        "spark_images": result(float(len(scores)), float(len(local)), "rows"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", default="models:/cifake-detector@champion")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=4000, help="real test JPEGs to score")
    args = parser.parse_args(argv)
    results = run(args.model_uri, args.data, args.images)
    print_table(
        f"spark local[2] vs in-process, {args.images} images (ratio = spark / in-process)",
        results, "spark", "in-process",
    )  # fmt: skip
    save(results)
    ok = results["spark_max_abs_diff"]["ours"] < 1e-6
    return 0 if ok and np.isclose(results["spark_images"]["ratio"], 1.0) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
