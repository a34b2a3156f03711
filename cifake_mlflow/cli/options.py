"""Command-line options generated from the configs, so the CLI and the configs cannot drift.

Every field of a config becomes ``--field-name`` (and ``--field_name``, the spelling
``mlflow run`` uses for parameters an entry point does not declare). Values are parsed as text
by the config itself (``--unfrozen-layers auto``, ``--augment false``), exactly as MLflow
passes them, and a bad one is a usage error (exit 2) that names the option and what it takes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from cifake_mlflow.config import ConfigError, field_type
from cifake_mlflow.training.config import TrainConfig
from cifake_mlflow.tuning.config import TuneConfig


def _metavar(name: str, cls: type) -> str:
    base, choices = field_type(name, cls)
    if name in ("unfrozen_layers", "max_train_images", "max_test_images", "max_images"):
        return "INT|all" + ("|auto" if name == "unfrozen_layers" else "")
    if choices:
        return "[" + "|".join(choices) + "]"
    return {int: "INT", float: "FLOAT", bool: "BOOL"}.get(base, "TEXT")


def options_for(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add one ``--field-name`` option per field of config ``cls`` (``--field_name`` works too:
    see :func:`normalize_token`)."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        defaults = _defaults(cls)
        for f in reversed(dataclasses.fields(cls)):
            names = [f"--{f.name.replace('_', '-')}"]
            func = click.option(
                *names,
                f.name,
                default=None,
                metavar=_metavar(f.name, cls),
                help=f"{f.metadata['help']}  [default: {defaults[f.name]}]",
            )(func)
        return func

    return decorate


def normalize_token(token: str) -> str:
    """Option names as ``mlflow run`` passes undeclared parameters (``--stem_stride 1``) are
    read as the CLI's own (``--stem-stride``), for every command."""
    return token.replace("_", "-")


@functools.cache
def _defaults(cls: type) -> dict[str, str]:
    """A config's defaults as the CLI shows them (built once: every option asks)."""
    return cls().to_params()


config_options = options_for(TrainConfig)


class BadOption(click.ClickException):
    """A bad option value: one line naming the option and what it takes, exit status 2."""

    exit_code = 2


def build_config(values: dict[str, str | None], cls: type = TrainConfig) -> Any:
    """A config from option text; a bad value becomes a one-line usage error naming it."""
    try:
        return cls.from_strings(values)
    except ConfigError as exc:
        option = "--" + exc.field.replace("_", "-")
        raise BadOption(f"invalid {option} {exc.value!r}: {exc.allowed}") from None


def split_options(options: dict[str, str | None]) -> tuple[TrainConfig, TuneConfig]:
    """Training and tuning configs from one command's options."""
    tune_names = {f.name for f in dataclasses.fields(TuneConfig)}
    train = {k: v for k, v in options.items() if k not in tune_names}
    tune = {k: v for k, v in options.items() if k in tune_names}
    return build_config(train), build_config(tune, TuneConfig)


def open_output(output: str) -> Any:
    """``-`` is stdout (left open); anything else a file opened for CSV-safe writing."""
    if output == "-":
        return contextlib.nullcontext(sys.stdout)
    return open(output, "w", newline="", encoding="utf-8")
