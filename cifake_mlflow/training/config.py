"""The training configuration: one typed, validated record whose defaults are the reference design.

Every entry point (the ``cifake`` CLI, ``mlflow run -P``, the tuning code) builds a
:class:`TrainConfig` and nothing else, so a value is parsed and validated in exactly one place.
Its field names are persisted: they are the logged params that ``register``, ``compare`` and a
resumed study read back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from cifake_mlflow.config import (
    ConfigError,
    TextConfig,
    check_transforms,
    check_types,
    described,
    in_range,
    positive,
)
from cifake_mlflow.data.decode import NATIVE_SIZE

#: Layers in ``keras.applications.MobileNetV2(include_top=False)``; checked by a test against
#: the real model so that the limit on ``unfrozen_layers`` can be enforced without building it.
MOBILENETV2_DEPTH = 154
#: MobileNetV2 refuses inputs smaller than this.
MIN_IMAGE_SIZE = 32
#: Smallest subset for which a stratified train/validation split is always possible.
MIN_SUBSET = 10
WEIGHT_KEYWORDS = ("imagenet", "none")
#: Strides MobileNetV2's two first downsamplings may take (2 is Keras' standard).
DOWNSAMPLING_STRIDES = (1, 2)
#: Width multipliers Keras publishes ImageNet weights for.
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
AUTO = "auto"


@dataclass(frozen=True)
class TrainConfig(TextConfig):
    """Everything a training run depends on. Defaults reproduce the reference design."""

    NONE_WORDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "unfrozen_layers": ("auto",),
        "bn_momentum": ("auto",),
        "cache_dir": ("auto",),
        "run_name": ("auto", ""),
        "init_from": ("none", ""),
        "max_train_images": ("all",),
        "max_test_images": ("all",),
        "target_fpr": ("none", ""),
        "max_minutes": ("none", ""),
    }
    SPECIAL_WORDS: ClassVar[dict[str, dict[str, Any]]] = {
        "unfrozen_layers": {"all": MOBILENETV2_DEPTH}
    }

    data: str = field(
        default="data",
        **described("CIFAKE folder, .zip/.tar.gz archive, or folder of per-split archives"),
    )
    epochs: int = field(
        default=20, **described("maximum epochs (early stopping usually ends sooner)")
    )
    max_minutes: float | None = field(
        default=None,
        **described(
            "training time budget in minutes ('none': off): the training step is timed on "
            "this machine, the cosine decay is sized to the steps that fit, `epochs` becomes "
            "a cap, and training ends when the budget is spent"
        ),
    )
    image_size: int = field(default=160, **described("model input side in pixels (>= 32)"))
    stem_stride: int = field(
        default=2,
        **described(
            "stride of MobileNetV2's first convolution: 2 (Keras' standard) or 1, which keeps "
            "a 32x32 input's pixels through the stem at about the cost of a 64 px input, "
            "without interpolating them; weights load unchanged"
        ),
    )
    block1_stride: int = field(
        default=2,
        **described(
            "stride of MobileNetV2's block_1, its second downsampling: 2 (Keras' standard) "
            "or 1, which with stem_stride=1 keeps a 32x32 input at full resolution through "
            "blocks 1 and 2 and doubles the side of every later feature map (about 4x their "
            "compute); weights load unchanged"
        ),
    )
    alpha: float = field(
        default=1.0,
        **described(
            "MobileNetV2 width multiplier (Keras' alpha); ImageNet weights exist for "
            "0.35, 0.5, 0.75, 1.0, 1.3 and 1.4"
        ),
    )
    batch_size: int = field(default=64, **described("images per training step"))
    learning_rate: float = field(default=1e-3, **described("Adam learning rate"))
    weight_decay: float = field(
        default=0.0,
        **described("decoupled weight decay: above 0 the optimizer is AdamW with this rate"),
    )
    lr_schedule: Literal["constant", "cosine"] = field(
        default="constant", **described("constant, or cosine decay to zero over `epochs`")
    )
    dropout: float = field(default=0.3, **described("dropout rate of the head, in [0, 1)"))
    dense_units: int = field(default=128, **described("units of the head's hidden Dense layer"))
    label_smoothing: float = field(default=0.0, **described("binary cross-entropy label smoothing"))
    unfrozen_layers: int | None = field(
        default=None,
        **described(
            "trainable layers at the top of the base: an integer, 'all', or 'auto' "
            "(30 with pretrained weights, all with weights=none)"
        ),
    )
    weights: str = field(
        default="imagenet",
        **described("base weights: 'imagenet' (Keras download), 'none' (from scratch), or a file"),
    )
    init_from: str | None = field(
        default=None,
        **described(
            "warm start: a trained detector (.keras file, runs:/..., models:/name@alias) whose "
            "weights seed this model ('none')"
        ),
    )
    bn_momentum: float | None = field(
        default=None,
        **described(
            "BatchNorm moving-average momentum: a float, or 'auto' (Keras' 0.999 with "
            "pretrained weights, 0.99 from scratch, where 0.999 collapses)"
        ),
    )
    bn_recalibration_batches: int = field(
        default=50,
        **described(
            "before each validation pass, re-estimate BatchNorm statistics on this many "
            "clean training batches (0: keep the moving averages)"
        ),
    )
    val_fraction: float = field(
        default=0.1, **described("share of train carved out (stratified) for validation")
    )
    seed: int = field(
        default=42, **described("seed of the split, shuffling, augmentation and init")
    )
    augment: bool = field(
        default=True, **described("apply flip/zoom/rotation/shift while training")
    )
    zoom: float = field(default=0.2, **described("random zoom factor, in [0, 1)"))
    rotation: float = field(default=15.0, **described("random rotation in degrees, in [0, 180]"))
    flip: bool = field(default=True, **described("random horizontal flip"))
    shift: int = field(
        default=0,
        **described(
            "random shift of up to this many whole pixels of the 32x32 image, each way "
            "(reflected edges), in [0, 16]; unlike zoom and rotation it moves pixels without "
            "resampling them"
        ),
    )
    tta: Literal["none", "flip"] = field(
        default="none",
        **described(
            "test-time augmentation: 'flip' averages prob_fake over each image and its mirror "
            "image wherever the model predicts (validation, evaluation, serving); doubles "
            "inference cost"
        ),
    )
    patience: int = field(
        default=3, **described("early stopping: epochs without val_loss improvement")
    )
    on_bad_file: Literal["error", "skip"] = field(
        default="error", **described("stop on unreadable images with a report, or skip them")
    )
    drop_duplicates: bool = field(
        default=True,
        **described("train on one copy of each exact duplicate and on no copy of a test image"),
    )
    max_train_images: int | None = field(
        default=None, **described("stratified subset of the train split for quick runs ('all')")
    )
    max_test_images: int | None = field(
        default=None, **described("stratified subset of the test split for quick runs ('all')")
    )
    threshold: float = field(default=0.5, **described("prob_fake at or above which FAKE is said"))
    target_fpr: float | None = field(
        default=None,
        **described(
            "choose the threshold on validation so that at most this share of REAL images is "
            "called FAKE, e.g. 0.01 ('none': keep --threshold)"
        ),
    )
    temperature_scaling: bool = field(
        default=True,
        **described(
            "fit a temperature on validation so prob_fake is calibrated (ranking unchanged)"
        ),
    )
    robust_augment: str = field(
        default="none",
        **described(
            "robustness transformations (see `cifake evaluate`) also applied while training, "
            "comma-separated, e.g. 'jpeg50,blur1,noise0.02' ('none': off)"
        ),
    )
    robust_augment_rate: float = field(
        default=0.5, **described("share of training images given one of --robust-augment's changes")
    )
    val_robustness: str = field(
        default="none",
        **described(
            "transformations to re-score the validation split under after training, e.g. "
            "'jpeg50,blur1,noise0.02': their mean accuracy and ROC-AUC are the metrics "
            "val_robust_accuracy and val_robust_roc_auc that `cifake tune --metric` can "
            "optimise ('none': off)"
        ),
    )
    mixed_precision: Literal["auto", "on", "off"] = field(
        default="auto",
        **described("float16 compute, float32 weights ('auto': on when a GPU is present)"),
    )
    jit_compile: Literal["auto", "on", "off"] = field(
        default="auto",
        **described("XLA-compile the training step ('auto': on when a GPU is present)"),
    )
    distribute: Literal["auto", "none", "mirrored"] = field(
        default="auto",
        **described(
            "'mirrored': MirroredStrategy over all visible GPUs ('auto': when there are 2+)"
        ),
    )
    cache_dir: str | None = field(
        default=None,
        **described("decoded-image cache ('auto': $CIFAKE_CACHE_DIR or ~/.cache/cifake-mlflow)"),
    )
    log_model: bool = field(
        default=True,
        **described(
            "log the detector (SavedModel + pyfunc) to the run; 'False' keeps only params, "
            "metrics and plots, as mlflow.autolog(log_models=False) does, for sweeps that "
            "compare metrics (such a run cannot be registered, served or warm-started from)"
        ),
    )
    experiment: str = field(default="cifake", **described("MLflow experiment name"))
    run_name: str | None = field(
        default=None, **described("MLflow run name ('auto': built from the main settings)")
    )

    def __post_init__(self) -> None:
        self.validate()

    # -- validation --------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field."""
        check_types(self)
        positive(self, "epochs", "batch_size", "dense_units", "patience")
        if self.image_size < MIN_IMAGE_SIZE:
            raise ConfigError(
                "image_size", self.image_size, f"MobileNetV2 needs at least {MIN_IMAGE_SIZE}"
            )
        for name in ("stem_stride", "block1_stride"):
            if getattr(self, name) not in DOWNSAMPLING_STRIDES:
                raise ConfigError(name, getattr(self, name), "1 or 2")
        in_range(self, "alpha", 0.0, 2.0, low_open=True)
        if self.weights == "imagenet" and self.alpha not in IMAGENET_ALPHAS:
            raise ConfigError(
                "alpha",
                self.alpha,
                f"with weights=imagenet one of {', '.join(map(str, IMAGENET_ALPHAS))}",
            )
        in_range(self, "learning_rate", 0.0, 10.0, low_open=True)
        in_range(self, "weight_decay", 0.0, 1.0)
        in_range(self, "dropout", 0.0, 1.0, high_open=True)
        in_range(self, "label_smoothing", 0.0, 1.0, high_open=True)
        in_range(self, "val_fraction", 0.0, 1.0, low_open=True, high_open=True)
        in_range(self, "zoom", 0.0, 1.0, high_open=True)
        in_range(self, "rotation", 0.0, 180.0)
        in_range(self, "shift", 0, NATIVE_SIZE // 2)
        in_range(self, "threshold", 0.0, 1.0)
        if self.target_fpr is not None:
            in_range(self, "target_fpr", 0.0, 1.0, high_open=True)
        in_range(self, "robust_augment_rate", 0.0, 1.0)
        if self.max_minutes is not None:
            in_range(self, "max_minutes", 0.0, 10_000.0, low_open=True)
        check_transforms("robust_augment", self.robust_augment)
        check_transforms("val_robustness", self.val_robustness)
        if self.bn_momentum is not None:
            in_range(self, "bn_momentum", 0.0, 1.0, low_open=True, high_open=True)
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
