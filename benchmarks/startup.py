"""Start-up benchmark: seconds from ``cifake train`` start to the end of its first training step.

    python benchmarks/startup.py [--data PATH] [--quick]

Runs ``cifake train`` twice in the reference configuration (160 px, last 30 layers) with one
epoch on a small subset: first with an empty image cache (cold: every JPEG of the dataset is
decoded), then again (warm: the cache is read). Each run logs ``startup_seconds`` (process
start to first step: imports, data, model build and the first traced step) the moment its
first step ends; the benchmark then stops it with Ctrl-C and reads the figure back from
MLflow. ``ours`` is warm, ``baseline`` cold. ``--quick`` uses a 1,000-image extract instead of
the full archives, so its cold start decodes 1,100 files rather than 120,000.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (
    extract_train_subset,
    result,
    script_main,
    start_train,
    tracking_store,
    train_failed,
)

TRAIN = ["--weights", "none", "--image-size", "160", "--unfrozen-layers", "30", "--epochs", "1"]


def startup_seconds(data: Path, work: Path, cache: Path, name: str) -> float:
    """One ``cifake train`` subprocess, stopped (Ctrl-C) once its first step is done.

    The run logs ``startup_seconds`` at that moment; it is read back from MLflow. Nothing
    after the first step is timed, so the rest of the epoch, evaluation and model logging
    are not waited for.
    """
    import mlflow

    from cifake_mlflow.tracking.runs import STARTUP_LINE

    uri = f"sqlite:///{work / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "CIFAKE_CACHE_DIR": str(cache)}
    args = [*TRAIN, "--max-train-images", "512", "--max-test-images", "128", "--run-name", name]
    child = start_train(data, args, work, env)
    output: list[str] = []
    for line in child.stdout:
        output.append(line)
        if line.startswith(STARTUP_LINE):
            child.send_signal(signal.SIGINT)
            break
    child.communicate(timeout=120)
    with tracking_store(uri):
        filter_string = f"run_name = '{name}'"
        runs = mlflow.search_runs(search_all_experiments=True, filter_string=filter_string)
    if runs.empty or "metrics.startup_seconds" not in runs:
        raise train_failed("logged no startup_seconds", output)
    return float(runs["metrics.startup_seconds"].iloc[0])


def run(data: Path, quick: bool = False) -> dict[str, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        work, cache = Path(tmp), Path(tmp) / "cache"
        if quick:
            data = extract_train_subset(data, 500, work / "cifake")
        cold = startup_seconds(data, work, cache, "cold")
        warm = startup_seconds(data, work, cache, "warm")
    return {"startup_warm_vs_cold": result(warm, cold, "s", target_warm_below=15.0)}


def main(argv: list[str] | None = None) -> int:
    return script_main(run, __doc__, ("warm", "cold"), argv)


if __name__ == "__main__":
    sys.exit(main())
