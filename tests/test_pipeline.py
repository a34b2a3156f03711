"""The tf.data pipeline: batch shapes that keep the training step traced once."""

from __future__ import annotations

import numpy as np

from cifake_mlflow.pipeline import make_dataset


def batch_sizes(count: int, batch: int, shuffle: bool) -> list[int]:
    images = np.zeros((count, 32, 32, 3), np.uint8)
    labels = np.arange(count) % 2
    return [len(y) for _, y in make_dataset(images, labels, batch, shuffle=shuffle)]


def test_training_batches_are_whole_and_evaluation_keeps_every_image() -> None:
    assert batch_sizes(70, 16, shuffle=True) == [16, 16, 16, 16]  # 6 left over this epoch
    assert batch_sizes(70, 16, shuffle=False) == [16, 16, 16, 16, 6]  # scoring sees all 70


def test_fewer_images_than_a_batch_still_train() -> None:
    assert batch_sizes(5, 16, shuffle=True) == [5]
