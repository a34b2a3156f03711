"""Input pipeline and training-step benchmarks, in the reference configuration.

    python benchmarks/training.py [--data PATH] [--quick]

1. ``input_pipeline``: images per second delivered by our pipeline (cached 32x32 uint8 ->
   tf.data -> flip/zoom/rotation on whole batches at 32 px; the model resizes to 160 inside its
   graph) against the reference design's ``ImageDataGenerator.flow_from_directory`` (JPEG files
   -> 160 px, the same flip, zoom 0.2, rotation 15, rescale), batch 64, no model attached.
2. ``train_step_*``: end-to-end training images per second of MobileNetV2 at 160 px with the
   last 30 base layers trainable (reference head, Adam, BCE), fed by our pipeline, by the
   reference pipeline (the reference model, taking 160 px input), and by one in-memory batch
   repeated (the ceiling any pipeline can reach with our model).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from common import extract_train_subset, result, script_main, training_rate

BATCH = 64
SIZE = 160


def reference_flow(folder: Path):
    """The reference design's input pipeline, exactly as it was written."""
    import tensorflow as tf

    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        rescale=1.0 / 255, horizontal_flip=True, zoom_range=0.2, rotation_range=15
    )
    return generator.flow_from_directory(
        str(folder / "train"),
        target_size=(SIZE, SIZE),
        batch_size=BATCH,
        class_mode="binary",
        classes=["REAL", "FAKE"],
        seed=0,
    )


def our_dataset(folder: Path, cache: Path):
    """Our training pipeline over the same files (decoded once into the cache)."""
    from cifake_mlflow.data.dataset import load_dataset
    from cifake_mlflow.data.pipeline import augmenter, make_dataset
    from cifake_mlflow.training.config import TrainConfig

    ds = load_dataset(folder, cache, progress=False)
    train = ds.indices("train")
    cfg = TrainConfig(weights="none", image_size=SIZE, batch_size=BATCH)
    return make_dataset(
        ds.images[train], ds.labels[train], BATCH, shuffle=True, augment=augmenter(cfg)
    ).repeat()


def images_per_second(batches, count: int, warmup: int = 2) -> float:
    """Pull ``warmup`` then ``count`` batches from an iterator; images per second."""
    iterator = iter(batches)
    for _ in range(warmup):
        next(iterator)
    start, images = time.perf_counter(), 0
    for _ in range(count):
        x, _ = next(iterator)
        images += len(x)
    return images / (time.perf_counter() - start)


def reference_model():
    """The reference design's model as it was written: Keras' MobileNetV2 (its own
    BatchNormalization), 160 px input in [0, 1], all but the last 30 layers frozen."""
    import keras

    base = keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), include_top=False, weights=None
    )
    for layer in base.layers[:-30]:
        layer.trainable = False
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Rescaling(2.0, offset=-1.0),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    # Built now, as our fit does, so that its step is traced once, not twice: this shortens
    # the untimed warm-up only; the timed steps run the same graph either way.
    model.optimizer.build(model.trainable_variables)
    return model


def our_model():
    """Our detector in the reference configuration, compiled as training compiles it."""
    from cifake_mlflow.modeling.mobilenet import build_model
    from cifake_mlflow.training.config import TrainConfig
    from cifake_mlflow.training.fit import compile_model

    cfg = TrainConfig(weights="none", image_size=SIZE, unfrozen_layers=30, batch_size=BATCH)
    model = build_model(cfg)
    compile_model(model, cfg, steps_per_epoch=1000)
    return model


def in_memory(folder: Path, cache: Path):
    """One real batch, already in the model's input form, held in memory and repeated forever.

    It keeps our pipeline's element spec, so the model that trained on our pipeline trains on
    it without tracing its step again.
    """
    return our_dataset(folder, cache).take(1).cache().repeat()


def run(data: Path, quick: bool = False) -> dict[str, dict]:
    """Measure; returns results.json entries.

    The three training feeds are timed in alternating rounds and each reports its median, so
    that a slow patch of the machine (other processes, 5-10% between single measurements of
    the same feed here) does not land on one feed only.
    """
    per_class = 500 if quick else 2000
    rounds, steps = (2, 5) if quick else (3, 25)
    with tempfile.TemporaryDirectory() as tmp:
        folder = extract_train_subset(data, per_class, Path(tmp) / "cifake")
        cache = Path(tmp) / "cache"
        ours_rate = images_per_second(our_dataset(folder, cache), 40 if quick else 150)
        reference_rate = images_per_second(reference_flow(folder), 8 if quick else 30)
        results = {"input_pipeline": result(ours_rate, reference_rate, "images/s")}
        model, reference = our_model(), reference_model()  # one traced step each, reused
        feeds = {
            "ours": (model, our_dataset(folder, cache)),
            "ceiling": (model, in_memory(folder, cache)),
            "reference": (reference, reference_flow(folder)),
        }
        rates: dict[str, list[float]] = {name: [] for name in feeds}
        for _ in range(rounds):
            for name, (net, feed) in feeds.items():
                rates[name].append(training_rate(net, feed, steps, BATCH))
    ours, ceiling, ref = (float(np.median(rates[k])) for k in ("ours", "ceiling", "reference"))
    extra = {"rounds": rounds, "steps_per_round": steps}
    results["train_step_vs_reference"] = result(ours, ref, "images/s", **extra)
    results["train_step_vs_in_memory"] = result(ours, ceiling, "images/s", **extra)
    return results


def main(argv: list[str] | None = None) -> int:
    return script_main(run, __doc__, ("ours", "baseline"), argv)


if __name__ == "__main__":
    sys.exit(main())
