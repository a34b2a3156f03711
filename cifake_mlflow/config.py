"""One typed training configuration whose defaults are the reference design.

Every entry point (the ``cifake`` CLI, ``mlflow run -P``, the tuning code) builds a
:class:`TrainConfig` and nothing else, so a value is parsed and validated in exactly one place.
Validation runs in ``__post_init__``: a bad value stops before any data is read or any model is
built, with a message that names the field, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cifake_mlflow.preprocess import NATIVE_SIZE
from cifake_mlflow.robustness import DEFAULT_SUITE, parse_names

#: Layers in ``keras.applications.MobileNetV2(include_top=False)``; checked by a test against
#: the real model so that the limit on ``unfrozen_layers`` can be enforced without building it.
MOBILENETV2_DEPTH = 154
#: MobileNetV2 refuses inputs smaller than this.
MIN_IMAGE_SIZE = 32
#: Smallest subset for which a stratified train/validation split is always possible.
MIN_SUBSET = 10
WEIGHT_KEYWORDS = ("imagenet", "none")
#: Strides MobileNetV2's first convolution may take (2 is Keras' standard).
STEM_STRIDES = (1, 2)
#: Width multipliers Keras publishes ImageNet weights for.
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
AUTO = "auto"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names field, value and what is allowed."""

    def __init__(self, name: str, value: object, allowed: str) -> None:
        self.field = name
        self.value = value
        super().__init__(f"invalid {name}={value!r}: {allowed}")


def _help(text: str) -> dict[str, Any]:
    return {"metadata": {"help": text}}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults reproduce the reference design."""

    data: str = field(
        default="data",
        **_help("CIFAKE folder, .zip/.tar.gz archive, or folder of per-split archives"),
    )
    epochs: int = field(default=20, **_help("maximum epochs (early stopping usually ends sooner)"))
    image_size: int = field(default=160, **_help("model input side in pixels (>= 32)"))
    stem_stride: int = field(
        default=2,
        **_help(
            "stride of MobileNetV2's first convolution: 2 (Keras' standard) or 1, which keeps "
            "a 32x32 input's pixels through the stem at about the cost of a 64 px input, "
            "without interpolating them; weights load unchanged"
        ),
    )
    alpha: float = field(
        default=1.0,
        **_help(
            "MobileNetV2 width multiplier (Keras' alpha); ImageNet weights exist for "
            "0.35, 0.5, 0.75, 1.0, 1.3 and 1.4"
        ),
    )
    batch_size: int = field(default=64, **_help("images per training step"))
    learning_rate: float = field(default=1e-3, **_help("Adam learning rate"))
    weight_decay: float = field(
        default=0.0,
        **_help("decoupled weight decay: above 0 the optimizer is AdamW with this rate"),
    )
    lr_schedule: Literal["constant", "cosine"] = field(
        default="constant", **_help("constant, or cosine decay to zero over `epochs`")
    )
    dropout: float = field(default=0.3, **_help("dropout rate of the head, in [0, 1)"))
    dense_units: int = field(default=128, **_help("units of the head's hidden Dense layer"))
    label_smoothing: float = field(default=0.0, **_help("binary cross-entropy label smoothing"))
    unfrozen_layers: int | None = field(
        default=None,
        **_help(
            "trainable layers at the top of the base: an integer, 'all', or 'auto' "
            "(30 with pretrained weights, all with weights=none)"
        ),
    )
    weights: str = field(
        default="imagenet",
        **_help("base weights: 'imagenet' (Keras download), 'none' (from scratch), or a file"),
    )
    init_from: str | None = field(
        default=None,
        **_help(
            "warm start: a trained detector (.keras file, runs:/..., models:/name@alias) whose "
            "weights seed this model ('none')"
        ),
    )
    bn_momentum: float | None = field(
        default=None,
        **_help(
            "BatchNorm moving-average momentum: a float, or 'auto' (Keras' 0.999 with "
            "pretrained weights, 0.99 from scratch, where 0.999 collapses)"
        ),
    )
    bn_recalibration_batches: int = field(
        default=50,
        **_help(
            "before each validation pass, re-estimate BatchNorm statistics on this many "
            "clean training batches (0: keep the moving averages)"
        ),
    )
    val_fraction: float = field(
        default=0.1, **_help("share of train carved out (stratified) for validation")
    )
    seed: int = field(default=42, **_help("seed of the split, shuffling, augmentation and init"))
    augment: bool = field(default=True, **_help("apply flip/zoom/rotation/shift while training"))
    zoom: float = field(default=0.2, **_help("random zoom factor, in [0, 1)"))
    rotation: float = field(default=15.0, **_help("random rotation in degrees, in [0, 180]"))
    flip: bool = field(default=True, **_help("random horizontal flip"))
    shift: int = field(
        default=0,
        **_help(
            "random shift of up to this many whole pixels of the 32x32 image, each way "
            "(reflected edges), in [0, 16]; unlike zoom and rotation it moves pixels without "
            "resampling them"
        ),
    )
    tta: Literal["none", "flip"] = field(
        default="none",
        **_help(
            "test-time augmentation: 'flip' averages prob_fake over each image and its mirror "
            "image wherever the model predicts (validation, evaluation, serving); doubles "
            "inference cost"
        ),
    )
    patience: int = field(default=3, **_help("early stopping: epochs without val_loss improvement"))
    on_bad_file: Literal["error", "skip"] = field(
        default="error", **_help("stop on unreadable images with a report, or skip them")
    )
    drop_duplicates: bool = field(
        default=True,
        **_help("train on one copy of each exact duplicate and on no copy of a test image"),
    )
    max_train_images: int | None = field(
        default=None, **_help("stratified subset of the train split for quick runs ('all')")
    )
    max_test_images: int | None = field(
        default=None, **_help("stratified subset of the test split for quick runs ('all')")
    )
    threshold: float = field(default=0.5, **_help("prob_fake at or above which FAKE is said"))
    target_fpr: float | None = field(
        default=None,
        **_help(
            "choose the threshold on validation so that at most this share of REAL images is "
            "called FAKE, e.g. 0.01 ('none': keep --threshold)"
        ),
    )
    temperature_scaling: bool = field(
        default=True,
        **_help("fit a temperature on validation so prob_fake is calibrated (ranking unchanged)"),
    )
    robust_augment: str = field(
        default="none",
        **_help(
            "robustness transformations (see `cifake evaluate`) also applied while training, "
            "comma-separated, e.g. 'jpeg50,blur1,noise0.02' ('none': off)"
        ),
    )
    robust_augment_rate: float = field(
        default=0.5, **_help("share of training images given one of --robust-augment's changes")
    )
    val_robustness: str = field(
        default="none",
        **_help(
            "transformations to re-score the validation split under after training, e.g. "
            "'jpeg50,blur1,noise0.02': their mean accuracy and ROC-AUC are the metrics "
            "val_robust_accuracy and val_robust_roc_auc that `cifake tune --metric` can "
            "optimise ('none': off)"
        ),
    )
    mixed_precision: Literal["auto", "on", "off"] = field(
        default="auto",
        **_help("float16 compute, float32 weights ('auto': on when a GPU is present)"),
    )
    jit_compile: Literal["auto", "on", "off"] = field(
        default="auto", **_help("XLA-compile the training step ('auto': on when a GPU is present)")
    )
    distribute: Literal["auto", "none", "mirrored"] = field(
        default="auto",
        **_help("'mirrored': MirroredStrategy over all visible GPUs ('auto': when there are 2+)"),
    )
    cache_dir: str | None = field(
        default=None,
        **_help("decoded-image cache ('auto': $CIFAKE_CACHE_DIR or ~/.cache/cifake-mlflow)"),
    )
    log_model: bool = field(
        default=True,
        **_help(
            "log the detector (SavedModel + pyfunc) to the run; 'False' keeps only params, "
            "metrics and plots, as mlflow.autolog(log_models=False) does, for sweeps that "
            "compare metrics (such a run cannot be registered, served or warm-started from)"
        ),
    )
    experiment: str = field(default="cifake", **_help("MLflow experiment name"))
    run_name: str | None = field(
        default=None, **_help("MLflow run name ('auto': built from the main settings)")
    )

    def __post_init__(self) -> None:
        self.validate()

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        _check_types(self)
        _positive(self, "epochs", "batch_size", "dense_units", "patience")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(
                "image_size", self.image_size, f"MobileNetV2 needs at least {MIN_IMAGE_SIZE}"
            )
        if self.stem_stride not in STEM_STRIDES:
            raise ConfigError("stem_stride", self.stem_stride, "1 or 2")
        _in_range(self, "alpha", 0.0, 2.0, low_open=True)
        if self.weights == "imagenet" and self.alpha not in IMAGENET_ALPHAS:
            raise ConfigError(
                "alpha",
                self.alpha,
                f"with weights=imagenet one of {', '.join(map(str, IMAGENET_ALPHAS))}",
            )
        _in_range(self, "learning_rate", 0.0, 10.0, low_open=True)
        _in_range(self, "weight_decay", 0.0, 1.0)
        _in_range(self, "dropout", 0.0, 1.0, high_open=True)
        _in_range(self, "label_smoothing", 0.0, 1.0, high_open=True)
        _in_range(self, "val_fraction", 0.0, 1.0, low_open=True, high_open=True)
        _in_range(self, "zoom", 0.0, 1.0, high_open=True)
        _in_range(self, "rotation", 0.0, 180.0)
        _in_range(self, "shift", 0, NATIVE_SIZE // 2)
        _in_range(self, "threshold", 0.0, 1.0)
        if self.target_fpr is not None:
            _in_range(self, "target_fpr", 0.0, 1.0, high_open=True)
        _in_range(self, "robust_augment_rate", 0.0, 1.0)
        _check_transforms("robust_augment", self.robust_augment)
        _check_transforms("val_robustness", self.val_robustness)
        if self.bn_momentum is not None:
            _in_range(self, "bn_momentum", 0.0, 1.0, low_open=True, high_open=True)
        if self.unfrozen_layers is not None and not (
            0 <= self.unfrozen_layers <= MOBILENETV2_DEPTH
        ):
            raise ConfigError(
                "unfrozen_layers",
                self.unfrozen_layers,
                f"an integer from 0 to {MOBILENETV2_DEPTH} (the base's depth), 'all' or 'auto'",
            )
        for name in ("max_train_images", "max_test_images"):
            value = getattr(self, name)
            if value is not None and value < MIN_SUBSET:
                raise ConfigError(
                    name, value, f"at least {MIN_SUBSET} (enough for stratified splits), or 'all'"
                )
        if self.bn_recalibration_batches < 0:
            raise ConfigError(
                "bn_recalibration_batches", self.bn_recalibration_batches, "0 or more"
            )
        if self.seed < 0:
            raise ConfigError("seed", self.seed, "a non-negative integer")
        _check_weights(self.weights)
        if not self.experiment.strip():
            raise ConfigError("experiment", self.experiment, "a non-empty name")

    # -- derived values ----------------------------------------------------------------------
    @property
    def pretrained(self) -> bool:
        """True when the base starts from learned weights (ImageNet, a file, a warm start)."""
        return self.weights != "none" or self.init_from is not None

    @property
    def trainable_base_layers(self) -> int:
        """``unfrozen_layers`` with 'auto' resolved (frozen random features learn nothing)."""
        if self.unfrozen_layers is not None:
            return self.unfrozen_layers
        return 30 if self.pretrained else MOBILENETV2_DEPTH

    @property
    def batchnorm_momentum(self) -> float:
        """``bn_momentum`` with 'auto' resolved; see NOTES: 0.999 collapses from scratch."""
        if self.bn_momentum is not None:
            return self.bn_momentum
        return 0.999 if self.pretrained else 0.99

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_params(self) -> dict[str, str]:
        """Flat string params for MLflow: values as given, ``None`` shown as 'auto'/'all'."""
        return {f.name: _show(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_strings(cls, values: dict[str, str | None]) -> TrainConfig:
        """Build from text (CLI, ``mlflow run -P``), parsing each value by its field's type."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                unknown[0], values[unknown[0]], f"unknown field; known: {sorted(known)}"
            )
        parsed = {k: parse_value(k, v) for k, v in values.items() if v is not None}
        return cls(**parsed)


# -- field parsing -----------------------------------------------------------------------------
_NONE_WORDS = {
    "unfrozen_layers": ("auto",),
    "bn_momentum": ("auto",),
    "cache_dir": ("auto",),
    "run_name": ("auto", ""),
    "init_from": ("none", ""),
    "max_train_images": ("all",),
    "max_test_images": ("all",),
    "target_fpr": ("none", ""),
    "max_images": ("all",),
    "train_data": ("auto", ""),
    "threshold": ("model",),
}


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config class (resolving them is slow; they never change)."""
    return typing.get_type_hints(cls)


def field_type(name: str, cls: type | None = None) -> tuple[type, tuple[str, ...] | None]:
    """The field's base type (int, float, bool, str) and its Literal choices, if any."""
    hint = _type_hints(cls or TrainConfig)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is Literal:
        return str, tuple(typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return args[0], None
    return hint, None


def parse_value(name: str, raw: object, cls: type | None = None) -> Any:
    """Parse one textual value for field ``name``; raise :class:`ConfigError` if it does not fit."""
    if not isinstance(raw, str):
        return raw
    text = raw.strip()
    if text.lower() in _NONE_WORDS.get(name, ()):
        return None
    if name == "unfrozen_layers" and text.lower() == "all":
        return MOBILENETV2_DEPTH
    base, choices = field_type(name, cls)
    try:
        if base is bool:
            return _parse_bool(text)
        if base is int:
            return int(text)
        if base is float:
            return float(text)
    except ValueError:
        extra = "".join(f" or {w!r}" for w in _NONE_WORDS.get(name, ()))
        raise ConfigError(name, raw, f"expected {base.__name__}{extra}") from None
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


def _show(name: str, value: object) -> str:
    if value is None:
        words = _NONE_WORDS.get(name, ("auto",))
        return words[0] or "auto"
    return str(value)


# -- checks ------------------------------------------------------------------------------------
def _check_types(cfg: Any) -> None:
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        base, choices = field_type(f.name, type(cfg))
        if value is None and f.name in _NONE_WORDS:
            continue
        ok = isinstance(value, base) and not (base is int and isinstance(value, bool))
        if base is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise ConfigError(f.name, value, f"expected {base.__name__}")
        if base is float and not math.isfinite(value):
            raise ConfigError(f.name, value, "a finite number")
        if choices and value not in choices:
            raise ConfigError(f.name, value, f"one of {', '.join(choices)}")


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) < 1:
            raise ConfigError(name, getattr(cfg, name), "a positive integer")


def _in_range(
    cfg: TrainConfig,
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


def _check_transforms(name: str, names: str) -> None:
    try:
        parse_names(names)
    except ValueError as exc:
        raise ConfigError(name, names, str(exc)) from None


def _check_weights(weights: str) -> None:
    if weights in WEIGHT_KEYWORDS:
        return
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            "weights",
            weights,
            "'imagenet', 'none', or the path of an existing weights file (.h5 / .weights.h5); "
            "no such file",
        )


# -- tuning ------------------------------------------------------------------------------------
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
class TuneConfig:
    """How an Optuna study runs; the trials' training settings come from :class:`TrainConfig`."""

    study_name: str = field(default="cifake", **_help("Optuna study name (resumed if it exists)"))
    storage: str = field(
        default="sqlite:///optuna.db",
        **_help("Optuna storage URL: sqlite:///FILE, or postgresql://USER@HOST/DB for workers"),
    )
    n_trials: int = field(
        default=10, **_help("finished (complete or pruned) trials the study should end with")
    )
    search_space: str = field(
        default="tuning/search_space.yaml", **_help("YAML file declaring the parameter ranges")
    )
    metric: str = field(
        default="val_roc_auc",
        **_help(
            "validation metric of the best epoch to optimise (val_loss is minimised); "
            "val_robust_accuracy/val_robust_roc_auc need --val-robustness"
        ),
    )
    pruner: Literal["median", "halving", "none"] = field(
        default="median", **_help("stop unpromising trials after each epoch")
    )
    sampler_seed: int = field(default=42, **_help("seed of the TPE sampler"))
    heartbeat_interval: int = field(
        default=60,
        **_help("seconds between trial heartbeats; a trial silent for twice this is failed"),
    )
    register: bool = field(default=True, **_help("register the best trial's model afterwards"))
    model_name: str = field(default="cifake-detector", **_help("registered model name"))
    margin: float = field(
        default=0.0, **_help("champion gate: a new version must beat the champion by this much")
    )

    def __post_init__(self) -> None:
        _check_types(self)
        _positive(self, "n_trials", "heartbeat_interval")
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
        if self.margin < 0:
            raise ConfigError("margin", self.margin, "a number >= 0")

    @property
    def direction(self) -> str:
        return "minimize" if self.metric == "val_loss" else "maximize"

    @classmethod
    def from_strings(cls, values: dict[str, str | None]) -> TuneConfig:
        parsed = {k: parse_value(k, v, cls) for k, v in values.items() if v is not None}
        return cls(**parsed)


@dataclass(frozen=True)
class EvalConfig:
    """One ``cifake evaluate`` run: which model, on which images, and which extra reports."""

    model_uri: str = field(
        default="models:/cifake-detector@champion",
        **_help("model to evaluate: runs:/<id>/model, models:/<name>/<version> or @<alias>"),
    )
    data: str = field(
        default="data", **_help("CIFAKE folder, Kaggle .zip or .tar.gz archive(s) to evaluate on")
    )
    split: Literal["test", "train"] = field(
        default="test", **_help("which split of --data to score (never tune on test)")
    )
    train_data: str | None = field(
        default=None,
        **_help(
            "training images the leak-free twin (test_dedup_*) leaves copies of out, when "
            "--data holds no train split, e.g. cifake-train.tar.gz ('auto': --data's own)"
        ),
    )
    max_images: int | None = field(
        default=None, **_help("seeded random subset of the split, for quick checks ('all')")
    )
    robustness: bool = field(
        default=True, **_help("re-score the images after each everyday transformation")
    )
    transforms: str = field(
        default=",".join(DEFAULT_SUITE),
        **_help(
            "robustness transformations, comma-separated (jpegQ, blurS, noiseS, downupF, cropF)"
        ),
    )
    explain_samples: int = field(
        default=16, **_help("Grad-CAM grid: this many correct and this many wrong images (0: off)")
    )
    bootstrap: int = field(
        default=1000, **_help("bootstrap resamples for the 95% intervals (0: off)")
    )
    threshold: float | None = field(
        default=None, **_help("decision threshold ('model': the one stored with the model)")
    )
    seed: int = field(
        default=0, **_help("seed of subsets, noise, bootstrap and the Grad-CAM sample")
    )
    on_bad_file: Literal["error", "skip"] = field(
        default="error", **_help("stop on unreadable images with a report, or skip them")
    )
    cache_dir: str | None = field(
        default=None,
        **_help("decoded-image cache ('auto': $CIFAKE_CACHE_DIR or ~/.cache/cifake-mlflow)"),
    )
    experiment: str = field(default="cifake-evaluation", **_help("MLflow experiment name"))
    run_name: str | None = field(
        default=None, **_help("MLflow run name ('auto': 'eval <model> on <split>')")
    )

    def __post_init__(self) -> None:
        _check_types(self)
        if self.max_images is not None and self.max_images < MIN_SUBSET:
            raise ConfigError("max_images", self.max_images, f"at least {MIN_SUBSET}, or 'all'")
        if self.threshold is not None:
            _in_range(self, "threshold", 0.0, 1.0)
        for name in ("explain_samples", "bootstrap", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(name, getattr(self, name), "0 or more")
        if not self.experiment.strip():
            raise ConfigError("experiment", self.experiment, "a non-empty name")
        try:
            parse_names(self.transforms)
        except ValueError as exc:
            raise ConfigError("transforms", self.transforms, str(exc)) from None

    @classmethod
    def from_strings(cls, values: dict[str, str | None]) -> EvalConfig:
        parsed = {k: parse_value(k, v, cls) for k, v in values.items() if v is not None}
        return cls(**parsed)
