"""Helpers shared by the benchmark scripts: real CIFAKE files, timing, tables, results.json.

Every benchmark compares our code with a baseline measured in the same run, and reports
``{name: {ours, baseline, ratio, unit}}``; ``ratio`` is ours / baseline, so read it with the
unit in mind (images per second: higher is better; seconds or MB: lower is better).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results.json"


def test_jpegs(data: Path, per_class: int) -> tuple[list[bytes], list[int]]:
    """``per_class`` REAL and FAKE test JPEGs (file bytes) and labels (FAKE = 1).

    ``data`` is a CIFAKE folder (``test/REAL``, ``test/FAKE``) or one holding
    ``cifake-test.tar.gz``.
    """
    found: dict[str, list[bytes]] = {"REAL": [], "FAKE": []}
    archive = data / "cifake-test.tar.gz"
    if archive.is_file():
        with tarfile.open(archive) as tar:
            for member in tar:
                cls = Path(member.name).parent.name
                if member.isfile() and cls in found and len(found[cls]) < per_class:
                    found[cls].append(tar.extractfile(member).read())
                if all(len(v) >= per_class for v in found.values()):
                    break
    else:
        for cls in found:
            files = sorted((data / "test" / cls).glob("*"))[:per_class]
            found[cls] = [f.read_bytes() for f in files]
    if not all(found.values()):
        raise SystemExit(f"no CIFAKE test images under {data} (give --data PATH)")
    return found["REAL"] + found["FAKE"], [0] * len(found["REAL"]) + [1] * len(found["FAKE"])


def timed_pair(
    first: Callable[[], Any], second: Callable[[], Any], repeats: int
) -> tuple[list[float], list[float]]:
    """Seconds per call of two functions, alternating calls so that load drift hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, out in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return times


def result(ours: float, baseline: float, unit: str, **extra: Any) -> dict[str, Any]:
    """One comparison, as results.json stores it."""
    ratio = ours / baseline if baseline else float("nan")
    return {"ours": ours, "baseline": baseline, "ratio": ratio, "unit": unit, **extra}


def print_table(title: str, rows: dict[str, dict[str, Any]], ours: str, baseline: str) -> None:
    """A fixed-width table: name, ours, baseline, ratio, unit."""
    print(f"\n{title}")
    print(f"{'measure':<34} {ours:>14} {baseline:>14} {'ratio':>8}  unit")
    for name, r in rows.items():
        print(
            f"{name:<34} {r['ours']:>14.4g} {r['baseline']:>14.4g} {r['ratio']:>8.3f}  {r['unit']}"
        )


def save(results: dict[str, dict[str, Any]], path: Path = RESULTS) -> None:
    """Merge ``results`` into results.json (other benchmarks' entries are kept)."""
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged.update(results)
    path.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")


def extract_train_subset(data: Path, per_class: int, dest: Path) -> Path:
    """Write ``per_class`` REAL and FAKE training JPEGs as ``dest/train|test/REAL|FAKE``.

    The reference pipeline (``flow_from_directory``) needs files on disk; a small test split is
    written too (a tenth of the size) so that the folder is a complete CIFAKE layout.
    """
    wanted = {("train", c): per_class for c in ("REAL", "FAKE")}
    wanted |= {("test", c): max(8, per_class // 10) for c in ("REAL", "FAKE")}
    counts = dict.fromkeys(wanted, 0)
    for key in wanted:
        (dest / key[0] / key[1]).mkdir(parents=True, exist_ok=True)
    archives = [data / "cifake-train.tar.gz", data / "cifake-test.tar.gz"]
    if not all(a.is_file() for a in archives):
        raise SystemExit(f"benchmarks need cifake-train.tar.gz and cifake-test.tar.gz in {data}")
    for archive in archives:
        with tarfile.open(archive) as tar:
            for member in tar:
                path = Path(member.name)
                key = (path.parent.parent.name, path.parent.name)
                if member.isfile() and counts.get(key, wanted.get(key, 0)) < wanted.get(key, 0):
                    (dest / key[0] / key[1] / path.name).write_bytes(tar.extractfile(member).read())
                    counts[key] += 1
                if all(counts[k] >= n for k, n in wanted.items() if k[0] == path.parts[0]):
                    break
    return dest


def start_train(data: Path, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """``cifake train --data DATA ARGS`` as a child process in ``cwd``, output read line by line.

    The data path is made absolute: relative to ``cwd`` (a temporary folder) it would not be
    found, and the child would exit before measuring anything.
    """
    command = [sys.executable, "-m", "cifake_mlflow", "train", "--data", str(data.resolve())]
    env = {**env, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [*command, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def train_failed(problem: str, output: list[str]) -> SystemExit:
    """The error a benchmark raises when its ``cifake train`` child misbehaved, with its output."""
    return SystemExit(f"cifake train {problem}:\n{''.join(output)[-2000:]}")


@contextmanager
def tracking_store(uri: str) -> Iterator[None]:
    """Point MLflow at ``uri`` for a while (benchmarks keep their runs out of the user's store)."""
    import mlflow

    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def script_main(
    run: Callable[[Path, bool], dict[str, dict[str, Any]]],
    doc: str,
    columns: tuple[str, str],
    argv: list[str] | None = None,
) -> int:
    """The command line every benchmark script shares: ``[--data PATH] [--quick]``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CIFAKE folder")
    parser.add_argument("--quick", action="store_true", help="smaller, faster measurement")
    args = parser.parse_args(argv)
    results = run(args.data, args.quick)
    print_table(doc.split("\n")[0].rstrip("."), results, *columns)
    save(results)
    return 0


def training_rate(model: Any, data: Any, steps: int, batch: int, warmup: int = 3) -> float:
    """Training images per second over ``steps`` steps of ``batch`` after ``warmup`` (tracing)."""
    import keras

    class Timer(keras.callbacks.Callback):
        def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
            if step + 1 == warmup:
                self.start = time.perf_counter()
            self.end = time.perf_counter()

    timer = Timer()
    model.fit(
        data, steps_per_epoch=warmup + steps, epochs=1, callbacks=[timer], verbose=0, shuffle=False
    )
    return steps * batch / (timer.end - timer.start)
