"""A study's search space: which TrainConfig fields vary, over which ranges (a YAML file).

The settings a study does not search are fixed for all its trials; a resumed study refuses a
changed space or changed fixed settings, so its trials stay comparable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml

from cifake_mlflow.training.config import TrainConfig


class TuningError(RuntimeError):
    """The study cannot run as asked; the message names the problem and the fix."""


# -- search space ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamRange:
    """One searched TrainConfig field: a float/int range (optionally log) or categorical."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high), log=self.log)


def load_search_space(path: str | Path) -> list[ParamRange]:
    """Read and check the YAML search space; every key must be a TrainConfig field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TuningError(f"cannot read search space {path}: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise TuningError(f"search space {path} declares no parameters")
    fields = set(TrainConfig().to_params())
    return [_param(path, name, spec, fields) for name, spec in raw.items()]


def _param(path: Path, name: str, spec: Any, fields: set[str]) -> ParamRange:
    where = f"search space {path}, parameter {name!r}"
    if name not in fields:
        raise TuningError(f"{where}: not a training option; known: {', '.join(sorted(fields))}")
    if not isinstance(spec, dict):
        raise TuningError(f"{where}: expected a mapping such as {{low: 0.1, high: 0.5}}")
    if "choices" in spec:
        choices = tuple(spec["choices"] or ())
        if not choices:
            raise TuningError(f"{where}: empty choices")
        return ParamRange(name, "categorical", choices=choices)
    low, high = spec.get("low"), spec.get("high")
    if not isinstance(low, int | float) or not isinstance(high, int | float):
        raise TuningError(f"{where}: needs numeric low and high (or choices)")
    if low >= high:
        raise TuningError(f"{where}: empty or inverted range low={low} high={high}")
    log = bool(spec.get("log", False))
    if log and low <= 0:
        raise TuningError(f"{where}: a log range needs low > 0, got {low}")
    kind = "int" if isinstance(low, int) and isinstance(high, int) else "float"
    return ParamRange(name, kind, low, high, log)


def space_signature(space: list[ParamRange]) -> str:
    """Canonical JSON of the space, stored on the study to refuse a changed space on resume."""
    return json.dumps([vars(p) | {"choices": list(p.choices)} for p in space], sort_keys=True)


#: Settings that may differ between invocations of one study without making trials incomparable.
FREE_SETTINGS = ("run_name", "cache_dir", "experiment", "log_model")


def fixed_settings(base: TrainConfig, space: list[ParamRange]) -> dict[str, str]:
    """The training settings every trial of a study shares (all but the searched ones)."""
    searched = {p.name for p in space}
    return {
        k: v for k, v in base.to_params().items() if k not in searched and k not in FREE_SETTINGS
    }


def check_space(base: TrainConfig, space: list[ParamRange]) -> None:
    """Refuse searching trainable depth where frozen layers would be random features."""
    if any(p.name == "unfrozen_layers" for p in space) and not base.pretrained:
        raise TuningError(
            "the search space varies unfrozen_layers, but weights=none without --init-from "
            "trains from scratch, where frozen layers are random features. Give --init-from "
            "(a trained detector) or pretrained --weights, or use a space without it such as "
            "tuning/search_space_scratch.yaml"
        )
