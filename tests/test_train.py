"""train.fit: the training step is traced once per fit, whatever the number of epochs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from cifake_mlflow.data.pipeline import make_dataset
from cifake_mlflow.modeling.mobilenet import build_model
from cifake_mlflow.training.config import TrainConfig
from cifake_mlflow.training.fit import fit


def test_fit_traces_the_training_step_once() -> None:
    """Tracing MobileNetV2's step costs seconds; a second trace doubled every run's start-up.

    Keras creates the optimizer's slots inside the first trace unless they exist, and a
    ``tf.function`` that creates variables is then traced again with the same shapes.
    """
    cfg = TrainConfig(weights="none", image_size=32, epochs=2, batch_size=16)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(48) % 2
    model = build_model(cfg)
    traced: list[str] = []
    steps = {"train": model.train_step, "test": model.test_step}

    def counting(name: str) -> Callable[[Any], Any]:
        def step(data: Any) -> Any:
            traced.append(name)  # Python runs here only while TensorFlow traces
            return steps[name](data)

        return step

    model.train_step, model.test_step = counting("train"), counting("test")
    train = make_dataset(images, labels, cfg.batch_size, shuffle=True, seed=0)
    val = make_dataset(images[:16], labels[:16], cfg.batch_size)
    result = fit(model, train, val, cfg, verbose=0)
    assert result.epochs_run == 2
    assert sorted(traced) == ["test", "train"]
