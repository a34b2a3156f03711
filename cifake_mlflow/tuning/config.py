"""How an Optuna study runs; the trials' own training settings are a TrainConfig."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from cifake_mlflow.config import ConfigError, TextConfig, check_types, described, positive
from cifake_mlflow.data.perturbations import split_robust_metric

STORAGE_SCHEMES = ("sqlite", "postgresql", "mysql")
#: What a study can optimise; the robust ones exist only for runs with ``val_robustness``.
TUNE_METRICS = (
    "val_loss",
    "val_accuracy",
    "val_roc_auc",
    "val_robust_accuracy",
    "val_robust_roc_auc",
)


@dataclass(frozen=True)
class TuneConfig(TextConfig):
    """How an Optuna study runs; the trials' training settings come from :class:`TrainConfig`."""

    study_name: str = field(
        default="cifake", **described("Optuna study name (resumed if it exists)")
    )
    storage: str = field(
        default="sqlite:///optuna.db",
        **described("Optuna storage URL: sqlite:///FILE, or postgresql://USER@HOST/DB for workers"),
    )
    n_trials: int = field(
        default=10, **described("finished (complete or pruned) trials the study should end with")
    )
    search_space: str = field(
        default="tuning/search_space.yaml", **described("YAML file declaring the parameter ranges")
    )
    metric: str = field(
        default="val_roc_auc",
        **described(
            "validation metric of the best epoch to optimise (val_loss is minimised); "
            "val_robust_accuracy/val_robust_roc_auc need --val-robustness"
        ),
    )
    pruner: Literal["median", "halving", "none"] = field(
        default="median", **described("stop unpromising trials after each epoch")
    )
    sampler_seed: int = field(default=42, **described("seed of the TPE sampler"))
    heartbeat_interval: int = field(
        default=60,
        **described("seconds between trial heartbeats; a trial silent for twice this is failed"),
    )
    register: bool = field(default=True, **described("register the best trial's model afterwards"))
    model_name: str = field(default="cifake-detector", **described("registered model name"))
    gate_metric: str = field(
        default="roc_auc",
        **described(
            "what the champion gate compares: roc_auc, accuracy, or robust_<transformation>_"
            "<roc_auc|accuracy>, e.g. robust_blur1_accuracy"
        ),
    )
    margin: float = field(
        default=0.0, **described("champion gate: a new version must beat the champion by this much")
    )

    def __post_init__(self) -> None:
        check_types(self)
        positive(self, "n_trials", "heartbeat_interval")
        if self.metric not in TUNE_METRICS:
            raise ConfigError("metric", self.metric, f"one of {', '.join(TUNE_METRICS)}")
        scheme = self.storage.split(":", 1)[0].split("+", 1)[0]
        if "://" not in self.storage or scheme not in STORAGE_SCHEMES:
            raise ConfigError(
                "storage",
                self.storage,
                "an Optuna storage URL such as sqlite:///optuna.db or "
                "postgresql://postgres@127.0.0.1:5432/optuna",
            )
        for name in ("study_name", "model_name"):
            if not getattr(self, name).strip():
                raise ConfigError(name, getattr(self, name), "a non-empty name")
        _check_gate_metric(self.gate_metric)
        if self.margin < 0:
            raise ConfigError("margin", self.margin, "a number >= 0")

    @property
    def direction(self) -> str:
        return "minimize" if self.metric == "val_loss" else "maximize"


def _check_gate_metric(metric: str) -> None:
    allowed = "roc_auc, accuracy, or robust_<transformation>_<roc_auc|accuracy>, e.g. "
    try:
        if metric in ("roc_auc", "accuracy") or split_robust_metric(metric):
            return
    except ValueError as exc:
        raise ConfigError("gate_metric", metric, str(exc)) from None
    raise ConfigError("gate_metric", metric, allowed + "robust_blur1_accuracy")
