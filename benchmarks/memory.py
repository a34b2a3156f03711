"""Memory benchmark: peak resident memory of a training run on the full train split.

    python benchmarks/memory.py [--data PATH] [--quick] [--seconds N]

Starts ``cifake train`` in the reference configuration (160 px, last 30 layers, batch 64) on
all 100,000 training images, reads the process's high-water mark (``VmHWM``, Linux) while it
loads the data, builds the model and trains, and stops it with Ctrl-C (SIGINT) once it has
trained for ``--seconds`` (default 120; 5 with ``--quick``: runs here measured the same peak,
2,265-2,317 MB, after 5 and after 10 s). The baseline is the 2.5 GiB target. The image cache is
warmed first (the decode pass is not what is measured).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import DEFAULT_DATA, print_table, result, save, start_train, train_failed

TARGET_MB = 2.5 * 1024


def peak_mb(pid: int) -> float:
    """The process's peak resident set so far, in MB (0 once it has gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0
    line = next((ln for ln in status.splitlines() if ln.startswith("VmHWM")), "VmHWM: 0 kB")
    return int(line.split()[1]) / 1024


def run(data: Path, quick: bool = False, seconds: float | None = None) -> dict[str, dict]:
    from cifake_mlflow.data.dataset import load_dataset
    from cifake_mlflow.tracking.runs import STARTUP_LINE

    seconds = seconds or (5.0 if quick else 120.0)
    cache = Path(os.environ.get("CIFAKE_CACHE_DIR", Path.home() / ".cache" / "cifake-mlflow"))
    load_dataset(data, cache)  # warm the cache: decoding is not what this measures
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}
        env["CIFAKE_CACHE_DIR"] = str(cache)
        args = ["--weights", "none", "--image-size", "160", "--unfrozen-layers", "30"]
        args += ["--batch-size", "64", "--epochs", "1"]
        child = start_train(data, args, Path(tmp), env)
        started = threading.Event()
        output: list[str] = []

        def watch() -> None:
            for line in child.stdout:
                output.append(line)
                if line.startswith(STARTUP_LINE):
                    started.set()

        threading.Thread(target=watch, daemon=True).start()
        peak = 0.0
        while not started.is_set() and child.poll() is None:
            peak = max(peak, peak_mb(child.pid))
            time.sleep(0.5)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and child.poll() is None:
            peak = max(peak, peak_mb(child.pid))
            time.sleep(0.5)
        peak = max(peak, peak_mb(child.pid))
        if child.poll() is not None:
            raise train_failed("ended before it was measured", output)
        child.send_signal(signal.SIGINT)
        child.wait(timeout=120)
    return {"peak_rss_training": result(peak, TARGET_MB, "MB (baseline: 2.5 GiB target)")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=float, default=None, help="training time to watch")
    args = parser.parse_args(argv)
    results = run(args.data, args.quick, args.seconds)
    print_table("peak RSS, reference configuration, full train split", results, "ours", "target")
    save(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
