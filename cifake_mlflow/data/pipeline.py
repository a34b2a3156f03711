"""Cached uint8 arrays -> batched, augmented ``tf.data`` pipelines for Keras.

Augmentation runs on whole batches at the native 32x32 (flip, zoom, rotation and shift as Keras
layers), and the model resizes to its input size afterwards. That order is about 10x cheaper than
augmenting at 160 px and keeps the pipeline from ever being the bottleneck of training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import keras
import numpy as np
import tensorflow as tf

from cifake_mlflow.data import perturbations
from cifake_mlflow.data.decode import NATIVE_SIZE

if TYPE_CHECKING:  # the config is read here, never imported at run time (data flows one way)
    from cifake_mlflow.training.config import TrainConfig

BatchFn = Callable[[tf.Tensor], tf.Tensor]


def augmenter(cfg: TrainConfig) -> keras.Sequential | None:
    """The reference augmentation (flip, zoom, rotation) and ``shift`` as Keras layers.

    None when augmentation is off or every one of them is. ``shift`` translates with nearest
    sampling: every output pixel is a copy of an input pixel (a whole-pixel move with
    reflected edges), where zoom and rotation interpolate and blur the fine pixel statistics
    that tell the two classes apart.
    """
    if not cfg.augment:
        return None
    layers: list[keras.Layer] = []
    if cfg.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=cfg.seed))
    if cfg.zoom > 0:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=cfg.seed + 1))
    if cfg.rotation > 0:
        layers.append(
            keras.layers.RandomRotation(
                cfg.rotation / 360.0, fill_mode="reflect", seed=cfg.seed + 2
            )
        )
    if cfg.shift > 0:
        factor = cfg.shift / NATIVE_SIZE
        layers.append(
            keras.layers.RandomTranslation(
                factor, factor, fill_mode="reflect", interpolation="nearest", seed=cfg.seed + 4
            )
        )
    return keras.Sequential(layers, name="augmentation") if layers else None


def robust_augmenter(cfg: TrainConfig) -> BatchFn | None:
    """``--robust-augment``: the evaluation suite's transformations as training augmentation.

    Runs the very functions :mod:`cifake_mlflow.data.perturbations` evaluates with (through
    ``tf.numpy_function``), after flip/zoom/rotation, on images rounded back to uint8 as a
    re-encoded file would be.
    """
    names = perturbations.parse_names(cfg.robust_augment)
    if not names or cfg.robust_augment_rate <= 0:
        return None
    rng = np.random.default_rng(cfg.seed + 3)

    def numpy_side(batch: np.ndarray) -> np.ndarray:
        return perturbations.augment_batch(batch, names, cfg.robust_augment_rate, rng)

    def tf_side(x: tf.Tensor) -> tf.Tensor:
        as_uint8 = tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)
        out = tf.numpy_function(numpy_side, [as_uint8], tf.uint8, stateful=True)
        return tf.cast(tf.ensure_shape(out, x.shape), tf.float32)

    return tf_side


def make_dataset(
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    *,
    shuffle: bool = False,
    augment: keras.Sequential | None = None,
    robust: BatchFn | None = None,
    seed: int = 0,
) -> tf.data.Dataset:
    """A ``(float32 images in [0, 255], float32 labels)`` dataset of batches.

    A shuffled (training) dataset holds whole batches only, whenever there is at least one:
    a last, smaller batch would make TensorFlow trace the training step a second time (about
    10 s for MobileNetV2 on 2 cores, paid by every run and every Optuna trial), and which
    images are left over changes with each epoch's shuffle.
    """
    ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.float32)))
    if shuffle:
        ds = ds.shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size, drop_remainder=shuffle and len(labels) >= batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        ds = ds.map(
            lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE
        )
    if robust is not None:
        ds = ds.map(lambda x, y: (robust(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
