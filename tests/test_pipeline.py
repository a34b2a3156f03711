"""The tf.data pipeline: batch shapes that keep the training step traced once; augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from cifake_mlflow.data.pipeline import augmenter, make_dataset
from cifake_mlflow.training.config import TrainConfig

pytestmark = pytest.mark.fast  # unit tests: the fast lane (pytest -m fast)


def batch_sizes(count: int, batch: int, shuffle: bool) -> list[int]:
    images = np.zeros((count, 32, 32, 3), np.uint8)
    labels = np.arange(count) % 2
    return [len(y) for _, y in make_dataset(images, labels, batch, shuffle=shuffle)]


def test_training_batches_are_whole_and_evaluation_keeps_every_image() -> None:
    assert batch_sizes(70, 16, shuffle=True) == [16, 16, 16, 16]  # 6 left over this epoch
    assert batch_sizes(70, 16, shuffle=False) == [16, 16, 16, 16, 6]  # scoring sees all 70


def test_fewer_images_than_a_batch_still_train() -> None:
    assert batch_sizes(5, 16, shuffle=True) == [5]


def whole_pixel_moves(before: np.ndarray, after: np.ndarray, reach: int) -> list[tuple[int, int]]:
    """The (dy, dx) within ``reach`` that map ``before``'s pixels exactly onto ``after``'s
    (compared away from the reflected edges)."""
    inner = slice(reach, 32 - reach)
    return [
        (dy, dx)
        for dy in range(-reach, reach + 1)
        for dx in range(-reach, reach + 1)
        if np.array_equal(
            after[inner, inner], before[reach - dy : 32 - reach - dy, reach - dx : 32 - reach - dx]
        )
    ]


def test_shift_moves_whole_pixels_without_resampling() -> None:
    aug = augmenter(TrainConfig(flip=False, zoom=0.0, rotation=0.0, shift=4))
    images = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3)).astype(np.float32)
    shifted = aug(images, training=True).numpy()
    moves = [whole_pixel_moves(x, y, 4) for x, y in zip(images, shifted, strict=True)]
    assert all(len(found) == 1 for found in moves), moves  # an exact copy, nothing blurred
    assert len({found[0] for found in moves}) > 5  # each image its own random move
    assert np.array_equal(aug(images, training=False).numpy(), images)


def test_no_augmentation_layers_when_every_option_is_off() -> None:
    assert augmenter(TrainConfig(flip=False, zoom=0.0, rotation=0.0, shift=0)) is None
    kinds = [type(layer).__name__ for layer in augmenter(TrainConfig(shift=2)).layers]
    assert kinds == ["RandomFlip", "RandomZoom", "RandomRotation", "RandomTranslation"]
    assert augmenter(TrainConfig(shift=2, augment=False)) is None
