"""Serving benchmark: the real ``mlflow models serve`` against the same model in-process.

    python benchmarks/serving.py [--model-uri models:/cifake-detector@champion] [--data PATH]

Starts the server on a free loopback port, then on real CIFAKE test JPEGs measures
- latency of one-image requests (p50, p99) over HTTP, against in-process ``predict`` of the
  same file (the baseline: what HTTP, JSON and base64 cost);
- throughput (images/s) for batches of 1, 16, 64 and 256 files, both ways;
- agreement: the largest |served - in-process| prob_fake over all files (must be < 1e-5);
- the most expensive request the limits let through: as many of the largest 16-bit PNGs
  allowed per image as the request's pixel budget admits (seconds per request).
Served and in-process calls alternate, so a change of load on the machine hits both alike.
Run it where the tracking store holding the model is (``mlflow.db``), or set
MLFLOW_TRACKING_URI. Results are printed and merged into benchmarks/results.json.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import numpy as np
from common import DEFAULT_DATA, print_table, result, save, test_jpegs, timed_pair

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BATCHES = (1, 16, 64, 256)


def worst_request() -> list[bytes]:
    """The costliest request the limits pass: 16-bit PNGs of the largest allowed size."""
    from PIL import Image

    from cifake_mlflow.data.decode import MAX_PIXELS
    from cifake_mlflow.serving.payload import MAX_REQUEST_PIXELS

    side = int(MAX_PIXELS**0.5)
    buffer = io.BytesIO()
    Image.new("I;16", (side, side)).save(buffer, "PNG")
    return [buffer.getvalue()] * (MAX_REQUEST_PIXELS // (side * side))


def run(model_uri: str, data: Path, quick: bool = False) -> dict[str, dict]:
    """Measure; returns results.json entries."""
    import mlflow

    from cifake_mlflow.serving.server import Server, score
    from cifake_mlflow.tracking.schema import frame

    files, _ = test_jpegs(data, 128)
    single_repeats = 50 if quick else 300
    model = mlflow.pyfunc.load_model(model_uri)

    def local(batch: list[bytes]) -> np.ndarray:
        return model.predict(frame(batch))["prob_fake"].to_numpy()

    results: dict[str, dict] = {}
    with Server(model_uri) as server:

        def http(batch: list[bytes]) -> np.ndarray:
            return score(server.url, batch)["prob_fake"].to_numpy()

        diff = float(np.max(np.abs(http(files) - local(files))))
        served_s, local_s = timed_pair(
            lambda: http(files[:1]), lambda: local(files[:1]), single_repeats
        )
        served_ms, local_ms = np.array(served_s) * 1e3, np.array(local_s) * 1e3
        for q in (50, 99):
            results[f"serving_latency_p{q}_1_image"] = result(
                float(np.percentile(served_ms, q)), float(np.percentile(local_ms, q)), "ms"
            )
        for size in BATCHES:
            batch = files[:size]
            repeats = max(2, (64 if quick else 256) // size)
            served_s, local_s = timed_pair(
                lambda b=batch: http(b), lambda b=batch: local(b), repeats
            )
            results[f"serving_throughput_batch_{size}"] = result(
                size / float(np.median(served_s)), size / float(np.median(local_s)), "images/s"
            )
        worst = worst_request()
        served_s, local_s = timed_pair(lambda: http(worst), lambda: local(worst), 3)
        results["serving_worst_request"] = result(
            float(np.median(served_s)), float(np.median(local_s)), "s per request"
        )
    results["serving_max_abs_diff"] = result(diff, 1e-5, "prob_fake (baseline: tolerance)")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-uri", default="models:/cifake-detector@champion")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    results = run(args.model_uri, args.data, args.quick)
    print_table(
        f"serving {args.model_uri} (ratio = served / in-process)", results, "served", "in-process"
    )
    save(results)
    return 0 if results["serving_max_abs_diff"]["ours"] < 1e-5 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
