"""Run the benchmarks: each prints a table comparing our code with a baseline from the same run.

    python benchmarks/run.py [--data PATH] [--only NAME ...] [--quick]

Names: training (input pipeline + training step), widths (step cost by width, stem and batch),
pointwise (1x1 convolutions as matrix products against Keras' Conv2D), precision (mixed
precision and XLA against float32), robust_mix (step cost of the robust augmentation mix),
startup, tuning, memory, gpu, serving.
Results are merged into benchmarks/results.json as {name: {ours, baseline, ratio, unit}}.
``gpu`` measures only where Keras' backend sees a GPU (see benchmarks/gpu.py). ``--quick``
shrinks every benchmark (fewer images, steps, trials and repeats) to finish in a few minutes on
2 cores. ``serving`` needs a registered model (``--model-uri``, default the champion in the
tracking store of the working folder); it is skipped with a note when there is none.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import common
import gpu
import memory
import pointwise
import precision
import pruning
import robust_mix
import serving
import startup
import training
import widths

BENCHMARKS = {
    "training": training.run,
    "widths": widths.run,
    "pointwise": pointwise.run,
    "precision": precision.run,
    "robust_mix": robust_mix.run,
    "startup": startup.run,
    "tuning": pruning.run,
    "memory": memory.run,
    "gpu": lambda data, quick: gpu.run(quick),  # skipped, with a note, where no GPU is seen
}
TARGETS = {  # name: (ratio must be, bound), as the project's targets state them
    "input_pipeline": (">=", 20.0),
    "train_step_vs_reference": (">=", 1.5),
    "train_step_vs_in_memory": (">=", 0.95),
    "peak_rss_training": ("<=", 1.0),
}


def serving_run(data: Path, quick: bool, model_uri: str) -> dict[str, dict]:
    import mlflow

    try:
        mlflow.pyfunc.get_model_dependencies(model_uri)
    except Exception as exc:  # the registry raises several types for a missing model
        print(f"serving: skipped, no model at {model_uri} ({type(exc).__name__})")
        return {}
    return serving.run(model_uri, data, quick)


def verdicts(results: dict[str, dict]) -> list[str]:
    """One line per target: met, or missed by how much."""
    lines = []
    for name, (op, bound) in TARGETS.items():
        if name in results:
            ratio = results[name]["ratio"]
            met = ratio >= bound if op == ">=" else ratio <= bound
            gap = "" if met else f" (missed by {abs(ratio - bound) / bound:.0%})"
            lines.append(f"{name}: ratio {ratio:.3f}, target {op} {bound}: "
                         f"{'met' if met else 'MISSED'}{gap}")  # fmt: skip
    if "startup_warm_vs_cold" in results:
        warm = results["startup_warm_vs_cold"]["ours"]
        lines.append(
            f"warm start-up {warm:.1f} s, target < 15 s: {'met' if warm < 15 else 'MISSED'}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=common.DEFAULT_DATA)
    parser.add_argument("--only", nargs="+", choices=[*BENCHMARKS, "serving"], default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--model-uri", default="models:/cifake-detector@champion")
    args = parser.parse_args(argv)
    results: dict[str, dict] = {}
    for name in args.only or [*BENCHMARKS, "serving"]:
        start = time.perf_counter()
        if name == "serving":
            found = serving_run(args.data, args.quick, args.model_uri)
        else:
            found = BENCHMARKS[name](args.data, args.quick)
        common.print_table(f"{name} ({time.perf_counter() - start:.0f} s)", found, "ours",
                           "baseline")  # fmt: skip
        common.save(found)
        results |= found
    print("\n" + "\n".join(verdicts(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
