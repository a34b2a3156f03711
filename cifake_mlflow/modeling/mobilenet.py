"""The detector: MobileNetV2 base + the reference head, and its SavedModel export.

The model takes 32x32 float images in [0, 255] (what the cache holds) and resizes them to
``image_size`` inside the graph, so training, evaluation and serving feed it the same thing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

# Keras' own cache root (honours $KERAS_HOME); private, so that our check and Keras' download
# look at the very same folder.
from cifake_mlflow.data.decode import NATIVE_SIZE
from cifake_mlflow.data.download import reachable

if TYPE_CHECKING:  # the config is read here, never imported at run time (data flows one way)
    from cifake_mlflow.training.config import TrainConfig

IMAGENET_SIZES = (96, 128, 160, 192, 224)
WEIGHTS_HOST = "storage.googleapis.com"
BASE_NAME = "mobilenetv2_base"
#: MobileNetV2's first convolution.
STEM_LAYER = "Conv1"
#: The padding and depthwise convolution of MobileNetV2's block_1, its second downsampling.
BLOCK1_PAD = "block_1_pad"
BLOCK1_DEPTHWISE = "block_1_depthwise"


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights are neither cached nor downloadable; the message offers alternatives."""


def imagenet_weights_file(image_size: int, alpha: float = 1.0) -> Path:
    """Where Keras caches the no-top MobileNetV2 ImageNet weights for ``image_size``."""
    rows = image_size if image_size in IMAGENET_SIZES else 224
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    return keras_home() / "models" / name


def keras_home() -> Path:
    """Keras' cache folder: ``$KERAS_HOME``, else ``~/.keras`` (where ``keras.utils.get_file``
    keeps downloaded weights)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras").expanduser()


def check_imagenet_available(image_size: int, alpha: float = 1.0) -> None:
    """Fail at once, before any training work, when ImageNet weights cannot be had."""
    cached = imagenet_weights_file(image_size, alpha)
    if cached.is_file() or reachable(WEIGHTS_HOST):
        return
    raise WeightsUnavailableError(
        f"weights=imagenet: the MobileNetV2 ImageNet weights are not cached at {cached} and "
        f"{WEIGHTS_HOST} cannot be reached (offline?). Use --weights none (-P weights=none) to "
        "train from scratch, or --weights PATH with a local no-top MobileNetV2 weights file "
        f"(for example {cached.name} copied from a machine that is online)."
    )


def build_base(cfg: TrainConfig) -> keras.Model:
    """MobileNetV2 without its top, with weights, trainable depth and BN momentum applied."""
    if cfg.weights == "imagenet":
        check_imagenet_available(cfg.image_size, cfg.alpha)
        cached = imagenet_weights_file(cfg.image_size, cfg.alpha)
        # A cached file loads directly; otherwise Keras downloads it into the same place.
        weights: str | None = str(cached) if cached.is_file() else "imagenet"
    else:
        weights = None if cfg.weights == "none" else str(Path(cfg.weights).expanduser())
    try:
        base = keras.applications.MobileNetV2(
            input_shape=(cfg.image_size, cfg.image_size, 3),
            alpha=cfg.alpha,
            include_top=False,
            weights=weights,
        )
    except (OSError, ValueError) as exc:
        if cfg.weights in ("imagenet", "none"):
            raise
        raise WeightsUnavailableError(
            f"weights={cfg.weights!r}: cannot load this file into MobileNetV2 without its top "
            f"({exc}). Give a no-top MobileNetV2 weights file, or --weights none."
        ) from None
    base = rebuilt(base, cfg.stem_stride, cfg.block1_stride)
    base.name = BASE_NAME
    if not cfg.pretrained and cfg.trainable_base_layers < len(base.layers):
        print(
            f"warning: weights=none with unfrozen_layers={cfg.trainable_base_layers}: the "
            f"{len(base.layers) - cfg.trainable_base_layers} frozen base layers keep random "
            "weights and learn nothing (use unfrozen_layers=auto to train the whole base)",
            flush=True,
        )
    set_trainable_layers(base, cfg.trainable_base_layers)
    set_batchnorm_momentum(base, cfg.batchnorm_momentum)
    fuse_batchnorms(base)
    return base


def rebuilt(base: keras.Model, stem_stride: int, block1_stride: int = 2) -> keras.Model:
    """``base`` rebuilt with the strides of ``Conv1`` and ``block_1`` and PointwiseConv2D layers.

    Keras' MobileNetV2 halves the resolution in ``Conv1``; at CIFAKE's 32x32 that discards the
    pixel-level traces a generator leaves before any block sees them. ``block_1`` halves it
    again, with a one-sided zero padding and a "valid" 3x3 depthwise convolution; at stride 1
    the padding becomes one pixel on each side, which keeps the map's size. Strides and
    paddings do not change kernel shapes and :class:`PointwiseConv2D` adds no weights, so the
    same layers, names and weights serve: the model is rebuilt from its own config and the
    loaded weights are copied over tensor by tensor.
    """
    changes = {
        STEM_LAYER: {"strides": (stem_stride, stem_stride)},
        BLOCK1_DEPTHWISE: {"strides": (block1_stride, block1_stride)},
    }
    if block1_stride == 1:
        changes[BLOCK1_PAD] = {"padding": ((1, 1), (1, 1))}
    config = base.get_config()
    for layer in config["layers"]:
        settings = layer["config"]
        settings.update(changes.get(settings["name"], {}))
        if layer["class_name"] == "Conv2D" and PointwiseConv2D.covers(settings):
            layer.update(
                module=PointwiseConv2D.__module__,
                class_name=PointwiseConv2D.__name__,
                registered_name=keras.saving.get_registered_name(PointwiseConv2D),
            )
    model = keras.Model.from_config(config)
    model.set_weights(base.get_weights())
    return model


def set_trainable_layers(base: keras.Model, count: int) -> None:
    """Make the top ``count`` layers of ``base`` trainable and freeze the rest."""
    base.trainable = count > 0
    if count <= 0:
        return
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= len(base.layers) - count


def set_batchnorm_momentum(base: keras.Model, momentum: float) -> None:
    """Set the moving-average momentum of every BatchNormalization layer.

    Keras builds MobileNetV2 with 0.999. Trained from scratch, the weights move faster than
    such a slow average can follow, and inference (moving statistics) then outputs one constant:
    validation accuracy 0.50 while training accuracy passes 0.9 (see NOTES). 0.99 tracks them.
    """
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum


@keras.saving.register_keras_serializable(package="cifake")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """BatchNormalization that runs through TensorFlow's fused kernel.

    Keras 3 normalises with separate moment, subtract and scale ops, and back-propagates
    through each. On the TensorFlow backend one fused op (``FusedBatchNormV3``, oneDNN on CPU,
    cuDNN on GPU) does the same arithmetic, in both modes:

    - training: MobileNetV2's step at 64 px, every layer trainable, ran 1.58x faster on the
      2-core CPU (170 -> 268 images/s);
    - inference, which frozen layers use while training too: in the reference configuration
      (160 px, last 30 layers trainable) our step against the reference model went from
      1.27x to 1.56x (benchmarks/training.py), and prediction got faster too.

    Every other backend and every case the fused op does not cover (masks, renorm, a channel
    axis other than the last of a 4-D input) use Keras' own code. Outputs, gradients and moving
    statistics match Keras' to float rounding (tests/test_model.py), so weights and saved
    models are interchangeable with plain Keras ones.
    """

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        if training and self.trainable:
            return self._fused_training(inputs)
        return self._fused_inference(inputs)

    def _fused_training(self, inputs: Any) -> Any:
        """Normalise with the batch's statistics and update the moving ones, as Keras does."""
        import tensorflow as tf

        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            tf.cast(inputs, tf.float32),
            tf.cast(self.gamma, tf.float32),
            tf.cast(self.beta, tf.float32),
            epsilon=self.epsilon,
            is_training=True,
        )
        # The fused op returns the unbiased batch variance; Keras averages the biased one.
        n = tf.cast(tf.size(inputs) // tf.shape(inputs)[-1], tf.float32)
        variance = variance * (n - 1.0) / n
        momentum = keras.ops.cast(self.momentum, "float32")
        self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
        self.moving_variance.assign(self.moving_variance * momentum + variance * (1.0 - momentum))
        return keras.ops.cast(y, self.compute_dtype)

    def _fused_inference(self, inputs: Any) -> Any:
        """Normalise with the moving statistics (inference, and frozen layers in training)."""
        import tensorflow as tf

        y, _, _ = tf.compat.v1.nn.fused_batch_norm(
            tf.cast(inputs, tf.float32),
            tf.cast(self.gamma, tf.float32),
            tf.cast(self.beta, tf.float32),
            mean=tf.cast(self.moving_mean, tf.float32),
            variance=tf.cast(self.moving_variance, tf.float32),
            epsilon=self.epsilon,
            is_training=False,
        )
        return keras.ops.cast(y, self.compute_dtype)

    def _fusable(self, inputs: Any, mask: Any) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.scale
            and self.center
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
        )


def fuse_batchnorms(base: keras.Model) -> None:
    """Make every BatchNormalization layer of ``base`` a :class:`FusedBatchNormalization`.

    The subclass adds no weights, state or config, only a faster training path, so switching
    the class of the layers Keras built keeps every weight and setting.
    """
    for layer in base.layers:
        if type(layer) is keras.layers.BatchNormalization:
            layer.__class__ = FusedBatchNormalization


@keras.saving.register_keras_serializable(package="cifake")
class PointwiseConv2D(keras.layers.Conv2D):
    """A 1x1 convolution at stride 1 that trains as one matrix product.

    Such a convolution is a matrix product over the pixels, but TensorFlow's CPU kernels
    back-propagate it as a general convolution, at up to 9x the cost of the product where the
    maps are small: MobileNetV2's last 1x1 convolution (320 -> 1280 channels on a 2x2 map at
    32 px) takes 89 ms per step of 128 images that way against 10 ms as a product. MobileNetV2's
    expand and project convolutions and ``Conv_1`` are all 1x1 at stride 1, so the whole
    training step gains (benchmarks/pointwise.py). Inference keeps Keras' convolution, which
    TensorFlow fuses with the batch norm after it.

    The layer adds no weights or config: the kernel keeps its (1, 1, in, out) shape, so weights
    files, saved models and weight copies are interchangeable with plain Keras ones, and
    outputs and gradients match Keras' to float rounding (tests/test_model.py). Any other
    backend, and LoRA, use Keras' own code.
    """

    @staticmethod
    def covers(config: dict[str, Any]) -> bool:
        """Whether Conv2D settings (a config, or a layer's attributes) are 1x1 at stride 1."""
        return (
            tuple(config.get("kernel_size", ())) == (1, 1)
            and tuple(config.get("strides", (1, 1))) == (1, 1)
            and tuple(config.get("dilation_rate", (1, 1))) == (1, 1)
            and config.get("groups", 1) == 1
            and config.get("data_format", "channels_last") == "channels_last"
        )

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or not self._as_matmul(inputs):
            return super().call(inputs)
        import tensorflow as tf

        kernel = tf.cast(self.kernel[0, 0], inputs.dtype)
        flat = tf.matmul(tf.reshape(inputs, (-1, inputs.shape[-1])), kernel)
        outputs = tf.reshape(flat, tf.concat([tf.shape(inputs)[:-1], [self.filters]], axis=0))
        if self.use_bias:
            outputs = outputs + tf.cast(self.bias, outputs.dtype)
        return outputs if self.activation is None else self.activation(outputs)

    def _as_matmul(self, inputs: Any) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and self.covers(vars(self))
            and not getattr(self, "lora_enabled", False)
            and len(inputs.shape) == 4
        )


class TestTimeAugmentation(keras.layers.Layer):
    """A layer that acts only at inference and is an identity while training.

    Built into the model rather than into the evaluation code, so that validation during
    ``fit``, test evaluation, the SavedModel and the served model all predict the same way.
    Subclasses say what happens at inference in :meth:`at_inference`.
    """

    def call(self, x: Any, training: bool | None = None) -> Any:
        return x if training else self.at_inference(x)

    def at_inference(self, x: Any) -> Any:
        raise NotImplementedError

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (None, *input_shape[1:])


@keras.saving.register_keras_serializable(package="cifake")
class FlipViews(TestTimeAugmentation):
    """At inference, appends each image's mirror image to the batch (N -> 2N images)."""

    def at_inference(self, images: Any) -> Any:
        return keras.ops.concatenate([images, keras.ops.flip(images, axis=2)], axis=0)


@keras.saving.register_keras_serializable(package="cifake")
class MeanOfViews(TestTimeAugmentation):
    """At inference, averages the scores of each image and its mirror image (2N -> N)."""

    def at_inference(self, scores: Any) -> Any:
        half = keras.ops.shape(scores)[0] // 2
        return (scores[:half] + scores[half:]) / 2


def build_model(cfg: TrainConfig) -> keras.Model:
    """Input (32x32 RGB, [0, 255]) -> resize -> scale to [-1, 1] -> base -> reference head.

    With ``tta='flip'`` the model scores each image and its mirror image at inference and
    returns their mean: flips are part of training augmentation, so both views are in-domain.
    """
    inputs = keras.Input((NATIVE_SIZE, NATIVE_SIZE, 3), name="image")
    x = inputs
    if cfg.tta == "flip":
        x = FlipViews(name="tta_flip")(x)
    if cfg.image_size != NATIVE_SIZE:
        x = keras.layers.Resizing(cfg.image_size, cfg.image_size, name="resize")(x)
    x = keras.layers.Rescaling(1 / 127.5, offset=-1, name="scale")(x)
    x = build_base(cfg)(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dense(cfg.dense_units, activation="relu", name="dense")(x)
    x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="prob_fake", dtype="float32")(x)
    if cfg.tta == "flip":
        outputs = MeanOfViews(name="tta_mean", dtype="float32")(outputs)
    return keras.Model(inputs, outputs, name="cifake_mobilenetv2")


def warm_start(model: keras.Model, source: keras.Model) -> int:
    """Copy weights from a trained detector into ``model``, layer by layer, where they fit.

    The base's convolution weights do not depend on the input size, so a detector trained at
    32 px can seed one at 96 px; layers whose shapes differ (another head width) are skipped.
    Returns the number of layers copied.
    """
    copied = 0
    for target, origin in (
        (model, source),
        (model.get_layer(BASE_NAME), source.get_layer(BASE_NAME)),
    ):
        sources = {layer.name: layer for layer in origin.layers}
        for layer in target.layers:
            match = sources.get(layer.name)
            if match is None or layer.name == BASE_NAME or not layer.weights:
                continue
            shapes = [tuple(w.shape) for w in layer.weights]
            if shapes == [tuple(w.shape) for w in match.weights]:
                layer.set_weights(match.get_weights())
                copied += 1
    return copied


def export_saved_model(model: keras.Model, path: str | Path) -> Path:
    """Write a TensorFlow SavedModel whose ``serve`` endpoint maps uint8 images to prob_fake.

    The endpoint calls the model with ``training=False`` explicitly: a bare call would let a
    preprocessing layer's ``training=True`` default reach BatchNorm (NOTES, export trap), making
    outputs wrong and dependent on the batch size.
    """
    import tensorflow as tf  # here, so that building a model works on any Keras backend

    path = Path(path)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images: tf.Tensor) -> tf.Tensor:
        return model(tf.cast(images, tf.float32), training=False)

    archive.add_endpoint(
        name="serve",
        fn=serve,
        input_signature=[
            tf.TensorSpec((None, NATIVE_SIZE, NATIVE_SIZE, 3), tf.uint8, name="images")
        ],
    )
    archive.write_out(str(path), verbose=False)
    return path
