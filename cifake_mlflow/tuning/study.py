"""Optuna studies over the detector: one nested MLflow run per trial, resumable, shareable.

Each trial is an ordinary tracked training run (:func:`cifake_mlflow.training.run.train_and_log`)
nested under one parent run per study invocation. Trials optimise a validation metric of the
epoch early stopping kept; the test split is only reported. The study lives in Optuna storage
with heartbeats, so a trial whose process died is failed (and its MLflow run closed) when the
study is next opened, and several workers can share one PostgreSQL-backed study.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any

import keras
import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from cifake_mlflow import registry, tracking
from cifake_mlflow.config import ConfigError
from cifake_mlflow.data.dataset import Dataset, Splits
from cifake_mlflow.training.config import TrainConfig
from cifake_mlflow.training.run import (
    interrupted,
    prepare_data,
    signals_as_interrupt,
    train_and_log,
)
from cifake_mlflow.tuning.config import TuneConfig
from cifake_mlflow.tuning.space import (
    ParamRange,
    TuningError,
    check_space,
    fixed_settings,
    load_search_space,
    space_signature,
)

RUN_ID_ATTR = "mlflow_run_id"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


# -- storage and study -----------------------------------------------------------------------
def open_storage(cfg: TuneConfig) -> optuna.storages.RDBStorage:
    """RDB storage with heartbeats; stale trials get their MLflow run closed as FAILED."""
    try:
        return optuna.storages.RDBStorage(
            cfg.storage,
            engine_kwargs={"pool_pre_ping": True},
            heartbeat_interval=cfg.heartbeat_interval,
            grace_period=2 * cfg.heartbeat_interval,
            heartbeat_stale_trial_callback=close_stale_run,
        )
    except Exception as exc:  # sqlalchemy raises many kinds: bad driver, refused, auth
        raise TuningError(
            f"cannot open Optuna storage {cfg.storage}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0]}. Check the URL, that the database server runs and "
            "that the database exists (createdb NAME for PostgreSQL)."
        ) from None


def close_stale_run(study: optuna.Study, trial: FrozenTrial) -> None:
    """Optuna failed ``trial`` (its process died): end its MLflow run and parent as FAILED."""
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    if not run_id:
        return
    client = MlflowClient()
    run = client.get_run(run_id)
    client.set_tag(run_id, "optuna.state", "FAIL")
    for rid in (run_id, run.data.tags.get("mlflow.parentRunId")):
        if rid and client.get_run(rid).info.status == "RUNNING":
            client.set_terminated(rid, status="FAILED")


def make_pruner(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if cfg.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def check_metric(base: TrainConfig, tune: TuneConfig) -> None:
    """Refuse a robust metric that the trials would never log."""
    if tune.metric.startswith("val_robust_") and base.val_robustness == "none":
        raise TuningError(
            f"--metric {tune.metric} is measured only with --val-robustness (the changes to "
            "score validation under, e.g. --val-robustness jpeg50,blur1,noise0.02)"
        )


def check_registrable(base: TrainConfig, tune: TuneConfig) -> None:
    """Refuse a study that must register its best trial but would log no trial's model."""
    if tune.register and not base.log_model:
        raise TuningError(
            "log_model=False leaves the trials without a model, so the best one cannot be "
            "registered: add --register false (metrics only), or keep --log-model true"
        )


def _check_stored(study: optuna.Study, key: str, value: str, what: str) -> None:
    stored = study.user_attrs.get(key)
    if stored is None:
        study.set_user_attr(key, value)
    elif stored != value:
        raise TuningError(
            f"study {study.study_name!r} exists with a different {what}: resume it with the "
            "same settings, or pick another --study-name" + _difference(stored, value)
        )


def _difference(stored: str, value: str) -> str:
    try:
        old, new = json.loads(stored), json.loads(value)
    except ValueError:
        return ""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return ""
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return " (" + ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in keys) + ")"


def open_study(
    cfg: TuneConfig,
    space: list[ParamRange],
    pruner: optuna.pruners.BasePruner | None = None,
    base: TrainConfig | None = None,
) -> optuna.Study:
    """Create or resume the study; refuse one that exists with another direction, space or
    fixed training settings (trials would not be comparable)."""
    storage = open_storage(cfg)
    study = optuna.create_study(
        study_name=cfg.study_name,
        storage=storage,
        direction=cfg.direction,
        sampler=optuna.samplers.TPESampler(seed=cfg.sampler_seed),
        pruner=pruner or make_pruner(cfg),
        load_if_exists=True,
    )
    wanted = (
        optuna.study.StudyDirection.MINIMIZE
        if cfg.direction == "minimize"
        else (optuna.study.StudyDirection.MAXIMIZE)
    )
    if study.direction != wanted:
        raise TuningError(
            f"study {cfg.study_name!r} exists with direction {study.direction.name.lower()}, "
            f"but metric {cfg.metric} needs {cfg.direction}: pick another --study-name"
        )
    _check_stored(study, "search_space", space_signature(space), "search space")
    if base is not None:
        settings = json.dumps(fixed_settings(base, space), sort_keys=True)
        _check_stored(study, "fixed_settings", settings, "set of fixed training settings")
    optuna.storages.fail_stale_trials(study)  # trials whose process died: FAIL, runs closed
    return study


def remaining(study: optuna.Study, n_trials: int) -> int:
    """Trials still to start: target minus finished and running ones (all workers)."""
    busy = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    return n_trials - len(busy)


# -- objective -------------------------------------------------------------------------------
class PruneOnMetric(keras.callbacks.Callback):
    """Reports the validation metric to the trial after each epoch; raises TrialPruned.

    A metric measured only after training (``val_robust_*``) is never reported: no pruning.
    """

    def __init__(self, trial: optuna.Trial, metric: str) -> None:
        super().__init__()
        self.trial = trial
        self.metric = metric

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.metric)
        if value is None:
            return
        self.trial.report(float(value), step=epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at epoch {epoch + 1}: {self.metric}={value:.4f}")


@dataclass
class Objective:
    """One trial = one nested, fully tracked training run with the sampled settings."""

    base: TrainConfig
    tune: TuneConfig
    space: list[ParamRange]
    data: tuple[Dataset, Splits]
    verbose: int | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        sampled = {p.name: p.suggest(trial) for p in self.space}
        try:
            cfg = self.base.replace(**sampled, run_name=f"{self.tune.study_name}-t{trial.number}")
        except ConfigError as exc:
            raise TuningError(f"trial {trial.number}: sampled an invalid value: {exc}") from None
        state = {"run_id": ""}

        def started(run_id: str) -> None:
            state["run_id"] = run_id
            trial.set_user_attr(RUN_ID_ATTR, run_id)

        tags = {
            "task": "tune",
            "optuna.study": self.tune.study_name,
            "optuna.trial": str(trial.number),
        }
        try:
            summary = train_and_log(
                cfg,
                data=self.data,
                callbacks=[PruneOnMetric(trial, self.tune.metric)],
                nested=True,
                tags=tags,
                verbose=self.verbose,
                killed_on=(optuna.TrialPruned,),
                on_run_start=started,
            )
        except optuna.TrialPruned:
            _tag_state(state["run_id"], "PRUNED")
            raise
        except BaseException:
            _tag_state(state["run_id"], "FAIL")
            raise
        _tag_state(summary.run_id, "COMPLETE")
        trial.set_user_attr("test_accuracy", float(summary.test.table["accuracy"]))
        trial.set_user_attr("model_uri", summary.model_uri)
        return summary.val_metrics[f"best_{self.tune.metric}"]


def _tag_state(run_id: str, state: str) -> None:
    if run_id:
        MlflowClient().set_tag(run_id, "optuna.state", state)


# -- study runner ----------------------------------------------------------------------------
@dataclass
class StudyResult:
    study: optuna.Study
    parent_run_id: str
    best_trial: FrozenTrial | None
    decision: registry.GateDecision | None


def run_study(
    base: TrainConfig,
    tune: TuneConfig,
    *,
    pruner: optuna.pruners.BasePruner | None = None,
    verbose: int | None = None,
) -> StudyResult:
    """Run (or resume) the study until it holds ``n_trials`` finished trials; register."""
    space = load_search_space(tune.search_space)
    check_space(base, space)
    check_metric(base, tune)
    check_registrable(base, tune)
    tracking.use_experiment(base.experiment)  # stale-trial cleanup below writes to MLflow
    study = open_study(tune, space, pruner, base)
    data = prepare_data(base)
    objective = Objective(base, tune, space, data, verbose)
    parent = tracking.start_run(run_name=f"study-{tune.study_name}")
    try:
        with signals_as_interrupt():
            tracking.set_tags(
                {
                    "task": "study",
                    "optuna.study": tune.study_name,
                    "optuna.storage": _redact(tune.storage),
                }
            )
            while remaining(study, tune.n_trials) > 0:
                study.optimize(objective, n_trials=1, gc_after_trial=True)
                keras.backend.clear_session()
            best = _best_trial(study)
            _log_study(study, tune, best)
            decision = _register_best(base, tune, best, data) if tune.register and best else None
    except BaseException as exc:
        tracking.end_run(status="KILLED" if interrupted(exc) else "FAILED")
        raise
    tracking.end_run()
    return StudyResult(study, parent.info.run_id, best, decision)


def _redact(url: str) -> str:
    """Hide a password in a storage URL before it is logged."""
    head, sep, tail = url.partition("://")
    if "@" in tail and ":" in tail.split("@", 1)[0]:
        user = tail.split("@", 1)[0].split(":", 1)[0]
        return f"{head}{sep}{user}:***@{tail.split('@', 1)[1]}"
    return url


def _best_trial(study: optuna.Study) -> FrozenTrial | None:
    try:
        return study.best_trial
    except ValueError:  # no completed trial
        return None


def _log_study(study: optuna.Study, tune: TuneConfig, best: FrozenTrial | None) -> None:
    """Best params and value, trial counts and Optuna's plots on the parent run."""
    counts = {s.name.lower(): len(study.get_trials(states=(s,))) for s in TrialState}
    tracking.log_metrics({f"trials_{k}": v for k, v in counts.items()})
    settings = {
        "n_trials": tune.n_trials,
        "metric": tune.metric,
        "direction": tune.direction,
        "pruner": tune.pruner,
        "sampler_seed": tune.sampler_seed,
    }
    tracking.log_params_once({k: str(v) for k, v in settings.items()})  # mlflow run logs some
    if best is None:
        return
    tracking.log_params({f"best_{k}": v for k, v in best.params.items()})
    tracking.log_metrics({f"best_{tune.metric}": best.value, "best_trial": best.number})
    tracking.set_tags({"best_run_id": best.user_attrs.get(RUN_ID_ATTR, "")})
    for name, plot in _plots(varied_params(study)).items():
        try:
            axes = plot(study)
        except (ValueError, RuntimeError) as exc:  # e.g. importances need 2+ complete trials
            tracking.log_text(f"not drawn: {exc}\n", f"optuna/{name}.txt")
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        tracking.log_figure(figure, f"optuna/{name}.png")


def varied_params(study: optuna.Study) -> list[str]:
    """Parameters that took more than one value over the finished trials (a constant one would
    draw a zero-width axis, which matplotlib warns about)."""
    values: dict[str, set] = {}
    for trial in study.get_trials(states=FINISHED):
        for key, value in trial.params.items():
            values.setdefault(key, set()).add(value)
    return sorted(key for key, seen in values.items() if len(seen) > 1)


def _plots(params: list[str]) -> dict[str, Any]:
    from optuna.visualization import matplotlib as vis

    plots: dict[str, Any] = {
        "optimization_history": vis.plot_optimization_history,
        "param_importances": vis.plot_param_importances,
    }
    if params:
        plots["parallel_coordinate"] = partial(vis.plot_parallel_coordinate, params=params)
        plots["slice"] = partial(vis.plot_slice, params=params)
    return plots


def _register_best(
    base: TrainConfig, tune: TuneConfig, best: FrozenTrial, data: tuple[Dataset, Splits]
) -> registry.GateDecision:
    """Register the best trial's model; gate it against the champion on the validation split."""
    run_id = best.user_attrs[RUN_ID_ATTR]
    decision = registry.register_run(
        run_id,
        tune.model_name,
        margin=tune.margin,
        metric=tune.gate_metric,
        data=data,
        tags={
            "optuna.study": tune.study_name,
            "optuna.trial": str(best.number),
            f"best_{tune.metric}": f"{best.value:.6f}",
            "params": json.dumps(best.params, sort_keys=True, default=str),
        },
        origin=f"Best trial {best.number} of Optuna study {tune.study_name!r} "
        f"({tune.metric}={best.value:.4f}), run `{run_id}`.",
    )
    tracking.set_tags(
        {
            "registered_model": tune.model_name,
            "registered_version": decision.version,
            "gate": decision.alias,
        }
    )
    print(
        f"registered {tune.model_name} v{decision.version} as {decision.alias}: {decision.reason}",
        flush=True,
    )
    return decision
