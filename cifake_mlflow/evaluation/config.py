"""One ``cifake evaluate`` run: which model, on which images, and which extra reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from cifake_mlflow.config import ConfigError, TextConfig, check_types, described, in_range
from cifake_mlflow.data.near_duplicates import DEFAULT_MAX_DISTANCE
from cifake_mlflow.data.perturbations import DEFAULT_SUITE, parse_names
from cifake_mlflow.training.config import MIN_SUBSET


@dataclass(frozen=True)
class EvalConfig(TextConfig):
    """One ``cifake evaluate`` run: which model, on which images, and which extra reports."""

    NONE_WORDS: ClassVar[dict[str, tuple[str, ...]]] = {
        "train_data": ("auto", ""),
        "max_images": ("all",),
        "threshold": ("model",),
        "cache_dir": ("auto",),
        "run_name": ("auto", ""),
    }

    model_uri: str = field(
        default="models:/cifake-detector@champion",
        **described("model to evaluate: runs:/<id>/model, models:/<name>/<version> or @<alias>"),
    )
    data: str = field(
        default="data",
        **described("CIFAKE folder, Kaggle .zip or .tar.gz archive(s) to evaluate on"),
    )
    split: Literal["test", "train"] = field(
        default="test", **described("which split of --data to score (never tune on test)")
    )
    train_data: str | None = field(
        default=None,
        **described(
            "training images the leak-free twin (test_dedup_*) leaves copies of out, when "
            "--data holds no train split, e.g. cifake-train.tar.gz ('auto': --data's own)"
        ),
    )
    near_duplicate_distance: int = field(
        default=DEFAULT_MAX_DISTANCE,
        **described(
            "perceptual-hash bits within which a test image counts as a near-duplicate of a "
            "training image (re-encoded, recoloured or mirrored copies), left out of "
            "the leak-free score test_leakfree_*"
        ),
    )
    max_images: int | None = field(
        default=None, **described("seeded random subset of the split, for quick checks ('all')")
    )
    robustness: bool = field(
        default=True, **described("re-score the images after each everyday transformation")
    )
    transforms: str = field(
        default=",".join(DEFAULT_SUITE),
        **described(
            "robustness transformations, comma-separated (jpegQ, blurS, noiseS, downupF, cropF)"
        ),
    )
    explain_samples: int = field(
        default=16,
        **described("Grad-CAM grid: this many correct and this many wrong images (0: off)"),
    )
    bootstrap: int = field(
        default=1000, **described("bootstrap resamples for the 95% intervals (0: off)")
    )
    threshold: float | None = field(
        default=None, **described("decision threshold ('model': the one stored with the model)")
    )
    seed: int = field(
        default=0, **described("seed of subsets, noise, bootstrap and the Grad-CAM sample")
    )
    on_bad_file: Literal["error", "skip"] = field(
        default="error", **described("stop on unreadable images with a report, or skip them")
    )
    cache_dir: str | None = field(
        default=None,
        **described("decoded-image cache ('auto': $CIFAKE_CACHE_DIR or ~/.cache/cifake-mlflow)"),
    )
    experiment: str = field(default="cifake-evaluation", **described("MLflow experiment name"))
    run_name: str | None = field(
        default=None, **described("MLflow run name ('auto': 'eval <model> on <split>')")
    )

    def __post_init__(self) -> None:
        check_types(self)
        if self.max_images is not None and self.max_images < MIN_SUBSET:
            raise ConfigError("max_images", self.max_images, f"at least {MIN_SUBSET}, or 'all'")
        if self.threshold is not None:
            in_range(self, "threshold", 0.0, 1.0)
        in_range(self, "near_duplicate_distance", 0, 16)
        for name in ("explain_samples", "bootstrap", "seed"):
            if getattr(self, name) < 0:
                raise ConfigError(name, getattr(self, name), "0 or more")
        if not self.experiment.strip():
            raise ConfigError("experiment", self.experiment, "a non-empty name")
        try:
            parse_names(self.transforms)
        except ValueError as exc:
            raise ConfigError("transforms", self.transforms, str(exc)) from None
