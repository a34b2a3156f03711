"""One tracked training run: data -> model -> fit -> evaluate -> log, in that order.

This is the only place that strings the rooms together; the CLI, ``mlflow run`` and the tuning
objective all call :func:`train_and_log`. Everything that can be refused (config, data, weights)
is checked before the MLflow run starts, so bad input leaves no half-made run behind.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import keras
import mlflow
import numpy as np
import tensorflow as tf

from cifake_mlflow import tracking
from cifake_mlflow.data.dataset import Dataset, Splits, load_dataset, make_splits
from cifake_mlflow.data.perturbations import parse_names
from cifake_mlflow.data.pipeline import augmenter, make_dataset, robust_augmenter
from cifake_mlflow.evaluation.calibration import Calibration, apply_temperature, calibrate
from cifake_mlflow.evaluation.report import Evaluation, evaluate, predict_scores, robustness_report
from cifake_mlflow.modeling.mobilenet import build_model, warm_start
from cifake_mlflow.training import accelerate
from cifake_mlflow.training.config import TrainConfig
from cifake_mlflow.training.fit import TrainResult, fit


@dataclass
class RunSummary:
    """What a finished run produced, for callers that chain further work (tuning, registry)."""

    run_id: str
    model_uri: str  # "" when the config says not to log the model
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
    # Whole batches only (when there is one): a smaller last batch would trace again.
    whole = max(1, len(splits.train) // cfg.batch_size) * cfg.batch_size
    count = min(len(splits.train), whole, cfg.bn_recalibration_batches * cfg.batch_size)
    rows = rng.choice(splits.train, size=count, replace=False)
    return make_dataset(ds.images[rows], ds.labels[rows], cfg.batch_size)


def best_val_metrics(history: Mapping[str, list[float]], best_epoch: int) -> dict[str, float]:
    """Validation metrics of the epoch whose weights were kept (``best_val_accuracy``, ...)."""
    return {
        f"best_{name}": values[best_epoch - 1]
        for name, values in history.items()
        if name.startswith("val_") and len(values) >= best_epoch
    }


_interrupted = threading.Event()
_depth = [0]  # how many signals_as_interrupt blocks are open in the main thread


def calibrate_on_validation(
    cfg: TrainConfig, model: keras.Model, ds: Dataset, splits: Splits
) -> Calibration:
    """Temperature and threshold from the validation split (never test); logged as metrics."""
    labels = ds.labels[splits.val]
    cal = calibrate(
        labels,
        predict_scores(model, ds.images[splits.val]),
        threshold=cfg.threshold,
        target_fpr=cfg.target_fpr,
        temperature_scaling=cfg.temperature_scaling,
    )
    tracking.log_metrics(cal.metrics("val_"))
    print(
        f"calibration on validation: temperature {cal.temperature:.3f}, ECE "
        f"{cal.ece_before:.4f} -> {cal.ece_after:.4f}, threshold {cal.threshold:.4f}",
        flush=True,
    )
    return cal


def robust_val_metrics(
    cfg: TrainConfig, model: keras.Model, ds: Dataset, splits: Splits, cal: Calibration
) -> dict[str, float]:
    """``--val-robustness``: the validation split re-scored after each named transformation.

    Logs ``val_robust_<name>_{accuracy,roc_auc,fpr}`` and the means over the transformations,
    ``best_val_robust_accuracy`` and ``best_val_robust_roc_auc`` (the kept epoch's weights, as
    every ``best_val_*``), which a study optimises to tune for robustness. The suite is fixed
    by the config, so trials that search ``robust_augment`` are scored on the same changes.
    """
    names = parse_names(cfg.val_robustness)
    if not names:
        return {}

    def score(images: np.ndarray) -> np.ndarray:
        return apply_temperature(predict_scores(model, images), cal.temperature)

    images, labels = ds.images[splits.val], ds.labels[splits.val]
    report = robustness_report(score, images, labels, cal.threshold, names, cfg.seed)
    out = {f"val_robust_{n}_{m}": v for n in names for m, v in report[n].items()}
    for metric in ("accuracy", "roc_auc"):
        out[f"best_val_robust_{metric}"] = float(np.mean([report[n][metric] for n in names]))
    tracking.log_metrics(out)
    return out


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM and SIGINT (kill, Ctrl-C) as an interruption, so runs end KILLED.

    The flag matters because TensorFlow may surface an interrupt raised inside a traced
    function as one of its own errors rather than as ``KeyboardInterrupt``, and because Python
    drops an exception raised while a destructor runs (a signal that lands during garbage
    collection): a block that ends normally with the flag set raises the interrupt then, so
    the work stops at the latest when the trial or run it hit is over.
    """

    def handler(signum: int, frame: object) -> None:
        _interrupted.set()
        raise KeyboardInterrupt(f"signal {signum}")

    wanted = (signal.SIGTERM, signal.SIGINT)
    try:
        previous = {sig: signal.signal(sig, handler) for sig in wanted}
    except ValueError:  # not the main thread
        yield
        return
    if _depth[0] == 0:
        _interrupted.clear()  # a new outermost block: an old interruption is not this one's
    _depth[0] += 1
    try:
        yield
    finally:
        _depth[0] -= 1
        for sig, old in previous.items():
            signal.signal(sig, old)
    if _interrupted.is_set():
        raise KeyboardInterrupt("interrupted by a signal during cleanup")


def interrupted(exc: BaseException) -> bool:
    """True if ``exc`` ends the work because the user or the system asked it to stop."""
    return isinstance(exc, KeyboardInterrupt) or _interrupted.is_set()


def train_and_log(
    cfg: TrainConfig,
    *,
    data: tuple[Dataset, Splits] | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    nested: bool = False,
    tags: Mapping[str, str] | None = None,
    verbose: int | None = None,
    killed_on: tuple[type[BaseException], ...] = (),
    on_run_start: Callable[[str], None] | None = None,
) -> RunSummary:
    """Train, evaluate on test and log everything to one MLflow run.

    The run ends FINISHED, KILLED (Ctrl-C, or an exception listed in ``killed_on`` such as
    Optuna's ``TrialPruned``) or FAILED (any other exception, re-raised); never RUNNING.
    ``on_run_start`` receives the run id as soon as the run exists.
    """
    accel = accelerate.resolve(cfg)  # refuses impossible device settings before any work
    tracking.use_experiment(cfg.experiment)
    warm = tracking.keras_model_path(cfg.init_from) if cfg.init_from else None
    ds, splits = data if data is not None else prepare_data(cfg)
    keras.utils.set_random_seed(cfg.seed)
    with accel.strategy.scope(), accelerate.precision(accel.mixed_precision):
        model = build_model(cfg)
        if warm is not None:
            copied = warm_start(model, keras.models.load_model(warm))
            print(f"warm start from {cfg.init_from}: {copied} layers copied", flush=True)
    run = tracking.start_run(run_name=tracking.run_name(cfg), nested=nested)
    try:
        with signals_as_interrupt():
            if on_run_start is not None:
                on_run_start(run.info.run_id)
            tracking.set_tags({**tracking.run_tags(cfg, ds), **(tags or {})})
            summary = _train_in_run(cfg, model, accel, ds, splits, callbacks, verbose, nested)
    except BaseException as exc:
        killed = interrupted(exc) or isinstance(exc, killed_on)
        tracking.end_run(status="KILLED" if killed else "FAILED")
        raise
    tracking.end_run()
    logged = summary.model_uri or "no model logged"
    print(f"run {summary.run_id} ({tracking.run_name(cfg)}) -> {logged}", flush=True)
    return summary


def _train_in_run(
    cfg: TrainConfig,
    model: keras.Model,
    accel: accelerate.Acceleration,
    ds: Dataset,
    splits: Splits,
    callbacks: Sequence[keras.callbacks.Callback],
    verbose: int | None,
    nested: bool = False,
) -> RunSummary:
    """Everything that happens inside the active MLflow run."""
    tracking.log_params_once({**tracking.run_params(cfg, ds, splits), **accel.params()})
    tracking.log_datasets(ds, splits)
    tracking.log_data_report(ds, splits)
    train_data = make_dataset(
        ds.images[splits.train],
        ds.labels[splits.train],
        cfg.batch_size,
        shuffle=True,
        augment=augmenter(cfg),
        robust=robust_augmenter(cfg),
        seed=cfg.seed,
    )
    val_data = make_dataset(ds.images[splits.val], ds.labels[splits.val], cfg.batch_size)
    # Start-up is measured for the first thing a process trains, not for later Optuna trials.
    startup = [] if nested else [tracking.StartupLogger()]
    result = fit(
        model,
        train_data,
        val_data,
        cfg,
        callbacks=[*startup, tracking.MlflowEpochLogger(), *callbacks],
        verbose=verbose,
        calibration_data=calibration_batches(cfg, ds, splits),
        strategy=accel.strategy,
        jit_compile=accel.jit_compile,
    )
    tracking.log_training(result)
    val_metrics = best_val_metrics(result.history, result.best_epoch)
    tracking.log_metrics(val_metrics)
    cal = calibrate_on_validation(cfg, model, ds, splits)
    val_metrics |= robust_val_metrics(cfg, model, ds, splits, cal)
    print(f"evaluating on {len(splits.test):,} test images ...", flush=True)
    test = evaluate(
        model, ds.images[splits.test], ds.labels[splits.test], cal.threshold, cal.temperature
    )
    tracking.log_evaluation(test, ds.images[splits.test])
    print(test.text, flush=True)
    run_id = mlflow.active_run().info.run_id
    if not cfg.log_model:
        print("model not logged (log_model=False)", flush=True)
        return RunSummary(run_id, "", test, result, val_metrics)
    print("logging the model (TensorFlow SavedModel + pyfunc) ...", flush=True)
    model_uri = tracking.log_detector(model, cfg, cal)
    tracking.set_tags({"model_uri": model_uri})
    return RunSummary(run_id, model_uri, test, result, val_metrics)
