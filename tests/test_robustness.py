"""Each robustness transformation does what its name says; training augmentation uses them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cifake_mlflow.config import ConfigError
from cifake_mlflow.data import perturbations
from cifake_mlflow.data.pipeline import make_dataset, robust_augmenter
from cifake_mlflow.training.config import TrainConfig

pytestmark = pytest.mark.fast  # unit tests: the fast lane (pytest -m fast)

#: libjpeg's standard luminance quantisation table (quality 50).
IJG_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
     14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
     18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
     49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
)  # fmt: skip


def textured(n: int = 6, seed: int = 0) -> np.ndarray:
    """Images with plenty of high-frequency detail (noise over a gradient)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(40, 200, 32)[None, :, None, None] * np.ones((n, 32, 32, 3))
    return np.clip(ramp + rng.normal(0, 40, ramp.shape), 0, 255).astype(np.uint8).swapaxes(1, 2)


def high_frequency_energy(images: np.ndarray) -> float:
    """Mean squared discrete Laplacian: what blurring removes."""
    x = images.astype(np.float64)
    lap = 4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]
    return float(np.mean(lap**2))


@pytest.mark.parametrize("quality", [90, 50, 25])
def test_jpeg_quality_reads_back_from_the_file(quality: int) -> None:
    images = textured(2)
    data = perturbations.jpeg_bytes(images[0], quality)
    table = np.array(Image.open(io.BytesIO(data)).quantization[0])
    scale = 5000 / quality if quality < 50 else 200 - 2 * quality
    expected = np.clip((IJG_LUMA * scale + 50) // 100, 1, 255)
    assert sorted(table.tolist()) == sorted(expected.astype(int).tolist())
    out = perturbations.apply(f"jpeg{quality}", images)
    assert np.array_equal(out[0], np.asarray(Image.open(io.BytesIO(data))))
    assert not np.array_equal(out, images)


def test_lower_jpeg_quality_loses_more() -> None:
    images = textured()
    errors = [
        np.abs(perturbations.apply(f"jpeg{q}", images).astype(int) - images).mean()
        for q in (90, 50, 25)
    ]
    assert errors[0] < errors[1] < errors[2]


def test_blur_removes_high_frequencies_and_keeps_brightness() -> None:
    images = textured()
    energy = high_frequency_energy(images)
    soft = perturbations.apply("blur0.5", images)
    softer = perturbations.apply("blur1", images)
    assert high_frequency_energy(softer) < high_frequency_energy(soft) < energy / 2
    assert abs(softer.mean() - images.mean()) < 1.0


@pytest.mark.parametrize("sigma", [0.02, 0.05])
def test_noise_has_the_stated_standard_deviation(sigma: float) -> None:
    grey = np.full((8, 32, 32, 3), 128, np.uint8)  # mid-grey: no clipping
    noisy = perturbations.apply(f"noise{sigma}", grey, seed=1)
    spread = (noisy.astype(np.float64) - 128).std() / 255
    assert spread == pytest.approx(sigma, rel=0.08)
    assert np.array_equal(noisy, perturbations.apply(f"noise{sigma}", grey, seed=1))


def test_down_up_scaling_keeps_size_and_loses_detail() -> None:
    images = textured()
    out = perturbations.apply("downup0.5", images)
    assert out.shape == images.shape
    assert high_frequency_energy(out) < high_frequency_energy(images) / 2
    flat = np.full((1, 32, 32, 3), 77, np.uint8)
    assert np.array_equal(perturbations.apply("downup0.5", flat), flat)


def test_centred_crop_cuts_the_border_away() -> None:
    framed = np.zeros((1, 32, 32, 3), np.uint8)
    framed[..., 2] = 255  # blue inside
    framed[:, :2, :, :] = framed[:, -2:, :, :] = framed[:, :, :2, :] = framed[:, :, -2:, :] = 0
    framed[:, :2, :, 0] = framed[:, -2:, :, 0] = framed[:, :, :2, 0] = framed[:, :, -2:, 0] = 255
    out = perturbations.apply("crop0.875", framed)  # keeps the centre 28x28 of 32x32
    assert out.shape == framed.shape
    assert out[..., 0].max() == 0 and out[..., 2].min() == 255


def test_names_are_checked() -> None:
    assert perturbations.parse_names("jpeg50, blur1,none") == ("jpeg50", "blur1")
    assert perturbations.parse_names("none") == ()
    for bad in ("jpeg0", "jpeg50.5", "blur0", "noise1.5", "crop1", "sharpen2"):
        with pytest.raises(ValueError, match=bad.replace(".", r"\.")):
            perturbations.parse_names(bad)
    with pytest.raises(ConfigError, match="robust_augment"):
        TrainConfig(robust_augment="jpeg500")


def test_robust_metric_names_are_read_in_suite_order_from_both_splits() -> None:
    """compare's rows and the model card share this reader; old stores' names pass through."""
    keys = [
        "robust_noise0.05_accuracy",
        "val_robust_blur1_roc_auc",
        "robust_jpeg90_roc_auc",
        "robust_sharpen2_accuracy",  # not a transformation today: kept, after the suite
        "best_val_robust_accuracy",  # a mean over transformations, not one of them
        "test_accuracy",
    ]
    assert perturbations.robust_names(keys) == ["jpeg90", "blur1", "noise0.05", "sharpen2"]
    assert perturbations.split_robust_metric("robust_blur1_roc_auc") == ("blur1", "roc_auc")
    assert perturbations.split_robust_metric("val_robust_blur1_roc_auc") is None


def test_augment_batch_rate_and_seed() -> None:
    images = textured(40)
    untouched = perturbations.augment_batch(images, ["blur1"], 0.0, np.random.default_rng(0))
    assert np.array_equal(untouched, images)
    all_blurred = perturbations.augment_batch(images, ["blur1"], 1.0, np.random.default_rng(0))
    assert np.array_equal(all_blurred, perturbations.apply("blur1", images))
    half = perturbations.augment_batch(images, ["blur1", "jpeg25"], 0.5, np.random.default_rng(3))
    changed = (half != images).reshape(len(images), -1).any(axis=1).mean()
    assert 0.2 < changed < 0.8


def test_training_pipeline_applies_the_robust_augmentation() -> None:
    images = textured(32)
    labels = np.zeros(32, np.int64)
    cfg = TrainConfig(robust_augment="blur1", robust_augment_rate=1.0)
    batch, _ = next(iter(make_dataset(images, labels, 32, robust=robust_augmenter(cfg))))
    assert batch.dtype.name == "float32" and tuple(batch.shape) == (32, 32, 32, 3)
    assert np.array_equal(batch.numpy().astype(np.uint8), perturbations.apply("blur1", images))
    assert robust_augmenter(TrainConfig()) is None
