"""CIFAKE on disk -> a checked, de-duplicated, cached uint8 dataset -> splits.

The source can be the Kaggle layout ``train|test/REAL|FAKE`` as a folder, a ``.zip``/``.tar.gz``
of it, or a folder holding such archives (one per split, say). Every image is decoded once
by :func:`cifake_mlflow.data.decode.decode_image` into a uint8 cache keyed
by a fingerprint of the source files, so a second run on the same data starts in seconds.

FAKE is the positive class (label 1) everywhere: the detector's score is ``prob_fake``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from cifake_mlflow.data.decode import ImageDecodeError, decode_image
from cifake_mlflow.data.sources import (
    CLASSES,
    LAYOUT_HINT,
    SPLITS,
    DataError,
    iter_entries,
)

#: Bump when decoding changes, so that old caches are not reused.
CACHE_VERSION = 1


@dataclass
class DataReport:
    """What loading found: counts, bad files, resized images and exact duplicates."""

    counts: dict[str, int] = field(default_factory=dict)
    bad_files: list[dict[str, str]] = field(default_factory=list)
    resized_files: list[str] = field(default_factory=list)
    duplicates: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Dataset:
    """Decoded CIFAKE: parallel arrays plus the report and a content digest."""

    images: np.ndarray  # (N, 32, 32, 3) uint8
    labels: np.ndarray  # (N,) uint8, FAKE=1
    splits: np.ndarray  # (N,) uint8, index into SPLITS
    hashes: np.ndarray  # (N,) S16, blake2b of the file bytes
    paths: np.ndarray  # (N,) str
    digest: str
    source: str
    report: DataReport

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == SPLITS.index(split))


@dataclass(frozen=True)
class Splits:
    """Row indices into a :class:`Dataset` for training, validation and the final test."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    dropped_train_duplicates: int = 0
    dropped_test_leaks: int = 0


# -- fingerprint and cache -------------------------------------------------------------------
def fingerprint(source: Path) -> str:
    """Cheap key of the source: paths, sizes and mtimes of its files (no content read)."""
    digest = hashlib.sha256(f"cifake-cache-v{CACHE_VERSION}\n".encode())
    source = source.resolve()
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for path in files:
        stat = path.stat()
        rel = path.name if path == source else path.relative_to(source).as_posix()
        digest.update(f"{rel}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$CIFAKE_CACHE_DIR``, else ``~/.cache/cifake-mlflow``."""
    env = os.environ.get("CIFAKE_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "cifake-mlflow"


def _cache_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"cifake-{key[:24]}"


def _save_cache(folder: Path, ds: Dataset) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        np.savez(
            tmp / "arrays.npz",
            images=ds.images,
            labels=ds.labels,
            splits=ds.splits,
            hashes=ds.hashes,
            paths=ds.paths,
        )
        meta = {"digest": ds.digest, "source": ds.source, "report": ds.report.to_dict()}
        (tmp / "meta.json").write_text(json.dumps(meta))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load_cache(folder: Path) -> Dataset | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        with np.load(folder / "arrays.npz", allow_pickle=False) as arrays:
            loaded = {k: arrays[k] for k in ("images", "labels", "splits", "hashes", "paths")}
        return Dataset(
            **loaded,
            digest=meta["digest"],
            source=meta["source"],
            report=DataReport(**meta["report"]),
        )
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile):
        return None  # damaged or from another version: decode again


# -- decoding --------------------------------------------------------------------------------
def _decode_all(source: Path, progress: bool, required: tuple[str, ...] = SPLITS) -> Dataset:
    seen: set[tuple[str, int]] = set()
    images, labels, splits, hashes, paths = [], [], [], [], []
    report = DataReport()
    bar = tqdm(desc=f"decoding {source.name}", unit="img", disable=not progress, mininterval=1)
    for entry in iter_entries(source, seen):
        bar.update()
        data = entry.read()
        try:
            pixels, resized = decode_image(data)
        except ImageDecodeError as exc:
            report.bad_files.append({"path": entry.path, "reason": str(exc)})
            continue
        if resized:
            report.resized_files.append(entry.path)
        images.append(pixels)
        labels.append(entry.label)
        splits.append(SPLITS.index(entry.split))
        hashes.append(hashlib.blake2b(data, digest_size=16).digest())
        paths.append(entry.path)
    bar.close()
    _check_layout(source, seen, labels, splits, report, required)
    ds = Dataset(
        images=np.stack(images).astype(np.uint8),
        labels=np.asarray(labels, dtype=np.uint8),
        splits=np.asarray(splits, dtype=np.uint8),
        hashes=np.asarray(hashes, dtype="S16"),
        paths=np.asarray(paths, dtype=str),
        digest="",
        source=str(source),
        report=report,
    )
    ds.digest = content_digest(ds)
    report.counts = count_classes(ds)
    report.duplicates = find_duplicates(ds)
    return ds


def _check_layout(
    source: Path,
    seen: set[tuple[str, int]],
    labels: list[int],
    splits: list[int],
    report: DataReport,
    required: tuple[str, ...] = SPLITS,
) -> None:
    present = {(SPLITS[s], lab) for s, lab in zip(splits, labels, strict=True)}
    for split in required:
        if not any(s == split for s, _ in seen):
            raise DataError(f"no '{split}' split in {source}: {LAYOUT_HINT}")
        for label, cls in enumerate(CLASSES):
            where = f"{split}/{cls}"
            if (split, label) not in seen:
                raise DataError(f"missing class folder {where} in {source}: {LAYOUT_HINT}")
            if (split, label) not in present:
                bad = sum(f"{where}/" in b["path"] for b in report.bad_files)
                why = f"all {bad} files are unreadable" if bad else "it has no files"
                raise DataError(f"empty class folder {where} in {source}: {why}")


def content_digest(ds: Dataset) -> str:
    """sha256 over (split, class, file hash) of every image, order-independent."""
    rows = sorted(
        f"{SPLITS[s]}/{CLASSES[lab]}/{h.hex()}"
        for s, lab, h in zip(ds.splits, ds.labels, ds.hashes, strict=True)
    )
    return hashlib.sha256("\n".join(rows).encode()).hexdigest()


def count_classes(ds: Dataset) -> dict[str, int]:
    return {
        f"{split}_{cls.lower()}": int(np.sum((ds.splits == si) & (ds.labels == ci)))
        for si, split in enumerate(SPLITS)
        for ci, cls in enumerate(CLASSES)
    }


def find_duplicates(ds: Dataset) -> dict[str, object]:
    """Exact duplicates by content hash: inside each split, and test images also in train."""
    groups: dict[bytes, list[int]] = {}
    for i, h in enumerate(ds.hashes):
        groups.setdefault(bytes(h), []).append(i)
    multi = [idx for idx in groups.values() if len(idx) > 1]
    train_id, test_id = SPLITS.index("train"), SPLITS.index("test")

    def inside(split_id: int) -> int:
        return sum(1 for idx in multi if sum(ds.splits[i] == split_id for i in idx) > 1)

    leaked = [idx for idx in multi if len({int(ds.splits[i]) for i in idx}) == 2]
    return {
        "groups": len(multi),
        "extra_copies": sum(len(idx) - 1 for idx in multi),
        "groups_within_train": inside(train_id),
        "groups_within_test": inside(test_id),
        "train_test_shared": len(leaked),
        "train_test_examples": [[str(ds.paths[i]) for i in idx] for idx in leaked[:20]],
    }


def load_dataset(
    source: str | Path,
    cache_dir: str | Path | None = None,
    on_bad_file: str = "error",
    progress: bool = True,
    required: tuple[str, ...] = SPLITS,
) -> Dataset:
    """Decode (or reuse the cache of) ``source``; apply the bad-file policy.

    ``required`` names the splits that must be there with both classes (training needs both;
    evaluating a test archive alone needs only ``("test",)``).

    ``on_bad_file='error'`` raises :class:`DataError` listing every bad file;
    ``'skip'`` leaves them out (they stay listed in ``report.bad_files``).
    """
    source = Path(source).expanduser()
    if not source.exists():
        list(iter_entries(source, set()))  # raises the not-found message
    cache_root = Path(cache_dir) if cache_dir else default_cache_dir()
    folder = _cache_path(cache_root, fingerprint(source))
    ds = _load_cache(folder)
    if ds is not None and not set(required) <= {SPLITS[i] for i in np.unique(ds.splits)}:
        ds = None  # decoded for another purpose; decode again to report what is missing
    if ds is None:
        start = time.perf_counter()
        ds = _decode_all(source, progress, required)
        _save_cache(folder, ds)
        if progress:
            print(
                f"decoded {len(ds.labels):,} images in {time.perf_counter() - start:.1f}s; "
                f"cached at {folder}"
            )
    if ds.report.bad_files and on_bad_file != "skip":
        listing = "\n".join(f"  {b['path']}: {b['reason']}" for b in ds.report.bad_files[:50])
        more = len(ds.report.bad_files) - 50
        raise DataError(
            f"{len(ds.report.bad_files)} bad image file(s) in {source}:\n{listing}"
            + (f"\n  ... and {more} more" if more > 0 else "")
            + "\nRemove or replace them, or pass --on-bad-file skip to leave them out."
        )
    return ds


# -- splits ----------------------------------------------------------------------------------
def _stratified_subset(
    idx: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator
) -> np.ndarray:
    if size >= len(idx):
        return idx
    picked = []
    for label in (0, 1):
        members = idx[labels[idx] == label]
        share = round(size * len(members) / len(idx))
        picked.append(rng.choice(members, size=max(1, share), replace=False))
    return np.sort(np.concatenate(picked))


def make_splits(
    ds: Dataset,
    val_fraction: float,
    seed: int,
    drop_duplicates: bool = True,
    max_train_images: int | None = None,
    max_test_images: int | None = None,
) -> Splits:
    """Seeded, stratified train/validation split carved from train; test kept for the end.

    With ``drop_duplicates`` the train side keeps one copy of each exact duplicate and no copy
    of any test image, so validation and test scores are not flattered by leakage.
    """
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(seed)
    train = ds.indices("train")
    test = ds.indices("test")
    dropped_dups = dropped_leaks = 0
    if drop_duplicates:
        test_hashes = set(ds.hashes[test].tolist())
        leaks = np.array([h in test_hashes for h in ds.hashes[train].tolist()], dtype=bool)
        dropped_leaks = int(leaks.sum())
        train = train[~leaks]
        _, first = np.unique(ds.hashes[train], return_index=True)
        dropped_dups = len(train) - len(first)
        train = np.sort(train[first])
    if max_train_images is not None:
        train = _stratified_subset(train, ds.labels, max_train_images, rng)
    if max_test_images is not None:
        test = _stratified_subset(test, ds.labels, max_test_images, rng)
    try:
        fit, val = train_test_split(
            train, test_size=val_fraction, stratify=ds.labels[train], random_state=seed
        )
    except ValueError as exc:
        raise DataError(
            f"cannot carve a validation split of {val_fraction} from {len(train)} "
            f"training images: {exc}"
        ) from None
    return Splits(np.sort(fit), np.sort(val), test, dropped_dups, dropped_leaks)
