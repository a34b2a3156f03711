"""Training in a time budget: the plan, the resizable cosine, and real Keras fits that obey it."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from cifake_mlflow.config import ConfigError
from cifake_mlflow.data.pipeline import make_dataset
from cifake_mlflow.modeling.mobilenet import build_model
from cifake_mlflow.training.budget import (
    WARMUP_STEPS,
    BudgetedCosineDecay,
    TimeBudget,
    steps_that_fit,
)
from cifake_mlflow.training.config import TrainConfig
from cifake_mlflow.training.fit import fit


@pytest.mark.fast
def test_steps_that_fit_reserve_the_last_validation() -> None:
    # 100 s left, 10 s of validation per 10-step epoch: 90 s for steps costing 1 + 1 s each.
    assert steps_that_fit(100.0, 1.0, 10.0, 10) == 45
    assert steps_that_fit(100.0, 1.0, 0.0, 10) == 100
    assert steps_that_fit(9.0, 1.0, 10.0, 10) == 0


@pytest.mark.fast
def test_budgeted_cosine_is_keras_cosine_of_the_planned_length() -> None:
    schedule = BudgetedCosineDecay(1e-3, decay_steps=100)
    for steps in (100, 37):
        schedule.set_steps(steps)
        reference = keras.optimizers.schedules.CosineDecay(1e-3, decay_steps=steps)
        for step in (0, 1, steps // 2, steps - 1, steps, steps + 5):
            assert float(schedule(step)) == float(reference(step))
    assert float(schedule(37)) == 0.0


@pytest.mark.fast
def test_budgeted_cosine_survives_serialisation() -> None:
    schedule = BudgetedCosineDecay(2e-3, decay_steps=10)
    schedule.set_steps(44)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(again, BudgetedCosineDecay)
    assert again.get_config() == {
        "initial_learning_rate": 2e-3,
        "decay_steps": 44,
        "anchor_step": 0,
        "anchor_progress": 0.0,
    }
    schedule.set_steps(60, at=20)
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    for step in (20, 33, 59, 60):
        assert float(again(step)) == float(schedule(step))
    # The config of a model saved before re-plans kept their anchor: Keras' cosine.
    old = BudgetedCosineDecay.from_config({"initial_learning_rate": 2e-3, "decay_steps": 44})
    reference = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=44)
    assert [float(old(step)) for step in (0, 11, 43, 44)] == [
        float(reference(step)) for step in (0, 11, 43, 44)
    ]


@pytest.mark.fast
def test_a_replan_moves_the_end_without_a_jump_in_the_learning_rate() -> None:
    """Re-planned at step 40 of 100, to end at 160 or at 60: the rate at step 40 stays what it
    was, falls from there on (more slowly for the longer plan) and reaches zero at the new end."""
    for new_end in (160, 60):
        schedule = BudgetedCosineDecay(1e-3, decay_steps=100)
        before = float(schedule(40))
        schedule.set_steps(new_end, at=40)
        rates = [float(schedule(step)) for step in range(40, new_end + 1)]
        assert rates[0] == pytest.approx(before, rel=1e-6)
        assert all(later <= earlier for earlier, later in pairwise(rates))
        assert rates[-1] == 0.0 and rates[-2] > 0.0
    # Halfway between the re-plan and the new end, the decay is halfway through what was left.
    schedule = BudgetedCosineDecay(1e-3, decay_steps=100)
    left = 1.0 - float(schedule.progress(40))
    schedule.set_steps(160, at=40)
    assert float(schedule.progress(100)) == pytest.approx(1.0 - left / 2, rel=1e-6)
    # A plan that ends where training already is: the rate is zero from there on.
    schedule.set_steps(40, at=40)
    assert float(schedule(40)) == 0.0 and float(schedule(41)) == 0.0


@pytest.mark.fast
def test_max_minutes_is_validated() -> None:
    assert TrainConfig(max_minutes=55).max_minutes == 55
    assert TrainConfig.from_strings({"max_minutes": "none"}).max_minutes is None
    with pytest.raises(ConfigError, match="max_minutes"):
        TrainConfig(max_minutes=0)


class FakeTime(keras.callbacks.Callback):
    """A clock that training moves: each step costs ``step`` s, an epoch's first step
    ``refill`` s more (the input pipeline restarting), each validation ``validation`` s."""

    def __init__(self, step: float, validation: float, refill: float = 0.0) -> None:
        super().__init__()
        self.now, self.step, self.validation, self.refill = 0.0, step, validation, refill

    def __call__(self) -> float:
        return self.now

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.now += self.step + (self.refill if batch == 0 else 0.0)

    def on_test_begin(self, logs: dict | None = None) -> None:
        self.now += self.validation


def tiny_data(n: int, batch: int) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def budgeted_fit(
    clock: FakeTime,
    seconds: float,
    n: int,
    epochs: int = 100,
    extra: tuple[keras.callbacks.Callback, ...] = (),
) -> tuple[keras.Model, TimeBudget, BudgetedCosineDecay, dict]:
    """A tiny real Keras fit (batches of 16) under ``TimeBudget`` on the fake clock; ``extra``
    callbacks run after the budget's."""
    steps_per_epoch = n // 16
    schedule = BudgetedCosineDecay(1e-2, decay_steps=steps_per_epoch * epochs)
    budget = TimeBudget(
        seconds,
        steps_per_epoch,
        max_steps=steps_per_epoch * epochs,
        eval_batches=2,
        schedule=schedule,
        clock=clock,
    )
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="binary_crossentropy")
    history = model.fit(
        tiny_data(n, 16),
        validation_data=tiny_data(32, 16),
        epochs=epochs,
        callbacks=[clock, budget, *extra],
        verbose=0,
        shuffle=False,
    )
    return model, budget, schedule, history.history


def test_a_budget_ends_training_with_the_schedule_at_zero() -> None:
    """Steps of 1 s, validation 5 s, 2 s to refill the pipeline, 20-step epochs, 70 s.

    Step 11 plans 53 more steps (57 s left, validation guessed at 1 s); epoch 1's measured 5 s
    of validation cut the plan to 50 steps, and epoch 2's 7 s (validation and refill), which
    replace epoch 1's as the time around an epoch's steps, cut it to 46, which the third epoch
    ends at 67 s, inside the 70 s.
    """
    clock = FakeTime(step=1.0, validation=5.0, refill=2.0)
    model, budget, schedule, history = budgeted_fit(clock, 70.0, n=320)
    assert budget.spent and budget.planned_steps == 46
    assert int(model.optimizer.iterations.numpy()) == 46
    assert len(history["loss"]) == 3
    assert clock.now == 67.0
    assert float(schedule(model.optimizer.iterations)) == 0.0
    assert history["planned_epochs"] == pytest.approx([50 / 20, 46 / 20, 46 / 20])


class TracingTime(FakeTime):
    """:class:`FakeTime` whose first validation takes ``tracing`` s more, as tracing the
    validation functions does."""

    def __init__(self, step: float, validation: float, tracing: float) -> None:
        super().__init__(step, validation)
        self.tracing = tracing

    def on_test_begin(self, logs: dict | None = None) -> None:
        super().on_test_begin(logs)
        self.now, self.tracing = self.now + self.tracing, 0.0


def test_the_first_validation_s_tracing_counts_only_until_a_later_epoch_is_measured() -> None:
    """Steps of 1 s, validation 5 s (25 s the first time), 20-step epochs, 200 s.

    After epoch 1 (45 s spent) the plan is 57 more steps at 1 + 25/20 s. After epoch 2 (70 s)
    the tracing is dropped: 125 s for steps at 1 + 5/20 s make 100 more, 140 in all (the mean of
    25 and 5 s would give 105), which seven epochs run in 195 s.
    """
    clock = TracingTime(step=1.0, validation=5.0, tracing=20.0)
    _, budget, _, history = budgeted_fit(clock, 200.0, n=320)
    assert history["planned_epochs"] == pytest.approx([77 / 20] + [140 / 20] * 6)
    assert budget.spent and budget.planned_steps == 140
    assert clock.now == 195.0


class JitteryTime(FakeTime):
    """:class:`FakeTime` whose steps take ``slow`` s in the 2nd and 5th epochs, ``step`` s else."""

    def __init__(self, step: float, slow: float, validation: float) -> None:
        super().__init__(step, validation)
        self.fast, self.slow = step, slow

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.step = self.slow if epoch in (1, 4) else self.fast


class LearningRates(keras.callbacks.Callback):
    """The learning rate each optimizer step used."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def test_on_a_noisy_machine_the_plan_moves_but_the_learning_rate_only_falls() -> None:
    """Epochs of 20 steps at 1 s, the 2nd and 5th at 2.5 s: the slow epochs shorten the plan and
    the fast ones between them lengthen it again (a cosine simply resized would then raise the
    rate), yet every step's rate is at most the one before, and the last is zero."""
    clock, rates = JitteryTime(step=1.0, slow=2.5, validation=2.0), LearningRates()
    model, budget, schedule, history = budgeted_fit(clock, 200.0, n=320, extra=(rates,))
    plans = history["planned_epochs"]
    assert any(later > earlier for earlier, later in pairwise(plans))  # lengthened
    assert all(later <= earlier for earlier, later in pairwise(rates.rates))
    assert rates.rates[0] > 0.0
    assert float(schedule(model.optimizer.iterations)) == 0.0
    assert budget.spent and clock.now <= 200.0


def test_epochs_shorter_than_the_warm_up_are_budgeted_too() -> None:
    clock = FakeTime(step=1.0, validation=1.0)
    model, budget, schedule, history = budgeted_fit(clock, 30.0, n=64)  # 4-step epochs
    assert budget.spent
    assert len(history["loss"]) < 100
    assert int(model.optimizer.iterations.numpy()) == budget.planned_steps
    assert clock.now <= 30.0
    assert float(schedule(model.optimizer.iterations)) == 0.0


def test_the_epoch_cap_holds_when_the_budget_is_generous() -> None:
    clock = FakeTime(step=1.0, validation=0.0)
    _, budget, schedule, history = budgeted_fit(clock, 10_000.0, n=320, epochs=2)
    assert not budget.spent
    assert len(history["loss"]) == 2
    assert schedule.get_config()["decay_steps"] == 40


def test_a_budgeted_model_saves_and_loads_with_its_schedule(tmp_path: Path) -> None:
    clock = FakeTime(step=1.0, validation=5.0)
    model, budget, _, _ = budgeted_fit(clock, 60.0, n=320)
    model.save(tmp_path / "detector.keras")
    loaded = keras.models.load_model(tmp_path / "detector.keras")
    schedule = loaded.optimizer._learning_rate  # Keras keeps the schedule object here
    assert isinstance(schedule, BudgetedCosineDecay)
    assert schedule.get_config()["decay_steps"] == budget.planned_steps


def test_fit_with_max_minutes_stops_the_real_detector() -> None:
    """Through the project's fit, on the real clock: a budget far shorter than warm-up stops
    MobileNetV2 at its first plan, after the warm-up steps, and says the budget ended it."""
    cfg = TrainConfig(
        weights="none",
        image_size=32,
        stem_stride=1,
        alpha=0.35,
        epochs=3,
        batch_size=8,
        lr_schedule="cosine",
        max_minutes=1e-4,
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (160, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(160) % 2
    model = build_model(cfg)
    train = make_dataset(images, labels, cfg.batch_size, shuffle=True, seed=0)
    val = make_dataset(images[:16], labels[:16], cfg.batch_size)
    result = fit(model, train, val, cfg, verbose=0)
    assert result.stopped_by_budget
    assert result.epochs_run == 1
    assert int(model.optimizer.iterations.numpy()) == 1 + WARMUP_STEPS
    assert result.history["learning_rate"][-1] == 0.0
