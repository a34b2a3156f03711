"""Training-step cost of the 32 px detector by width, stem stride and batch size.

    python benchmarks/widths.py [--quick]

Accuracy per minute decides a recipe, so this prints what each model option costs per
training image against the accurate recipe's model (native stem, ``alpha`` 1, batch 128):
training images per second on one in-memory batch repeated (no input pipeline, so only the
model's step is timed), with the recipe's optimizer (AdamW), loss and metrics. Options are timed
in alternating rounds and each reports its median, so a slow patch of the machine does not
land on one option only. A ratio above 1 means that option trains more images per second.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from common import result, script_main, training_rate

import cifake_mlflow  # noqa: F401  (before TensorFlow: its start-up lines stay off the console)

#: The accurate recipe's model options: the baseline every other row is divided by.
BASELINE = {"alpha": 1.0, "stem_stride": 1, "batch_size": 128}
OPTIONS = {
    "alpha0.75": {"alpha": 0.75},
    "alpha0.5": {"alpha": 0.5},
    "alpha0.35": {"alpha": 0.35},
    "batch256": {"batch_size": 256},
    "alpha0.5_batch256": {"alpha": 0.5, "batch_size": 256},
    "stem2": {"stem_stride": 2},
}


def compiled(options: dict, jit_compile: bool = False):
    """The detector at 32 px with ``options``, compiled as training compiles it."""
    from cifake_mlflow.modeling.mobilenet import build_model
    from cifake_mlflow.training.config import TrainConfig
    from cifake_mlflow.training.fit import build_optimizer, compile_model

    cfg = TrainConfig(weights="none", image_size=32, weight_decay=0.05, **{**BASELINE, **options})
    model = build_model(cfg)
    compile_model(model, cfg, steps_per_epoch=1000, jit_compile=jit_compile)
    build_optimizer(model)
    return model, cfg.batch_size


def feed(batch: int):
    """One random uint8-valued batch at 32 px, repeated: only the step is timed."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 2, (batch, 1)).astype(np.float32)
    return tf.data.Dataset.from_tensors((x, y)).repeat()


def option_rates(models: dict, quick: bool, prefix: str) -> dict[str, dict]:
    """Training rate of each ``(model, batch)`` against the first, timed in alternating rounds.

    Returns results.json entries ``{prefix + name: ...}`` for every model but the first, each
    the median of its rounds against the first one's median.
    """
    rounds, steps = (1, 5) if quick else (3, 20)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, (model, batch) in models.items():
            rates[name].append(training_rate(model, feed(batch), steps, batch))
    baseline, *options = models
    base = float(np.median(rates[baseline]))
    extra = {"rounds": rounds, "steps_per_round": steps}
    return {
        f"{prefix}{name}": result(float(np.median(rates[name])), base, "train images/s", **extra)
        for name in options
    }


def run(data: Path, quick: bool = False) -> dict[str, dict]:
    """Measure; returns results.json entries (``data`` is unused: the batches are random)."""
    models = {"baseline": compiled({}), **{name: compiled(o) for name, o in OPTIONS.items()}}
    return option_rates(models, quick, "width_")


def main(argv: list[str] | None = None) -> int:
    return script_main(run, __doc__, ("option", "baseline"), argv)


if __name__ == "__main__":
    sys.exit(main())
