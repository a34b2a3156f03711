"""Training inside a wall-clock budget: the schedule is sized to the steps the machine can run.

Machines of one kind differ in speed by 1.6x or more, so a recipe fixed in epochs either
overruns its minutes on a slow machine or leaves minutes unused on a fast one. With a budget
(``--max-minutes``), :class:`TimeBudget` measures the training step on the machine at hand,
plans how many steps fit before the budget ends (the last validation pass included), and
stretches or shrinks the cosine decay to end exactly there, so the run is a complete schedule
whatever the machine (a truncated schedule would stop at a high learning rate). ``epochs``
becomes a cap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import keras
import tensorflow as tf

#: Steps after the first (which includes tracing) before the step time is trusted.
WARMUP_STEPS = 10
#: Until a whole epoch has been timed, validation and BatchNorm recalibration are assumed to
#: cost this share of a training step per batch they process (inference only, no gradients).
INFERENCE_SHARE = 0.5


@keras.saving.register_keras_serializable(package="cifake")
class BudgetedCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Keras' cosine decay to zero, with an end that may move while training runs.

    The learning rate is ``initial * (1 + cos(pi * progress)) / 2``. Until the first re-plan,
    progress is ``step / decay_steps``, exactly Keras' ``CosineDecay``. A re-plan at step ``s``
    (:meth:`set_steps` with ``at=s``) keeps the progress reached at ``s`` and spreads what is
    left of it evenly over the steps up to the new end, so the learning rate goes on from where
    it is and still only falls: stretching the plan slows the decay instead of raising the rate.
    The plan lives in variables that the traced training step reads, so it takes effect at the
    next step without retracing.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        anchor_step: int = 0,
        anchor_progress: float = 0.0,
    ) -> None:
        super().__init__()
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = self._variable(max(1, decay_steps), "decay_steps")
        self.anchor_step = self._variable(anchor_step, "anchor_step")
        self.anchor_progress = self._variable(anchor_progress, "anchor_progress")

    @staticmethod
    def _variable(value: float, name: str) -> tf.Variable:
        return tf.Variable(float(value), trainable=False, dtype=tf.float32, name=name)

    def progress(self, step: tf.Tensor | int) -> tf.Tensor:
        """Share of the decay done at ``step``: 0 at the start, 1 from the planned end on."""
        step = tf.cast(step, tf.float32)
        left = tf.maximum(self.decay_steps - self.anchor_step, 1.0)
        since, rest = step - self.anchor_step, 1.0 - self.anchor_progress
        # Divided last, so that without a re-plan this is step / decay_steps to the bit.
        done = self.anchor_progress + since * rest / left
        return tf.where(step >= self.decay_steps, 1.0, tf.clip_by_value(done, 0.0, 1.0))

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        return self.initial_learning_rate * 0.5 * (1.0 + tf.cos(math.pi * self.progress(step)))

    def set_steps(self, steps: int, at: int = 0) -> None:
        """End the decay after ``steps`` optimizer steps in all, re-planned at step ``at``."""
        progress = float(self.progress(at)) if at > 0 else 0.0
        self.anchor_progress.assign(progress)
        self.anchor_step.assign(float(at))
        self.decay_steps.assign(float(max(1, steps)))

    def get_config(self) -> dict[str, float | int]:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_steps": int(self.decay_steps.numpy()),
            "anchor_step": int(self.anchor_step.numpy()),
            "anchor_progress": float(self.anchor_progress.numpy()),
        }


def steps_that_fit(
    remaining_seconds: float, step_seconds: float, overhead_seconds: float, steps_per_epoch: int
) -> int:
    """Training steps that fit in ``remaining_seconds``, with validation's cost counted in.

    Each epoch adds ``overhead_seconds`` (validation, BatchNorm recalibration); one such pass
    is reserved for the end, where Keras validates the last, possibly partial, epoch.
    """
    usable = remaining_seconds - overhead_seconds
    if usable <= 0:
        return 0
    per_step = step_seconds + overhead_seconds / steps_per_epoch
    return int(usable / per_step)


class TimeBudget(keras.callbacks.Callback):
    """Plans the training steps that fit in ``seconds`` and stops training when they are done.

    It plans once :data:`WARMUP_STEPS` steps are timed and again after every epoch, from the
    mean step time of all steps timed so far and the mean time around an epoch's steps
    (validation, recalibration, refilling the input pipeline; the first epoch's, which traces
    validation and hides the pipeline's fill in its first step, only until a later one is
    measured), so one slow or fast epoch on a noisy machine moves the plan little. Each plan
    moves the end of ``schedule`` (if given) from the current step on. Steps are the
    optimizer's iterations, which the schedule reads too, so the model must have a fresh
    optimizer. ``eval_batches`` is the number of batches validation and recalibration process
    per epoch, for the estimate before the first epoch ends. ``clock`` reads seconds.
    """

    def __init__(
        self,
        seconds: float,
        steps_per_epoch: int,
        max_steps: int,
        eval_batches: int = 0,
        schedule: BudgetedCosineDecay | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__()
        self.seconds = seconds
        self.steps_per_epoch = steps_per_epoch
        self.max_steps = max_steps
        self.eval_batches = eval_batches
        self.schedule = schedule
        self.clock = clock
        self.planned_steps = max_steps
        self.spent = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._start = self.clock()
        self.planned_steps, self.spent = self.max_steps, False
        self._step_seconds: float | None = None
        self._overheads: list[float] = []
        self._timed_steps, self._timed_seconds, self._epochs_done = 0, 0.0, 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = self.clock()
        self._epoch_steps = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = self.clock()
        self._epoch_steps += 1
        if self._epoch_steps == 1:  # it also traces the step or refills the pipeline
            self._first_step_end = now
        else:
            self._timed_steps += 1
            self._timed_seconds += now - self._last_step_end
        self._last_step_end = now
        if self._step_seconds is None and self._timed_steps >= WARMUP_STEPS:
            self._step_seconds = self._timed_seconds / self._timed_steps
            self._plan(now)
        self._stop_if_done()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = self.clock()
        if self._epoch_steps >= 2:
            self._measure_epoch(now)
        self._epochs_done += 1
        if self._step_seconds is not None and not self.model.stop_training:
            self._plan(now)
            self._stop_if_done()
        if logs is not None:
            logs["planned_epochs"] = self.planned_steps / self.steps_per_epoch

    def _measure_epoch(self, now: float) -> None:
        """Mean step time so far, and the seconds this epoch spent around its steps."""
        step = (self._last_step_end - self._first_step_end) / (self._epoch_steps - 1)
        overhead = now - self._last_step_end
        if self._epochs_done:  # after the first epoch, the first step's extra is the refill
            overhead += max(0.0, self._first_step_end - self._epoch_start - step)
        self._step_seconds = self._timed_seconds / self._timed_steps
        self._overheads.append(overhead)

    def _plan(self, now: float) -> None:
        step = self._step_seconds or 0.0
        if self._overheads:
            # The first epoch's is untypical (validation's functions are traced, the pipeline's
            # fill hides in its first step): it counts only until a later epoch is measured.
            measured = self._overheads[1:] or self._overheads
            overhead = sum(measured) / len(measured)
        else:
            overhead = self.eval_batches * step * INFERENCE_SHARE
        remaining = self.seconds - (now - self._start)
        done = self._steps_done()
        more = steps_that_fit(remaining, step, overhead, self.steps_per_epoch)
        self.planned_steps = min(self.max_steps, done + more)
        if self.schedule is not None:
            self.schedule.set_steps(self.planned_steps, at=done)

    def _steps_done(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _stop_if_done(self) -> None:
        if self._steps_done() >= self.planned_steps:
            self.spent = self.planned_steps < self.max_steps
            self.model.stop_training = True
