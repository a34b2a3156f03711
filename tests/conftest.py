"""Shared fixtures: generated CIFAKE-layout datasets, isolated caches and MLflow stores.

Tests shrink the problem (tiny generated images, 32 px input, one or two epochs) rather than
mocking TensorFlow or MLflow: every store is a real sqlite file in a temporary folder.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def synthetic_image(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 32x32 RGB uint8 image: REAL (0) is smooth, FAKE (1) carries a fine checkerboard.

    The two classes differ in a way a small CNN picks up within an epoch or two.
    """
    base = rng.integers(40, 200, size=(4, 4, 3)).astype(np.float64)
    smooth = np.kron(base, np.ones((8, 8, 1)))
    smooth += rng.normal(0, 6, size=smooth.shape)
    if label == 1:
        checker = (np.indices((32, 32)).sum(axis=0) % 2) * 2 - 1
        smooth += 35 * checker[..., None]
    return np.clip(smooth, 0, 255).astype(np.uint8)


def jpeg_bytes(pixels: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def write_cifake(
    root: Path,
    per_class: dict[str, int] | int = 20,
    seed: int = 0,
) -> Path:
    """Write a CIFAKE folder ``root/{train,test}/{REAL,FAKE}/*.jpg``; returns ``root``.

    ``per_class`` is a count for every split, or ``{"train": n, "test": m}``.
    """
    rng = np.random.default_rng(seed)
    counts = per_class if isinstance(per_class, dict) else {"train": per_class, "test": per_class}
    for split, count in counts.items():
        for label, cls in enumerate(("REAL", "FAKE")):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                (folder / f"{i:04d}.jpg").write_bytes(jpeg_bytes(synthetic_image(label, rng)))
    return root


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty decoded-image cache, also set as $CIFAKE_CACHE_DIR."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("CIFAKE_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def cifake_dir(tmp_path: Path) -> Path:
    """A small generated CIFAKE folder (20 images per class and split)."""
    return write_cifake(tmp_path / "cifake", 20)


@pytest.fixture
def tracking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh sqlite MLflow store in a temporary working folder; yields its URI."""
    import mlflow

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


@contextmanager
def module_store(work: Path) -> Iterator[str]:
    """For module-scoped fixtures: work in ``work`` with its own sqlite store and image cache."""
    import mlflow

    uri = f"sqlite:///{work / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("CIFAKE_CACHE_DIR", str(work / "cache"))
        mp.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        yield uri
        while mlflow.active_run():
            mlflow.end_run()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real CIFAKE archives at SHARED_DATA (skips when this checkout has none)."""
    if not (SHARED_DATA / "cifake-test.tar.gz").is_file():
        pytest.skip(f"real CIFAKE not found at {SHARED_DATA}")
    return SHARED_DATA


def register_small_champion(work: Path, seed: int, epochs: int, model: str) -> None:
    """Train a detector briefly on generated images and make it ``model``'s champion."""
    import mlflow

    from cifake_mlflow import registry
    from cifake_mlflow.training.config import TrainConfig
    from cifake_mlflow.training.run import prepare_data, train_and_log

    data = write_cifake(work / "cifake", {"train": 60, "test": 8}, seed=seed)
    cfg = TrainConfig(data=str(data), weights="none", image_size=32, epochs=epochs, batch_size=16)
    summary = train_and_log(cfg, verbose=0)
    ds, splits = prepare_data(cfg)
    model_uri = mlflow.get_run(summary.run_id).data.tags["model_uri"]
    registry.register_and_gate(model_uri, model, ds.images[splits.val], ds.labels[splits.val])


def small_champion_store(
    factory: pytest.TempPathFactory, tag: str, seed: int, epochs: int, model: str
) -> Iterator[Path]:
    """For a module's ``store`` fixture: a work folder with a sqlite registry whose ``model``
    has a briefly trained champion; the store is in use until the module ends."""
    work = factory.mktemp(tag)
    with module_store(work):
        register_small_champion(work, seed=seed, epochs=epochs, model=model)
        yield work
