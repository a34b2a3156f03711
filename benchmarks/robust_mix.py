"""Training-step cost of the robust augmentation mix, against the same pipeline without it.

    python benchmarks/robust_mix.py [--data PATH] [--quick]

The robust recipe gives half of the training images one of nine everyday changes (blur,
down-and-up scaling, JPEG, noise) in NumPy, through ``tf.numpy_function``, while the model
trains. This measures what that costs where it matters: training images per second of the
accurate recipe's model (native stem at 32 px, alpha 1, batch 128, AdamW) fed by the real
training pipeline (shuffle, flip, 4-pixel shifts) over real CIFAKE training images, with the
mix and without it. The two are timed in alternating rounds on one compiled model, and each
reports its median, so machine drift does not land on one side only. A ratio near 1 means the
mix is free; below 1, it slows training.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from common import extract_train_subset, result, script_main, training_rate
from widths import compiled

import cifake_mlflow  # noqa: F401  (before TensorFlow: its start-up lines stay off the console)

#: The robust recipe's mix (docs/results.md), at its rate.
MIX = "blur0.5,blur1,blur1.5,downup0.5,downup0.75,jpeg30,jpeg60,noise0.03,noise0.06"
RATE = 0.5


def pipelines(data: Path, per_class: int, cache: Path):
    """The compiled model and its two training pipelines (without and with the mix)."""
    from cifake_mlflow.data.dataset import load_dataset
    from cifake_mlflow.data.pipeline import augmenter, make_dataset, robust_augmenter
    from cifake_mlflow.training.config import TrainConfig

    model, batch = compiled({})  # the accurate recipe's model, as widths.py times it
    cfg = TrainConfig(
        zoom=0.0, rotation=0.0, shift=4, robust_augment=MIX, robust_augment_rate=RATE
    )  # the recipe's augmentation; the model's options are in ``compiled``
    ds = load_dataset(extract_train_subset(data, per_class, cache / "files"), cache, progress=False)
    train = ds.indices("train")
    images, labels = ds.images[train], ds.labels[train]

    def feed(robust: bool):
        mix = robust_augmenter(cfg) if robust else None
        kwargs = {"shuffle": True, "augment": augmenter(cfg), "robust": mix, "seed": cfg.seed}
        return make_dataset(images, labels, batch, **kwargs).repeat()

    return model, batch, {"plain": feed(False), "robust_mix": feed(True)}


def run(data: Path, quick: bool = False) -> dict[str, dict]:
    """Measure; returns the results.json entry ``robust_mix_train_step``."""
    rounds, steps, per_class = (1, 5, 500) if quick else (3, 25, 2000)
    with tempfile.TemporaryDirectory() as tmp:
        model, batch, feeds = pipelines(data, per_class, Path(tmp))
        rates: dict[str, list[float]] = {name: [] for name in feeds}
        for _ in range(rounds):
            for name, feed in feeds.items():
                rates[name].append(training_rate(model, feed, steps, batch))
    ours, base = (float(np.median(rates[name])) for name in ("robust_mix", "plain"))
    extra = {"rounds": rounds, "steps_per_round": steps, "mix": MIX, "rate": RATE}
    return {"robust_mix_train_step": result(ours, base, "train images/s", **extra)}


def main(argv: list[str] | None = None) -> int:
    return script_main(run, __doc__, ("with mix", "without"), argv)


if __name__ == "__main__":
    sys.exit(main())
