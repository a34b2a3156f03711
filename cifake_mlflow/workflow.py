"""One tracked training run: data -> model -> fit -> evaluate -> log, in that order.

This is the only place that strings the rooms together; the CLI, ``mlflow run`` and the tuning
objective all call :func:`train_and_log`. Everything that can be refused (config, data, weights)
is checked before the MLflow run starts, so bad input leaves no half-made run behind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import keras
import mlflow
import numpy as np
import tensorflow as tf

from cifake_mlflow import tracking
from cifake_mlflow.config import TrainConfig
from cifake_mlflow.data import Dataset, Splits, load_dataset, make_splits
from cifake_mlflow.evaluate import Evaluation, evaluate
from cifake_mlflow.model import build_model
from cifake_mlflow.pipeline import augmenter, make_dataset
from cifake_mlflow.train import TrainResult, fit


@dataclass
class RunSummary:
    """What a finished run produced, for callers that chain further work (tuning, registry)."""

    run_id: str
    model_uri: str
    test: Evaluation
    train: TrainResult
    val_metrics: dict[str, float] = field(default_factory=dict)


def prepare_data(cfg: TrainConfig, progress: bool = True) -> tuple[Dataset, Splits]:
    """Load (or reuse the cache of) the dataset and carve the splits the config asks for."""
    ds = load_dataset(cfg.data, cfg.cache_dir, cfg.on_bad_file, progress=progress)
    splits = make_splits(
        ds,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        drop_duplicates=cfg.drop_duplicates,
        max_train_images=cfg.max_train_images,
        max_test_images=cfg.max_test_images,
    )
    return ds, splits


def calibration_batches(cfg: TrainConfig, ds: Dataset, splits: Splits) -> tf.data.Dataset | None:
    """Clean, shuffled training batches for BatchNorm re-estimation (None when disabled)."""
    if cfg.bn_recalibration_batches == 0:
        return None
    rng = np.random.default_rng(cfg.seed)
    count = min(len(splits.train), cfg.bn_recalibration_batches * cfg.batch_size)
    rows = rng.choice(splits.train, size=count, replace=False)
    return make_dataset(ds.images[rows], ds.labels[rows], cfg.batch_size)


def best_val_metrics(history: Mapping[str, list[float]], best_epoch: int) -> dict[str, float]:
    """Validation metrics of the epoch whose weights were kept (``best_val_accuracy``, ...)."""
    return {
        f"best_{name}": values[best_epoch - 1]
        for name, values in history.items()
        if name.startswith("val_") and len(values) >= best_epoch
    }


def train_and_log(
    cfg: TrainConfig,
    *,
    data: tuple[Dataset, Splits] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
    verbose: int | None = None,
) -> RunSummary:
    """Train, evaluate on test and log everything to one MLflow run."""
    tracking.use_experiment(cfg.experiment)
    ds, splits = data if data is not None else prepare_data(cfg)
    keras.utils.set_random_seed(cfg.seed)
    model = build_model(cfg)
    with mlflow.start_run(run_name=tracking.run_name(cfg), nested=nested) as run:
        mlflow.set_tags({**tracking.run_tags(cfg, ds), **(tags or {})})
        tracking.log_params_once(tracking.run_params(cfg, ds, splits))
        tracking.log_datasets(ds, splits)
        tracking.log_data_report(ds, splits)
        train_data = make_dataset(
            ds.images[splits.train],
            ds.labels[splits.train],
            cfg.batch_size,
            shuffle=True,
            augment=augmenter(cfg),
            seed=cfg.seed,
        )
        val_data = make_dataset(ds.images[splits.val], ds.labels[splits.val], cfg.batch_size)
        result = fit(
            model,
            train_data,
            val_data,
            cfg,
            callbacks=[tracking.MlflowEpochLogger(), *callbacks],
            verbose=verbose,
            calibration_data=calibration_batches(cfg, ds, splits),
        )
        tracking.log_training(result)
        val_metrics = best_val_metrics(result.history, result.best_epoch)
        mlflow.log_metrics(val_metrics)
        print(f"evaluating on {len(splits.test):,} test images ...", flush=True)
        test = evaluate(model, ds.images[splits.test], ds.labels[splits.test], cfg.threshold)
        tracking.log_evaluation(test, ds.images[splits.test])
        print(test.text, flush=True)
        print("logging the model (TensorFlow SavedModel + pyfunc) ...", flush=True)
        model_uri = tracking.log_detector(model, cfg)
        mlflow.set_tag("model_uri", model_uri)
    print(f"run {run.info.run_id} ({tracking.run_name(cfg)}) -> {model_uri}", flush=True)
    return RunSummary(run.info.run_id, model_uri, test, result, val_metrics)
