"""Everyday image processing as named, parametrised transformations of 32x32 uint8 images.

A detector that only works on pristine files is of little use: shared images get re-encoded,
resized and cropped. Each transformation is named ``<kind><parameter>`` so that the name says
exactly what was done, in metric names too (``robust_jpeg50_accuracy``):

======================  =====================================================================
``jpegQ``               re-encode as JPEG at quality Q (1-100), with Pillow's libjpeg
``blurS``               Gaussian blur with standard deviation S pixels (scipy, reflect borders)
``noiseS``              add Gaussian noise of standard deviation S (pixel range = 1), clip
``downupF``             shrink to F of the side (area average), enlarge back (bilinear)
``cropF``               keep F of the side (centred; random position when training), enlarge
======================  =====================================================================

:data:`DEFAULT_SUITE` is what ``cifake evaluate`` reports; ``--robust-augment`` applies any of
them while training, through :func:`augment_batch` (the same code, so training and evaluation
cannot drift apart).
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterable, Sequence

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

#: The suite ``cifake evaluate`` runs by default: each kind at a mild and a stronger setting
#: (JPEG also at a near-lossless one), mildest first.
DEFAULT_SUITE = (
    "jpeg90",
    "jpeg50",
    "jpeg25",
    "blur0.5",
    "blur1",
    "noise0.02",
    "noise0.05",
    "downup0.75",
    "downup0.5",
    "crop0.875",
    "crop0.75",
)

#: ``(uint8 images, rng, training) -> uint8 images``; ``training`` moves crops off-centre.
Transform = Callable[[np.ndarray, np.random.Generator, bool], np.ndarray]

_NAME = re.compile(r"^(jpeg|blur|noise|downup|crop)(\d+(?:\.\d+)?)$")
#: kind -> (lowest, highest, whether the bounds are open) of its parameter.
_RANGES = {
    "jpeg": (1, 100, False),
    "blur": (0, 5, True),
    "noise": (0, 1, True),
    "downup": (0, 1, True),
    "crop": (0, 1, True),
}


def parse_names(text: str | Sequence[str]) -> tuple[str, ...]:
    """Check a comma-separated list (or a sequence) of transformation names; '' / 'none': ()."""
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [n.strip() for n in names if n.strip() and n.strip().lower() != "none"]
    for name in names:
        kind, value = _split(name)
        low, high, open_ = _RANGES[kind]
        inside = low < value < high if open_ else low <= value <= high
        if not inside or (kind == "jpeg" and value != int(value)):
            bounds = f"({low}, {high})" if open_ else f"{low}-{high} (whole number)"
            raise ValueError(f"{name!r}: the {kind} parameter must be in {bounds}")
    return tuple(names)


def _split(name: str) -> tuple[str, float]:
    match = _NAME.match(name)
    if match is None:
        raise ValueError(
            f"{name!r} is not a transformation; use jpegQ, blurS, noiseS, downupF or cropF "
            f"with a number, e.g. {', '.join(DEFAULT_SUITE)}"
        )
    return match.group(1), float(match.group(2))


#: A metric measured after a transformation: ``robust_<name>_<roc_auc|accuracy>`` on the test
#: split (``cifake evaluate``), ``val_robust_...`` on validation (``--val-robustness``).
_ROBUST_METRIC = re.compile(r"^(?P<split>val_)?robust_(?P<name>.+)_(?P<metric>roc_auc|accuracy)$")


def split_robust_metric(metric: str) -> tuple[str, str] | None:
    """``robust_blur1_accuracy`` -> ``("blur1", "accuracy")``; None if not of that form.

    Raises ValueError when the form fits but the transformation is not one (``robust_x_accuracy``).
    """
    match = _ROBUST_METRIC.match(metric)
    if match is None or match["split"]:
        return None
    return parse_names(match["name"])[0], match["metric"]


def robust_names(metric_keys: Iterable[str]) -> list[str]:
    """The transformations that ``robust_*`` or ``val_robust_*`` metrics were measured after.

    In :data:`DEFAULT_SUITE`'s order, others after it by name. Unlike
    :func:`split_robust_metric` this does not check the names: tables over an old store show
    whatever was logged there.
    """
    found = {m["name"] for key in metric_keys if (m := _ROBUST_METRIC.match(key))}
    suite = list(DEFAULT_SUITE)
    return sorted(found, key=lambda n: (suite.index(n) if n in suite else len(suite), n))


def transform(name: str) -> Transform:
    """The function behind ``name`` (see :data:`Transform`)."""
    kind, value = _split(parse_names(name)[0])
    maker = {"jpeg": _jpeg, "blur": _blur, "noise": _noise, "downup": _downup, "crop": _crop}
    return maker[kind](value)


def apply(name: str, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """Transform a batch as evaluation does: crops centred, noise from ``seed``."""
    return transform(name)(np.asarray(images, dtype=np.uint8), np.random.default_rng(seed), False)


def jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    """One image as a baseline JPEG file at ``quality`` (no chroma tricks beyond Pillow's)."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=int(quality))
    return out.getvalue()


def _per_image(images: np.ndarray, func: Callable[[Image.Image], Image.Image]) -> np.ndarray:
    return np.stack([np.asarray(func(Image.fromarray(img)).convert("RGB")) for img in images])


def _jpeg(quality: float) -> Transform:
    def run(images: np.ndarray, rng: np.random.Generator, training: bool) -> np.ndarray:
        return np.stack(
            [np.asarray(Image.open(io.BytesIO(jpeg_bytes(img, int(quality))))) for img in images]
        )

    return run


def _blur(sigma: float) -> Transform:
    def run(images: np.ndarray, rng: np.random.Generator, training: bool) -> np.ndarray:
        blurred = gaussian_filter(images.astype(np.float32), sigma=(0, sigma, sigma, 0))
        return np.clip(np.rint(blurred), 0, 255).astype(np.uint8)

    return run


def _noise(sigma: float) -> Transform:
    def run(images: np.ndarray, rng: np.random.Generator, training: bool) -> np.ndarray:
        noisy = images / 255.0 + rng.normal(0.0, sigma, images.shape)
        return np.clip(np.rint(noisy * 255.0), 0, 255).astype(np.uint8)

    return run


def _downup(factor: float) -> Transform:
    def run(images: np.ndarray, rng: np.random.Generator, training: bool) -> np.ndarray:
        side = images.shape[1]
        small = max(1, round(side * factor))
        return _per_image(
            images,
            lambda im: im.resize((small, small), Image.Resampling.BOX).resize(
                (side, side), Image.Resampling.BILINEAR
            ),
        )

    return run


def _crop(fraction: float) -> Transform:
    def run(images: np.ndarray, rng: np.random.Generator, training: bool) -> np.ndarray:
        side = images.shape[1]
        keep = max(1, round(side * fraction))
        out = np.empty_like(images)
        for i, img in enumerate(images):
            if training:
                top, left = rng.integers(0, side - keep + 1, size=2)
            else:
                top = left = (side - keep) // 2
            piece = Image.fromarray(img[top : top + keep, left : left + keep])
            out[i] = np.asarray(piece.resize((side, side), Image.Resampling.BILINEAR))
        return out

    return run


def augment_batch(
    images: np.ndarray, names: Sequence[str], rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Give each image, with probability ``rate``, one of ``names`` chosen at random.

    Crops take a random position here (centred in evaluation); everything else is identical.
    """
    images = np.asarray(images, dtype=np.uint8)
    if not names or rate <= 0:
        return images
    out = images.copy()
    chosen = np.where(rng.random(len(images)) < rate, rng.integers(0, len(names), len(images)), -1)
    for k, name in enumerate(names):
        picked = np.flatnonzero(chosen == k)
        if len(picked):
            out[picked] = transform(name)(images[picked], rng, True)
    return out
