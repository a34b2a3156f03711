"""Everything MLflow: store, experiment, run names, params, metrics, artifacts and the model.

Nothing else in the package imports mlflow for logging; training and evaluation hand their
results here. The store defaults to an embedded ``sqlite:///mlflow.db`` with artifacts in
``mlruns/`` beside it; ``MLFLOW_TRACKING_URI`` points everything at a server instead.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import keras
import mlflow
import numpy as np
from mlflow.data.meta_dataset import MetaDataset

import cifake_mlflow
from cifake_mlflow.data.dataset import Dataset, Splits
from cifake_mlflow.evaluation import plots
from cifake_mlflow.evaluation.report import Evaluation
from cifake_mlflow.training.config import TrainConfig
from cifake_mlflow.training.fit import TrainResult

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACT_FOLDER = "mlruns"  # the folder MLflow itself uses beside a sqlite store


# -- store and experiment --------------------------------------------------------------------
def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the embedded sqlite store in the working folder."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    mlflow.set_tracking_uri(uri)
    return uri


def local_artifact_root(uri: str) -> str | None:
    """For a local sqlite store: ``mlruns/`` beside the database file, as a file URI."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite":
        return None
    db_path = Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else Path("mlflow.db")
    return (db_path.resolve().parent / ARTIFACT_FOLDER).as_uri()


def use_experiment(name: str) -> str:
    """Select (creating if needed) the experiment; returns its id.

    Under ``mlflow run`` the run already exists in the experiment the user chose, and a nested
    run belongs with its parent, so in both cases the experiment is left alone.
    """
    uri = tracking_uri()
    active = mlflow.active_run()
    if active is not None:  # nested runs (trials) stay beside their parent
        return active.info.experiment_id
    if os.environ.get("MLFLOW_RUN_ID"):
        return mlflow.get_run(os.environ["MLFLOW_RUN_ID"]).info.experiment_id
    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        root = local_artifact_root(uri)
        location = f"{root}/{name}" if root else None
        try:
            experiment_id = mlflow.create_experiment(name, artifact_location=location)
        except mlflow.exceptions.MlflowException:  # another worker created it first
            experiment_id = mlflow.get_experiment_by_name(name).experiment_id
    else:
        experiment_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


# -- runs and plain logging: every other module writes to MLflow through these -----------------
def start_run(run_name: str | None = None, nested: bool = False) -> mlflow.ActiveRun:
    """Start (or, under ``mlflow run``, attach to) a run."""
    return mlflow.start_run(run_name=run_name, nested=nested)


def end_run(status: str = "FINISHED") -> None:
    """End the active run as FINISHED, FAILED or KILLED (an interrupt)."""
    mlflow.end_run(status=status)


def set_tags(tags: Mapping[str, object]) -> None:
    mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_metrics(metrics: Mapping[str, float], model_id: str | None = None) -> None:
    """Metrics of the active run; ``model_id`` also links them to that logged model."""
    mlflow.log_metrics(dict(metrics), model_id=model_id)


def log_params(params: Mapping[str, object]) -> None:
    mlflow.log_params({k: str(v) for k, v in params.items()})


def log_text(text: str, path: str) -> None:
    mlflow.log_text(text, path)


def log_figure(figure: object, path: str) -> None:
    mlflow.log_figure(figure, path)


def weights_label(cfg: TrainConfig) -> str:
    """'imagenet', 'none' or 'file': the weights source in a few letters for names and tags."""
    return cfg.weights if cfg.weights in ("imagenet", "none") else "file"


def run_name(cfg: TrainConfig) -> str:
    """Readable in the MLflow UI: model, input size, weights, depth, lr, dropout."""
    if cfg.run_name:
        return cfg.run_name
    weights = weights_label(cfg)
    stem = "" if cfg.stem_stride == 2 else f"-stem{cfg.stem_stride}"
    stem += "" if cfg.block1_stride == 2 else f"-b1s{cfg.block1_stride}"
    width = "" if cfg.alpha == 1.0 else f"-a{cfg.alpha:g}"
    return (
        f"mnv2-{cfg.image_size}px{stem}{width}-{weights}-u{cfg.trainable_base_layers}"
        f"-lr{cfg.learning_rate:g}-do{cfg.dropout:g}"
    )


# -- params and tags -------------------------------------------------------------------------
def git_commit() -> str:
    """The source commit, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=Path(cifake_mlflow.__file__).parent,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def weights_source(cfg: TrainConfig) -> str:
    """Human-readable origin of the base weights (with a digest for a local file)."""
    if cfg.weights == "imagenet":
        return "imagenet (keras.applications download)"
    if cfg.weights == "none":
        return "none (random init, trained from scratch)"
    data = Path(cfg.weights).expanduser().read_bytes()
    return f"file {Path(cfg.weights).name} sha256:{hashlib.sha256(data).hexdigest()[:16]}"


def run_params(cfg: TrainConfig, ds: Dataset, splits: Splits) -> dict[str, str]:
    """The resolved config, dataset facts, weights source and versions."""
    import tensorflow as tf

    params = cfg.to_params()
    params.update(
        {
            "trainable_base_layers": str(cfg.trainable_base_layers),
            "batchnorm_momentum": str(cfg.batchnorm_momentum),
            "dataset_digest": ds.digest,
            "dataset_source": str(Path(ds.source).resolve()),
            "n_train": str(len(splits.train)),
            "n_val": str(len(splits.val)),
            "n_test": str(len(splits.test)),
            "dropped_train_duplicates": str(splits.dropped_train_duplicates),
            "dropped_test_leaks": str(splits.dropped_test_leaks),
            "weights_source": weights_source(cfg),
            "tensorflow_version": tf.__version__,
            "keras_version": keras.__version__,
            "mlflow_version": mlflow.__version__,
            "python_version": platform.python_version(),
            "git_commit": git_commit(),
        }
    )
    params.update({f"data_{k}": str(v) for k, v in ds.report.counts.items()})
    return params


def log_params_once(params: Mapping[str, str]) -> None:
    """Log params the run does not hold yet.

    ``mlflow run`` logs the entry point's parameters itself, as typed (``1e-3``); logging the
    same key again with another spelling (``0.001``) would fail, so those are kept as given.
    """
    run = mlflow.active_run()
    existing = mlflow.get_run(run.info.run_id).data.params if run else {}
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})


def run_tags(cfg: TrainConfig, ds: Dataset) -> dict[str, str]:
    return {
        "mlflow.runName": run_name(cfg),
        "task": "train",
        "model_family": "MobileNetV2",
        "weights": weights_label(cfg),
        "image_size": str(cfg.image_size),
        "dataset_digest": ds.digest[:12],
    }


# -- metrics ---------------------------------------------------------------------------------
class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics (train and validation twins, lr, time) at step = epoch."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        finite = {k: float(v) for k, v in (logs or {}).items() if _is_finite(v)}
        mlflow.log_metrics(finite, step=epoch + 1)


class StartupLogger(keras.callbacks.Callback):
    """Logs ``startup_seconds`` the moment the first training step ends, and says so.

    Start-up is process start (``cifake_mlflow.STARTED``) to the end of the first training
    step: imports, data, model build and the first traced step. It is logged then, not when
    the run ends, so that the figure is in the UI while training goes on and survives a run
    that is stopped early (``benchmarks/startup.py`` stops ``cifake train`` right after it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.seconds: float | None = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.seconds is None:
            self.seconds = time.time() - cifake_mlflow.STARTED
            mlflow.log_metric("startup_seconds", self.seconds)
            print(f"{STARTUP_LINE} {self.seconds:.1f} s after start", flush=True)


#: The line ``cifake train`` prints when its first training step ends (benchmarks wait for it).
STARTUP_LINE = "first training step done"


def _is_finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# -- datasets --------------------------------------------------------------------------------
def split_digest(ds: Dataset, rows: np.ndarray) -> str:
    """Order-independent digest of the images in ``rows`` (content hashes and labels)."""
    keys = sorted(f"{ds.labels[i]}{ds.hashes[i].hex()}" for i in rows)
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def log_datasets(ds: Dataset, splits: Splits) -> None:
    """Log train, validation and test as MLflow dataset inputs with their digests."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    with warnings.catch_warnings():  # MLflow registers its local source twice and warns so
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(Path(ds.source).resolve().as_uri())
    for context, rows in (
        ("training", splits.train),
        ("validation", splits.val),
        ("testing", splits.test),
    ):
        meta = MetaDataset(source=source, name=f"cifake-{context}", digest=split_digest(ds, rows))
        log_input_once(meta, context)


def log_input_once(
    meta: MetaDataset, context: str, run_id: str | None = None, attempts: int = 4
) -> None:
    """Log ``meta`` as an input of the run, retried when a parallel worker inserted it first.

    MLflow's SQL store checks whether a dataset exists and then inserts it; two tuning
    workers logging the same split at the same moment both pass the check and one insert
    fails on the unique key. On the retry the dataset exists and is only linked to the run.
    """
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    run_id = run_id or mlflow.active_run().info.run_id
    dataset = DatasetInput(meta._to_mlflow_entity(), [InputTag(MLFLOW_DATASET_CONTEXT, context)])
    for attempt in range(attempts):
        try:
            mlflow.MlflowClient().log_inputs(run_id, datasets=[dataset])
            return
        except mlflow.exceptions.MlflowException as exc:
            duplicate = "duplicate key" in str(exc) or "UNIQUE constraint failed" in str(exc)
            if not duplicate or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


# -- artifacts -------------------------------------------------------------------------------
def log_json(data: object, path: str) -> None:
    mlflow.log_dict(json.loads(json.dumps(data, default=_jsonable)), path)


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def log_data_report(ds: Dataset, splits: Splits) -> None:
    """Counts, bad and resized files, duplicates and leakage, as ``data/report.json``."""
    report = ds.report.to_dict()
    report["splits"] = {
        "train": len(splits.train),
        "val": len(splits.val),
        "test": len(splits.test),
        "dropped_train_duplicates": splits.dropped_train_duplicates,
        "dropped_test_leaks": splits.dropped_test_leaks,
    }
    log_json(report, "data/report.json")
    mlflow.log_metrics(
        {
            "data_bad_files": len(ds.report.bad_files),
            "data_resized_files": len(ds.report.resized_files),
        }
    )


def log_training(result: TrainResult) -> None:
    """Training curves, the per-epoch history and how training ended."""
    mlflow.log_figure(plots.history_figure(result.history), "training/curves.png")
    log_json(result.history, "training/history.json")
    metrics = {
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
    }
    mlflow.log_metrics(metrics)
    mlflow.set_tag("stopped_early", str(result.stopped_early).lower())
    if result.stopped_by_budget:
        mlflow.set_tag("stopped_by_time_budget", "true")


def log_evaluation(
    ev: Evaluation,
    images: np.ndarray,
    prefix: str = "test",
    folder: str = "evaluation",
    model_id: str | None = None,
) -> None:
    """Metrics (reference table, ECE, PR-AUC, TPR at FPR, CIs) as metrics, text and JSON, plus
    confusion matrix, ROC and PR curves, reliability diagram, score histograms and error grid.
    """
    mlflow.log_metrics(ev.flat(f"{prefix}_"), model_id=model_id)
    mlflow.log_text(ev.text, f"{folder}/classification_report.txt")
    log_json(ev.table, f"{folder}/classification_report.json")
    mlflow.log_figure(
        plots.confusion_figure(ev.labels, ev.scores, ev.threshold), f"{folder}/confusion_matrix.png"
    )
    mlflow.log_figure(plots.roc_figure(ev.labels, ev.scores), f"{folder}/roc_curve.png")
    mlflow.log_figure(plots.pr_figure(ev.labels, ev.scores), f"{folder}/pr_curve.png")
    raw = ev.raw_scores if ev.temperature != 1.0 else None
    mlflow.log_figure(
        plots.reliability_figure(ev.labels, ev.scores, raw), f"{folder}/reliability.png"
    )
    mlflow.log_figure(
        plots.histogram_figure(ev.labels, ev.scores, ev.threshold),
        f"{folder}/score_histograms.png",
    )
    mlflow.log_figure(
        plots.misclassified_figure(images, ev.labels, ev.scores, ev.threshold),
        f"{folder}/misclassified.png",
    )
