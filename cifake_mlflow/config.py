"""What every config shares: typed fields parsed from text, each validated by its own rule.

Each stage keeps its own config beside its code (:mod:`cifake_mlflow.training.config`,
:mod:`cifake_mlflow.tuning.config`, :mod:`cifake_mlflow.evaluation.config`). They are frozen
dataclasses that validate in ``__post_init__``, so a bad value stops before any data is read,
with a :class:`ConfigError` naming the field, the value and what is allowed. Text from the CLI or
``mlflow run -P`` is parsed by the field's annotation; a field accepts a word for "unset"
(``auto``, ``all``, ``none``, ``model``) only when the config's ``NONE_WORDS`` lists it for that
field, so one field's word never reaches another field.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, ClassVar, Literal

from cifake_mlflow.data.perturbations import parse_names

AUTO = "auto"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names field, value and what is allowed."""

    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.field = name
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid {name}={value!r}: {allowed}")


def described(text: str) -> dict[str, Any]:
    """``field(...)`` keyword arguments carrying the help text the CLI shows."""
    return {"metadata": {"help": text}}


class TextConfig:
    """Mixin of the configs: parse from text, validate types, show as flat MLflow params."""

    #: field -> words that mean "unset" (None) for that field; the first is how None is shown.
    NONE_WORDS: ClassVar[dict[str, tuple[str, ...]]] = {}

    @classmethod
    def from_strings(cls, values: dict[str, str | None]) -> Any:
        """Build from text (CLI, ``mlflow run -P``), parsing each value by its field's type."""
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                unknown[0], values[unknown[0]], f"unknown field; known: {sorted(known)}"
            )
        parsed = {k: parse_value(k, v, cls) for k, v in values.items() if v is not None}
        return cls(**parsed)

    def to_params(self) -> dict[str, str]:
        """Flat string params for MLflow: values as given, ``None`` shown as its word."""
        return {
            f.name: show(type(self), f.name, getattr(self, f.name))
            for f in dataclasses.fields(self)  # type: ignore[arg-type]
        }

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


# -- field parsing -----------------------------------------------------------------------------
@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config class (resolving them is slow; they never change)."""
    return typing.get_type_hints(cls)


def field_type(name: str, cls: type) -> tuple[type, tuple[str, ...] | None]:
    """The field's base type (int, float, bool, str) and its Literal choices, if any."""
    hint = _type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is Literal:
        return str, tuple(typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return args[0], None
    return hint, None


def is_optional(name: str, cls: type) -> bool:
    """Whether the field's annotation admits None."""
    return type(None) in typing.get_args(_type_hints(cls)[name])


def none_words(cls: type, name: str) -> tuple[str, ...]:
    return getattr(cls, "NONE_WORDS", {}).get(name, ())


def parse_value(name: str, raw: object, cls: type) -> Any:
    """Parse one textual value for field ``name``; raise :class:`ConfigError` if it does not fit."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    words = none_words(cls, name)
    if text.lower() in words:
        return None
    special = getattr(cls, "SPECIAL_WORDS", {}).get(name, {})
    if text.lower() in special:
        return special[text.lower()]
    base, choices = field_type(name, cls)
    accepted = "".join(f" or {w!r}" for w in (*words, *special) if w)
    try:
        if base is bool:
            return _parse_bool(text)
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        kind = "true or false" if base is bool else f"a number ({base.__name__})"
        raise ConfigError(name, raw, f"expected {kind}{accepted}") from None
    if choices and text not in choices:
        raise ConfigError(name, raw, f"one of {', '.join(choices)}")
    return text


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def show(cls: type, name: str, value: object) -> str:
    """A field's value as text (the logged param): None as the field's first word."""
    if value is None:
        words = none_words(cls, name)
        return (words[0] if words else "") or AUTO
    return str(value)


# -- checks ------------------------------------------------------------------------------------
def check_types(cfg: Any) -> None:
    """Every field holds its annotated type (None only where the annotation admits it)."""
    cls = type(cfg)
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        base, choices = field_type(f.name, cls)
        if value is None and is_optional(f.name, cls):
            continue
        ok = isinstance(value, base) and not (base is int and isinstance(value, bool))
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            extra = "".join(f" or {w!r}" for w in none_words(cls, f.name) if w)
            raise ConfigError(f.name, value, f"expected {base.__name__}{extra}")
        if base is float and not math.isfinite(value):
            raise ConfigError(f.name, value, "a finite number")
        if choices and value not in choices:
            raise ConfigError(f.name, value, f"one of {', '.join(choices)}")


def positive(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 1:
            raise ConfigError(name, getattr(cfg, name), "a positive integer")


def at_least(cfg: Any, low: int, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < low:
            raise ConfigError(name, getattr(cfg, name), f"an integer >= {low}")


def in_range(
    cfg: Any,
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    value = getattr(cfg, name)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ConfigError(name, value, f"a number in {left}{low:g}, {high:g}{right}")


def check_transforms(name: str, names: str) -> None:
    try:
        parse_names(names)
    except ValueError as exc:
        raise ConfigError(name, names, str(exc)) from None


def non_empty(cfg: Any, *names: str) -> None:
    for name in names:
        if not str(getattr(cfg, name)).strip():
            raise ConfigError(name, getattr(cfg, name), "a non-empty name")
