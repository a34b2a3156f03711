"""Model building: weights sources, trainable depth, BatchNorm settings and the export."""

from __future__ import annotations

import time
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.legacy.saving import legacy_h5_format

from cifake_mlflow.modeling import mobilenet as model_module
from cifake_mlflow.modeling.mobilenet import (
    BASE_NAME,
    BLOCK1_DEPTHWISE,
    BLOCK1_PAD,
    STEM_LAYER,
    FusedBatchNormalization,
    PointwiseConv2D,
    WeightsUnavailableError,
    build_base,
    build_model,
    export_saved_model,
    imagenet_weights_file,
    warm_start,
)
from cifake_mlflow.training.config import MOBILENETV2_DEPTH, TrainConfig
from cifake_mlflow.training.fit import BatchNormCalibrator


def small(**changes: object) -> TrainConfig:
    return TrainConfig(**{"weights": "none", "image_size": 32, **changes})


def test_depth_constant_matches_keras() -> None:
    base = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None)
    assert len(base.layers) == MOBILENETV2_DEPTH


def test_from_scratch_trains_whole_base_with_faster_batchnorm() -> None:
    base = build_base(small())
    assert all(layer.trainable for layer in base.layers)
    momenta = {
        layer.momentum
        for layer in base.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    }
    assert momenta == {0.99}


def test_unfrozen_layers_freezes_all_but_the_top() -> None:
    base = build_base(small(unfrozen_layers=30))
    flags = [layer.trainable for layer in base.layers]
    assert flags[-30:] == [True] * 30
    assert not any(flags[:-30])


def test_zero_unfrozen_layers_freezes_the_base() -> None:
    model = build_model(small(unfrozen_layers=0))
    base = model.get_layer(BASE_NAME)
    assert base.trainable is False
    trainable = {w.path.split("/")[0] for w in model.trainable_weights}
    assert trainable == {"dense", "prob_fake"}


def test_model_resizes_inside_the_graph() -> None:
    model = build_model(small(image_size=64))
    assert model.input_shape == (None, 32, 32, 3)
    assert model.get_layer("resize").output.shape[1:3] == (64, 64)
    assert model.get_layer(BASE_NAME).input_shape[1:3] == (64, 64)


def test_weights_file_is_loaded(tmp_path: Path) -> None:
    keras.utils.set_random_seed(1)
    source = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    path = tmp_path / "base.weights.h5"
    source.save_weights(path)
    base = build_base(TrainConfig(weights=str(path), image_size=32))
    for ours, theirs in zip(base.weights, source.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert sum(layer.trainable for layer in base.layers) == 30  # pretrained: reference depth


def standard_and_loaded(tmp_path: Path, **strides: int) -> tuple[keras.Model, keras.Model]:
    """Keras' standard MobileNetV2 at 32 px and ours with ``strides``, loaded from its file.

    Asserts that the file loads tensor for tensor: same layer names, weights and values.
    """
    keras.utils.set_random_seed(3)
    source = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), include_top=False, weights=None
    )
    path = tmp_path / "standard.weights.h5"
    source.save_weights(path)
    base = build_base(TrainConfig(weights=str(path), image_size=32, **strides))
    # Same blocks and layer names (the input layer's name is numbered by Keras).
    assert [layer.name for layer in base.layers[1:]] == [layer.name for layer in source.layers[1:]]
    assert len(base.weights) == len(source.weights)
    for ours, theirs in zip(base.weights, source.weights, strict=True):
        assert ours.path == theirs.path
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    return source, base


def test_native_stem_keeps_32px_through_conv1_and_loads_standard_weights(
    tmp_path: Path,
) -> None:
    """A weights file saved from Keras' standard MobileNetV2 loads, tensor for tensor."""
    source, base = standard_and_loaded(tmp_path, stem_stride=1)
    assert base.get_layer(STEM_LAYER).strides == (1, 1)
    assert source.get_layer(STEM_LAYER).strides == (2, 2)
    # Conv1 no longer halves: 32 -> 32 in the stem, 2x2 (not 1x1) at the top of the base.
    assert base.get_layer(STEM_LAYER).output.shape[1:3] == (32, 32)
    assert base.output.shape[1:3] == (2, 2)
    assert source.output.shape[1:3] == (1, 1)


def test_block1_stride_1_keeps_32px_through_block_2_and_loads_standard_weights(
    tmp_path: Path,
) -> None:
    """Without its second downsampling the base keeps 32x32 maps up to block_3's stride."""
    source, base = standard_and_loaded(tmp_path, stem_stride=1, block1_stride=1)
    assert base.get_layer(BLOCK1_DEPTHWISE).strides == (1, 1)
    assert source.get_layer(BLOCK1_DEPTHWISE).strides == (2, 2)
    for name in (BLOCK1_DEPTHWISE, "block_2_add", "block_3_expand"):
        assert base.get_layer(name).output.shape[1:3] == (32, 32)
    assert base.output.shape[1:3] == (4, 4)
    # One pixel on each side, centred: Keras' one-sided padding would leave 31x31 maps.
    assert base.get_layer(BLOCK1_PAD).output.shape[1:3] == (34, 34)


def test_native_stem_model_exports_and_matches_predict(tmp_path: Path) -> None:
    model = build_model(small(stem_stride=1, alpha=0.5, tta="flip"))
    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    expected = model.predict(images.astype("float32"), verbose=0)
    served = tf.saved_model.load(str(export_saved_model(model, tmp_path / "saved")))
    np.testing.assert_allclose(served.serve(tf.constant(images)).numpy(), expected, atol=1e-5)


def test_alpha_sets_the_width_and_the_imagenet_file_name() -> None:
    narrow = build_base(small(alpha=0.5))
    assert narrow.get_layer(STEM_LAYER).filters == 16  # 32 x 0.5
    assert len(narrow.layers) == MOBILENETV2_DEPTH
    assert imagenet_weights_file(96, 0.35).name == (
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    )


def test_weights_file_of_another_model_is_refused(tmp_path: Path) -> None:
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = tmp_path / "other.weights.h5"
    other.save_weights(path)
    with pytest.raises(WeightsUnavailableError, match=r"other\.weights\.h5"):
        build_base(TrainConfig(weights=str(path), image_size=32))


def test_imagenet_uses_a_locally_cached_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Keras download path, exercised offline through its local cache."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    target = imagenet_weights_file(96)
    target.parent.mkdir(parents=True)
    keras.utils.set_random_seed(2)
    reference = keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), include_top=False, weights=None
    )
    # Keras reads this exact file name, in the legacy HDF5 layout, from its cache.
    with h5py.File(target, "w") as handle:
        legacy_h5_format.save_weights_to_hdf5_group(handle, reference)
    base = build_base(TrainConfig(weights="imagenet", image_size=96))
    np.testing.assert_array_equal(base.weights[0].numpy(), reference.weights[0].numpy())


def test_imagenet_offline_fails_fast_with_alternatives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(model_module, "WEIGHTS_HOST", "unreachable.invalid")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        build_base(TrainConfig(weights="imagenet", image_size=32))
    assert time.perf_counter() - start < 15
    message = str(info.value)
    assert "--weights none" in message
    assert "--weights PATH" in message


def test_calibrator_sets_exact_average_of_batch_statistics() -> None:
    inputs = keras.Input((3,))
    outputs = keras.layers.BatchNormalization(momentum=0.999, name="bn")(inputs)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=5.0, scale=2.0, size=(16, 3)).astype("float32") for _ in range(4)]
    dataset = tf.data.Dataset.from_tensor_slices((np.stack(batches), np.zeros((4, 16)))).map(
        lambda x, y: (x, y)
    )
    used = BatchNormCalibrator(model)(dataset)
    assert used == 4
    bn = model.get_layer("bn")
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), np.mean([b.mean(axis=0) for b in batches], axis=0), rtol=1e-5
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), np.mean([b.var(axis=0) for b in batches], axis=0), rtol=1e-4
    )
    assert bn.momentum == 0.999  # restored afterwards


def training_step(layer: keras.layers.Layer, x: tf.Tensor, *variables: tf.Variable) -> tuple:
    """The layer's training-mode output and the gradients of a non-linear loss of it with
    respect to ``x`` and ``variables``."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * tf.sin(y))
    return (y, *tape.gradient(loss, [x, *variables]))


def test_fused_batchnorm_trains_exactly_like_keras() -> None:
    """Outputs, gradients and moving statistics equal Keras' own layer, step after step."""
    rng = np.random.default_rng(0)
    fused = FusedBatchNormalization(momentum=0.9)
    plain = keras.layers.BatchNormalization(momentum=0.9)
    for layer in (fused, plain):
        layer.build((8, 5, 5, 4))
        layer.gamma.assign(rng.normal(1.0, 0.2, 4).astype("float32"))
        layer.gamma.assign(fused.gamma)  # the same starting weights for both
    for _ in range(2):
        x = tf.constant(rng.normal(2.0, 3.0, (8, 5, 5, 4)).astype("float32"))
        grads = [training_step(layer, x, layer.gamma, layer.beta) for layer in (fused, plain)]
        for a, b in zip(*grads, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(
        fused.moving_variance.numpy(), plain.moving_variance.numpy(), rtol=1e-5
    )
    np.testing.assert_allclose(
        fused(x, training=False).numpy(), plain(x, training=False).numpy(), atol=1e-6
    )
    flat = FusedBatchNormalization()  # a 2-D input takes Keras' path
    assert flat(tf.ones((4, 3)), training=True).shape == (4, 3)


def test_frozen_fused_batchnorm_uses_moving_statistics_like_keras() -> None:
    """A frozen layer normalises with its moving statistics even in a training step, through
    the fused inference kernel: outputs and input gradients equal Keras', statistics stay."""
    rng = np.random.default_rng(4)
    fused, plain = FusedBatchNormalization(), keras.layers.BatchNormalization()
    for layer in (fused, plain):
        layer.build((8, 5, 5, 4))
    state = [rng.normal(1.0, 0.3, 4), rng.normal(0.0, 0.5, 4), rng.normal(2.0, 1.0, 4),
             rng.uniform(0.5, 3.0, 4)]  # fmt: skip
    for layer in (fused, plain):
        for variable, value in zip(layer.weights, state, strict=True):
            variable.assign(value.astype("float32"))
        layer.trainable = False
    x = tf.constant(rng.normal(2.0, 3.0, (8, 5, 5, 4)).astype("float32"))
    found = [training_step(layer, x) for layer in (fused, plain)]
    for a, b in zip(*found, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    expected = (x.numpy() - state[2]) / np.sqrt(state[3] + fused.epsilon) * state[0] + state[1]
    np.testing.assert_allclose(found[0][0].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused.moving_mean.numpy(), state[2].astype("float32"))


def test_base_trains_fused_batchnorm_and_reloads(tmp_path: Path) -> None:
    model = build_model(small())
    base = model.get_layer(BASE_NAME).layers
    norms = [layer for layer in base if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 52 and all(type(n) is FusedBatchNormalization for n in norms)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert type(again.get_layer(BASE_NAME).get_layer("bn_Conv1")) is FusedBatchNormalization
    assert again.get_layer(BASE_NAME).get_layer("bn_Conv1").momentum == 0.99
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(again.predict(images, verbose=0), model.predict(images, verbose=0))


def pointwise_and_keras(rng: np.random.Generator, size: int, **settings: object) -> list:
    """A PointwiseConv2D and a Keras Conv2D (5 -> 6 channels, 1x1) with the same kernel and
    bias, built for ``size`` x ``size`` maps."""
    layers = [kind(6, 1, **settings) for kind in (PointwiseConv2D, keras.layers.Conv2D)]
    kernel = rng.normal(0.0, 0.5, (1, 1, 5, 6)).astype("float32")
    for layer in layers:
        layer.build((None, size, size, 5))
        layer.kernel.assign(kernel)
        if layer.use_bias:
            layer.bias.assign(np.linspace(-1, 1, 6).astype("float32"))
    return layers


@pytest.mark.parametrize("bias", [False, True])
def test_pointwise_conv_trains_and_predicts_exactly_like_keras(bias: bool) -> None:
    """Outputs and gradients (input, kernel, bias) equal Keras' Conv2D in both modes, with the
    same (1, 1, in, out) kernel; any other kernel is left to Keras."""
    rng = np.random.default_rng(2)
    layers = pointwise_and_keras(rng, 3, use_bias=bias, activation="relu6")
    assert layers[0].kernel.shape == (1, 1, 5, 6)
    x = tf.constant(rng.normal(0.0, 2.0, (8, 3, 3, 5)).astype("float32"))
    found = [training_step(layer, x, *layer.trainable_weights) for layer in layers]
    assert len(found[0]) == 3 + bias
    for a, b in zip(*found, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layers[0](x).numpy(), layers[1](x).numpy(), rtol=1e-6)
    assert not PointwiseConv2D.covers(keras.layers.Conv2D(6, 3).get_config())
    assert not PointwiseConv2D.covers(keras.layers.Conv2D(6, 1, strides=2).get_config())


def test_pointwise_conv_computes_in_float16_under_mixed_precision() -> None:
    """Under ``mixed_float16`` (the GPU default) the product runs in float16 on the float32
    kernel, as Keras' convolution does, and gives its outputs to float16 rounding."""
    rng = np.random.default_rng(3)
    layers = pointwise_and_keras(rng, 4, use_bias=True, dtype="mixed_float16")
    x = tf.constant(rng.normal(0.0, 1.0, (2, 4, 4, 5)).astype("float32"))
    found, expected = (layer(x, training=True) for layer in layers)
    assert found.dtype == expected.dtype == tf.float16
    assert layers[0].kernel.dtype == "float32"
    np.testing.assert_allclose(found.numpy(), expected.numpy(), rtol=1e-2, atol=1e-2)


def test_base_trains_pointwise_convs_as_matmul_and_reloads(tmp_path: Path) -> None:
    """All 34 expand, project and final 1x1 convolutions train as matrix products, with their
    names and kernels kept; a saved model reloads with them and predicts the same."""
    model = build_model(small(stem_stride=1))
    base = model.get_layer(BASE_NAME)
    pointwise = [layer for layer in base.layers if type(layer) is PointwiseConv2D]
    assert len(pointwise) == 34
    assert {"Conv_1", "block_16_project", "block_1_expand"} <= {p.name for p in pointwise}
    assert base.get_layer("Conv_1").kernel.shape == (1, 1, 320, 1280)
    assert type(base.get_layer(STEM_LAYER)) is keras.layers.Conv2D  # 3x3: Keras' own
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    assert type(again.get_layer(BASE_NAME).get_layer("Conv_1")) is PointwiseConv2D
    images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(again.predict(images, verbose=0), model.predict(images, verbose=0))


def test_calibrator_averages_fused_batchnorm_statistics() -> None:
    inputs = keras.Input((4, 4, 3))
    outputs = FusedBatchNormalization(momentum=0.999, name="bn")(inputs)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    batches = rng.normal(loc=5.0, scale=2.0, size=(3, 8, 4, 4, 3)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((batches, np.zeros((3, 8))))
    assert BatchNormCalibrator(model)(dataset) == 3
    bn = model.get_layer("bn")
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), batches.mean(axis=(1, 2, 3)).mean(axis=0), rtol=1e-5
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), batches.var(axis=(1, 2, 3)).mean(axis=0), rtol=1e-4
    )


def test_saved_model_matches_predict_at_any_batch_size(tmp_path: Path) -> None:
    keras.utils.set_random_seed(3)
    model = build_model(small(image_size=48))
    rng = np.random.default_rng(0)
    # Give BatchNorm non-trivial statistics so that outputs differ between images.
    calibration = tf.data.Dataset.from_tensor_slices(
        (rng.integers(0, 256, (256, 32, 32, 3)).astype("float32"), np.zeros(256))
    ).batch(64)
    BatchNormCalibrator(model)(calibration)
    images = rng.integers(0, 256, (64, 32, 32, 3)).astype(np.uint8)
    expected = model.predict(images.astype("float32"), verbose=0).ravel()
    assert expected.std() > 1e-4
    saved = tf.saved_model.load(str(export_saved_model(model, tmp_path / "sm")))
    whole = saved.serve(tf.constant(images)).numpy().ravel()
    single = np.array(
        [saved.serve(tf.constant(images[i : i + 1])).numpy().item() for i in range(8)]
    )
    np.testing.assert_allclose(whole, expected, atol=1e-5)
    np.testing.assert_allclose(single, expected[:8], atol=1e-5)


def test_frozen_random_layers_are_reported(capsys: pytest.CaptureFixture[str]) -> None:
    build_base(small(unfrozen_layers=30))
    assert "124 frozen base layers keep random weights" in capsys.readouterr().out
    build_base(small())
    assert "random weights" not in capsys.readouterr().out


def test_warm_start_copies_weights_across_input_sizes() -> None:
    keras.utils.set_random_seed(4)
    source = build_model(small(image_size=32))
    keras.utils.set_random_seed(5)
    target = build_model(small(image_size=64, dense_units=64))
    copied = warm_start(target, source)
    base_t, base_s = target.get_layer(BASE_NAME), source.get_layer(BASE_NAME)
    assert copied >= sum(1 for layer in base_s.layers if layer.weights)
    for ours, theirs in zip(base_t.weights, base_s.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    # Another head width does not fit and is left as initialised.
    assert target.get_layer("dense").get_weights()[0].shape == (1280, 64)


def test_flip_tta_averages_each_image_and_its_mirror_everywhere(tmp_path: Path) -> None:
    """predict, the .keras file and the SavedModel all return mean(p(x), p(flip(x)))."""
    keras.utils.set_random_seed(6)
    plain = build_model(small(image_size=48))
    tta = build_model(small(image_size=48, tta="flip"))
    assert [layer.name for layer in tta.layers if layer.weights] == [
        layer.name for layer in plain.layers if layer.weights
    ]
    rng = np.random.default_rng(1)
    calibration = tf.data.Dataset.from_tensor_slices(
        (rng.integers(0, 256, (256, 32, 32, 3)).astype("float32"), np.zeros(256))
    ).batch(64)
    BatchNormCalibrator(plain)(calibration)
    tta.set_weights(plain.get_weights())
    images = rng.integers(0, 256, (24, 32, 32, 3)).astype(np.uint8)
    x = images.astype("float32")
    one = plain.predict(x, verbose=0).ravel()
    mirror = plain.predict(x[:, :, ::-1], verbose=0).ravel()
    expected = (one + mirror) / 2
    assert np.abs(one - mirror).max() > 1e-4  # the mirror view really differs
    np.testing.assert_allclose(tta.predict(x, verbose=0).ravel(), expected, atol=1e-5)
    tta.save(tmp_path / "tta.keras")
    reloaded = keras.models.load_model(tmp_path / "tta.keras")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0).ravel(), expected, atol=1e-5)
    saved = tf.saved_model.load(str(export_saved_model(tta, tmp_path / "sm")))
    np.testing.assert_allclose(
        saved.serve(tf.constant(images)).numpy().ravel(), expected, atol=1e-5
    )
    single = saved.serve(tf.constant(images[:1])).numpy().ravel()
    np.testing.assert_allclose(single, expected[:1], atol=1e-5)
    # While training no views are added: one output per image (last: it moves BN statistics).
    assert tuple(tta(x, training=True).shape) == (24, 1)
