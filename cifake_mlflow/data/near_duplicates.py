"""Near-duplicates between splits: re-encoded, recoloured or mirrored copies of one picture.

CIFAR-10, CIFAKE's REAL half, holds such copies across its train and test splits; a byte
comparison finds none of them. Each image gets a 64-bit perceptual hash (the signs of its
lowest 8x8 DCT coefficients of luminance against their median, the DC term left out), which
re-encoding and brightness changes leave within a few bits. A shift of even one pixel moves
most copies further than that: shifted copies are found only in part. Two images whose
hashes differ in at most ``max_distance`` bits are near-duplicates; a test image is also
compared in its mirrored form, since flipped copies are common.

Candidates are found by exact match on ``max_distance + 1`` bands of the hash (two hashes
within that distance agree on at least one band), so no pairwise scan of the splits is needed.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.fft import dctn

#: The default bit distance, chosen by looking at sampled CIFAKE pairs at each distance.
DEFAULT_MAX_DISTANCE = 4
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CHUNK = 8192


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """uint64 hash of each ``(N, H, W, 3)`` uint8 image (``(N,)``)."""
    out = np.empty(len(images), dtype=np.uint64)
    weights = np.uint64(1) << np.arange(64, dtype=np.uint64)
    for start in range(0, len(images), _CHUNK):
        luma = images[start : start + _CHUNK].astype(np.float32) @ _LUMA
        low = dctn(luma, type=2, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(-1, 64)
        median = np.median(low[:, 1:], axis=1, keepdims=True)
        bits = (low > median).astype(np.uint64)
        out[start : start + _CHUNK] = (bits * weights).sum(axis=1, dtype=np.uint64)
    return out


def _bands(max_distance: int) -> list[tuple[int, int]]:
    """``max_distance + 1`` (shift, width) bit ranges that cover the 64 bits."""
    count = max_distance + 1
    edges = np.linspace(0, 64, count + 1).round().astype(int)
    return [(int(a), int(b - a)) for a, b in itertools.pairwise(edges)]


def nearest_distances(
    query: np.ndarray, reference: np.ndarray, max_distance: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each query hash, the smallest bit distance to a reference hash and that reference's
    index; ``max_distance + 1`` and -1 where none is within ``max_distance``."""
    best = np.full(len(query), max_distance + 1, dtype=np.int64)
    where = np.full(len(query), -1, dtype=np.int64)
    for shift, width in _bands(max_distance):
        mask = np.uint64((1 << width) - 1)
        ref_band = (reference >> np.uint64(shift)) & mask
        order = np.argsort(ref_band, kind="stable")
        sorted_band = ref_band[order]
        q_band = (query >> np.uint64(shift)) & mask
        lo = np.searchsorted(sorted_band, q_band, side="left")
        hi = np.searchsorted(sorted_band, q_band, side="right")
        counts = hi - lo
        q_idx = np.repeat(np.arange(len(query)), counts)
        if not len(q_idx):
            continue
        # Positions lo[q] .. hi[q]-1 of every query, laid end to end.
        offsets = np.arange(len(q_idx)) - np.repeat(np.cumsum(counts) - counts, counts)
        r_idx = order[np.repeat(lo, counts) + offsets]
        dist = np.bitwise_count(query[q_idx] ^ reference[r_idx]).astype(np.int64)
        np.minimum.at(best, q_idx, dist)
        hit = (dist == best[q_idx]) & (dist <= max_distance)
        where[q_idx[hit]] = r_idx[hit]
    return best, where


def near_duplicate_mask(
    images: np.ndarray, reference_images: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE
) -> np.ndarray:
    """True for each image with a near-duplicate (itself or mirrored) among the references."""
    reference = perceptual_hashes(reference_images)
    found = np.zeros(len(images), dtype=bool)
    for view in (images, images[:, :, ::-1]):
        best, _ = nearest_distances(perceptual_hashes(view), reference, max_distance)
        found |= best <= max_distance
    return found
