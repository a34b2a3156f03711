"""Training and prediction rate of the detector with 1x1 convolutions as matrix products.

    python benchmarks/pointwise.py [--quick]

MobileNetV2's 34 expand, project and final convolutions are 1x1 at stride 1. The detector
builds them as :class:`~cifake_mlflow.modeling.mobilenet.PointwiseConv2D` (one matrix product);
the baseline is the same model with Keras' own ``Conv2D`` in those layers, as Keras builds it.
Both are the accurate recipe's model (32 px, native stem, ``alpha`` 1, batch 128, AdamW),
timed in alternating rounds on one random in-memory batch repeated, so only the model is
timed; each reports its median. A ratio above 1 means more images per second than Keras' layer.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from common import result, script_main, training_rate
from widths import compiled, feed

import cifake_mlflow  # noqa: F401  (before TensorFlow: its start-up lines stay off the console)


def keras_conv_model():
    """The same detector built with Keras' ``Conv2D`` in its pointwise layers."""
    from cifake_mlflow.modeling.mobilenet import PointwiseConv2D

    with mock.patch.object(PointwiseConv2D, "covers", staticmethod(lambda config: False)):
        return compiled({})[0]


def pointwise_layers(model) -> int:
    """How many of ``model``'s base layers are :class:`PointwiseConv2D`."""
    from cifake_mlflow.modeling.mobilenet import BASE_NAME, PointwiseConv2D

    return sum(type(layer) is PointwiseConv2D for layer in model.get_layer(BASE_NAME).layers)


def prediction_rate(model, batch: int, steps: int) -> float:
    """Images per second of ``model.predict_on_batch`` after one call that traces it."""
    images = np.random.default_rng(1).integers(0, 256, (batch, 32, 32, 3)).astype(np.float32)
    model.predict_on_batch(images)
    start = time.perf_counter()
    for _ in range(steps):
        model.predict_on_batch(images)
    return steps * batch / (time.perf_counter() - start)


def run(data: Path, quick: bool = False) -> dict[str, dict]:
    """Measure; returns results.json entries (``data`` is unused: the batches are random)."""
    rounds, steps = (1, 5) if quick else (3, 20)
    ours, batch = compiled({})
    keras_model = keras_conv_model()
    switched = pointwise_layers(ours) - pointwise_layers(keras_model)
    train: dict[str, list[float]] = {"ours": [], "keras": []}
    predict: dict[str, list[float]] = {"ours": [], "keras": []}
    for _ in range(rounds):
        for name, model in (("ours", ours), ("keras", keras_model)):
            train[name].append(training_rate(model, feed(batch), steps, batch))
            predict[name].append(prediction_rate(model, 256, steps))
    extra = {"rounds": rounds, "steps_per_round": steps, "pointwise_layers": switched}
    return {
        f"pointwise_{kind}": result(
            float(np.median(rates["ours"])), float(np.median(rates["keras"])), unit, **extra
        )
        for kind, rates, unit in (
            ("train_step", train, "train images/s"),
            ("predict", predict, "images/s"),
        )
    }


def main(argv: list[str] | None = None) -> int:
    return script_main(run, __doc__, ("matmul", "keras Conv2D"), argv)


if __name__ == "__main__":
    sys.exit(main())
