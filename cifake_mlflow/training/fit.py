"""Compile and fit the detector with the reference callbacks.

Training knows nothing about MLflow or Optuna: callers pass extra Keras callbacks (per-epoch
logging, pruning) and receive a :class:`TrainResult`. Validation data is the only thing early
stopping ever sees; the test split never reaches this module.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from cifake_mlflow import console
from cifake_mlflow.training.budget import BudgetedCosineDecay, TimeBudget
from cifake_mlflow.training.config import TrainConfig


@dataclass
class TrainResult:
    """A fitted model and how fitting went."""

    model: keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int  # 1-based epoch whose weights the model holds
    stopped_early: bool
    seconds: float
    stopped_by_budget: bool = False  # the time budget (``max_minutes``) ended training


class EpochStats(keras.callbacks.Callback):
    """Adds ``learning_rate`` and ``epoch_time`` (seconds) to each epoch's logs.

    It must run before loggers so that they see these values too.
    """

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        logs["epoch_time"] = time.perf_counter() - self._start
        rate = self.model.optimizer.learning_rate
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


Schedule = keras.optimizers.schedules.LearningRateSchedule


def learning_rate(cfg: TrainConfig, steps_per_epoch: int) -> float | Schedule:
    """Constant rate, or cosine decay to zero over all planned steps.

    With a time budget the cosine's length is re-planned while training runs
    (:class:`~cifake_mlflow.training.budget.BudgetedCosineDecay`).
    """
    steps = max(1, cfg.epochs * steps_per_epoch)
    if cfg.lr_schedule == "cosine" and cfg.max_minutes is not None:
        return BudgetedCosineDecay(cfg.learning_rate, decay_steps=steps)
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=steps)
    return cfg.learning_rate


def optimizer(cfg: TrainConfig, rate: float | Schedule) -> keras.optimizers.Optimizer:
    """Adam, or AdamW when ``weight_decay`` is set (decay decoupled from the gradient step)."""
    if cfg.weight_decay > 0:
        return keras.optimizers.AdamW(rate, weight_decay=cfg.weight_decay)
    return keras.optimizers.Adam(rate)


def compile_model(
    model: keras.Model,
    cfg: TrainConfig,
    steps_per_epoch: int,
    jit_compile: bool = False,
    rate: float | Schedule | None = None,
) -> None:
    """Adam (AdamW with weight decay) + binary cross-entropy, tracking accuracy and ROC-AUC.

    ``rate``: the learning rate or schedule, when the caller must keep hold of it (default:
    :func:`learning_rate`).
    """
    if rate is None:
        rate = learning_rate(cfg, steps_per_epoch)
    model.compile(
        jit_compile=jit_compile,
        optimizer=optimizer(cfg, rate),
        loss=keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing),
        metrics=[
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(name="roc_auc", num_thresholds=1000),
        ],
    )


def build_optimizer(model: keras.Model) -> None:
    """Create the optimizer's slot variables now, before the training step is traced.

    Without a distribution strategy Keras defers this to the first trace of the step, and a
    ``tf.function`` whose first trace creates variables is traced a second time: MobileNetV2's
    training step was traced twice per run (about 8 s per run or trial on 2 cores).
    """
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)


def trainable_batchnorms(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """BatchNormalization layers whose statistics training changes (nested models included)."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.extend(trainable_batchnorms(layer))
        elif isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found.append(layer)
    return found


class BatchNormCalibrator:
    """Replaces BatchNorm moving statistics by their exact average over clean batches.

    Moving averages lag weights that move fast (training from scratch, short runs), so the
    model that inference sees differs from the one training optimised; with few steps it
    outputs one constant. Averaging each layer's batch statistics over clean training batches
    with the current weights ("precise BN") removes that lag. The forward step is traced once
    and reused: the momentum is a variable, not a Python float.
    """

    def __init__(self, model: keras.Model) -> None:
        self.layers = trainable_batchnorms(model)
        self.momentum = tf.Variable(0.0, trainable=False, dtype=tf.float32)

        @tf.function(reduce_retracing=True)
        def forward(images: tf.Tensor) -> None:
            model(images, training=True)

        self._forward = forward

    def __call__(self, batches: tf.data.Dataset) -> int:
        """Recalibrate on ``batches``; returns how many were used."""
        if not self.layers:
            return 0
        saved = [layer.momentum for layer in self.layers]
        count = 0
        try:
            for layer in self.layers:
                layer.momentum = self.momentum
            for count, (images, _) in enumerate(batches, start=1):
                self.momentum.assign(1.0 - 1.0 / count)  # running mean of batch statistics
                self._forward(images)
        finally:
            for layer, value in zip(self.layers, saved, strict=True):
                layer.momentum = value
        return count


class PreciseBatchNorm(keras.callbacks.Callback):
    """Re-estimates BatchNorm statistics right before each validation pass.

    Keras calls ``on_test_begin`` inside ``fit`` just before it validates an epoch, so the
    validation score (and the weights early stopping keeps) reflect the statistics inference
    will use rather than a lagging moving average.
    """

    def __init__(self, batches: tf.data.Dataset) -> None:
        super().__init__()
        self.batches = batches
        self._calibrate: BatchNormCalibrator | None = None

    def on_test_begin(self, logs: dict | None = None) -> None:
        if self._calibrate is None:
            self._calibrate = BatchNormCalibrator(self.model)
        self._calibrate(self.batches)


def fit(
    model: keras.Model,
    train_data: tf.data.Dataset,
    val_data: tf.data.Dataset,
    cfg: TrainConfig,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | None = None,
    calibration_data: tf.data.Dataset | None = None,
    strategy: tf.distribute.Strategy | None = None,
    jit_compile: bool = False,
) -> TrainResult:
    """Fit with early stopping on validation loss (restoring the best weights).

    ``calibration_data`` (clean, shuffled training batches) re-estimates BatchNorm statistics
    before every validation pass (:class:`PreciseBatchNorm`), so early stopping judges, and the
    restored best weights carry, the statistics that inference will use. ``strategy`` must be
    the one the model was built under; ``batch_size`` is then the global batch. With
    ``max_minutes`` set, training ends when the time budget is spent (:class:`TimeBudget`).
    """
    steps = int(train_data.cardinality().numpy())
    with (strategy or tf.distribute.get_strategy()).scope():
        rate = learning_rate(cfg, steps)  # kept: a time budget re-plans it while training runs
        compile_model(model, cfg, steps, jit_compile, rate)
        build_optimizer(model)
    stopper = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=cfg.patience, restore_best_weights=True, verbose=1
    )
    precise = [PreciseBatchNorm(calibration_data)] if calibration_data is not None else []
    budget = time_budget(cfg, rate, steps, val_data, calibration_data)
    if verbose is None:
        verbose = console.verbosity()
    start = time.perf_counter()
    stats = EpochStats()
    history = model.fit(
        train_data,
        validation_data=val_data,
        epochs=cfg.epochs,
        callbacks=[stats, *precise, *budget, stopper, *callbacks],
        verbose=verbose,
        shuffle=False,  # the tf.data pipeline shuffles
    )
    seconds = time.perf_counter() - start
    logs = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    val_loss = logs.get("val_loss", [])
    best = int(np.nanargmin(val_loss)) + 1 if val_loss else len(history.epoch)
    return TrainResult(
        model=model,
        history=logs,
        epochs_run=len(history.epoch),
        best_epoch=best,
        stopped_early=stopper.stopped_epoch > 0,
        seconds=seconds,
        stopped_by_budget=any(b.spent for b in budget),
    )


def time_budget(
    cfg: TrainConfig,
    rate: float | Schedule,
    steps_per_epoch: int,
    val_data: tf.data.Dataset,
    calibration_data: tf.data.Dataset | None,
) -> list[TimeBudget]:
    """The :class:`TimeBudget` callback for ``max_minutes`` (none without a budget)."""
    if cfg.max_minutes is None:
        return []
    eval_batches = int(val_data.cardinality().numpy())
    if calibration_data is not None:
        eval_batches += cfg.bn_recalibration_batches
    schedule = rate if isinstance(rate, BudgetedCosineDecay) else None
    return [
        TimeBudget(
            cfg.max_minutes * 60,
            steps_per_epoch,
            max_steps=cfg.epochs * steps_per_epoch,
            eval_batches=eval_batches,
            schedule=schedule,
        )
    ]
