"""Near-duplicates by perceptual hash: edited copies are found, other pictures are not."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import jpeg_bytes
from PIL import Image
from scipy.ndimage import gaussian_filter

from cifake_mlflow.data import near_duplicates as nd

pytestmark = pytest.mark.fast


def pictures(count: int, seed: int) -> np.ndarray:
    """Smooth random pictures: most of their energy in low frequencies, as in photographs."""
    rng = np.random.default_rng(seed)
    smooth = gaussian_filter(rng.normal(size=(count, 32, 32, 3)), sigma=(0, 3, 3, 0))
    smooth /= smooth.std(axis=(1, 2, 3), keepdims=True)
    return np.clip(128 + 45 * smooth, 0, 255).astype(np.uint8)


def reencoded(image: np.ndarray, quality: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(image, quality))))


EDITS = {
    "jpeg q75": lambda im: reencoded(im, 75),
    "brighter": lambda im: np.clip(im.astype(int) + 12, 0, 255).astype(np.uint8),
    "mirrored": lambda im: im[:, ::-1],
}


@pytest.mark.parametrize("edit", EDITS)
def test_an_edited_copy_is_a_near_duplicate_and_other_pictures_are_not(edit: str) -> None:
    train = pictures(300, seed=1)
    copies = np.stack([EDITS[edit](im) for im in train[:50]])
    others = pictures(300, seed=2)
    assert nd.near_duplicate_mask(copies, train).mean() >= 0.95  # a few bits move per edit
    assert not nd.near_duplicate_mask(others, train).any()


@pytest.mark.parametrize("max_distance", [0, 2, 4, 7])
def test_banded_search_finds_every_pair_a_full_scan_finds(max_distance: int) -> None:
    rng = np.random.default_rng(max_distance)
    reference = rng.integers(0, 2**63, 400, dtype=np.uint64)
    flips = [rng.choice(64, rng.integers(0, 9), replace=False) for _ in range(300)]
    query = np.array(
        [reference[i % 400] ^ np.uint64(sum(1 << int(b) for b in f)) for i, f in enumerate(flips)],
        dtype=np.uint64,
    )
    best, where = nd.nearest_distances(query, reference, max_distance)
    full = np.array(
        [[bin(int(q) ^ int(r)).count("1") for r in reference] for q in query], dtype=np.int64
    )
    expected = np.where(full.min(axis=1) <= max_distance, full.min(axis=1), max_distance + 1)
    np.testing.assert_array_equal(best, expected)
    found = best <= max_distance
    assert (full[np.flatnonzero(found), where[found]] == best[found]).all()
    assert (where[~found] == -1).all() and found.any() and (~found).any()
