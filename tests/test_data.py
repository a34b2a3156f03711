"""load_dataset (folder, archives, bad data, duplicates, cache) and make_splits."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import jpeg_bytes, synthetic_image, write_cifake
from PIL import Image

from cifake_mlflow.data import dataset as data_module
from cifake_mlflow.data.dataset import (
    CLASSES,
    SPLITS,
    DataError,
    DataReport,
    Dataset,
    fingerprint,
    load_dataset,
    make_splits,
)

pytestmark = pytest.mark.fast  # unit tests: the fast lane (pytest -m fast)

PER_CLASS = {"train": 8, "test": 5}


# -- helpers -----------------------------------------------------------------------------------
def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def make_zip(folder: Path, dest: Path, prefix: str = "") -> Path:
    """Zip ``folder`` with directory entries, as zip tools write them."""
    with zipfile.ZipFile(dest, "w") as archive:
        for path in sorted(folder.rglob("*")):
            archive.write(path, prefix + path.relative_to(folder).as_posix())
    return dest


def make_tar(folder: Path, dest: Path, arcname: str) -> Path:
    mode = "w" if dest.name.endswith(".tar") else "w:gz"
    with tarfile.open(dest, mode) as archive:
        archive.add(folder, arcname=arcname)
    return dest


def make_split_archives(folder: Path, dest: Path) -> Path:
    """Like ../shared/data: one .tar.gz per split, each holding ``<split>/REAL|FAKE/...``."""
    dest.mkdir()
    for split in SPLITS:
        make_tar(folder / split, dest / f"cifake-{split}.tar.gz", arcname=split)
    return dest


def load(source: Path, cache_dir: Path, **kwargs: object) -> Dataset:
    return load_dataset(source, cache_dir=cache_dir, progress=False, **kwargs)


def expected_counts(per_class: dict[str, int]) -> dict[str, int]:
    return {f"{s}_{c.lower()}": per_class[s] for s in SPLITS for c in CLASSES}


def noisy_jpeg(size: int = 256, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return jpeg_bytes(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def assert_labels_follow_paths(ds: Dataset) -> None:
    for path, label, split in zip(ds.paths, ds.labels, ds.splits, strict=True):
        path = str(path).replace("\\", "/")
        assert ("/FAKE/" in path) == (label == 1), path
        assert ("/REAL/" in path) == (label == 0), path
        assert f"{SPLITS[split]}/" in path, path


@pytest.fixture
def small_dir(tmp_path: Path) -> Path:
    return write_cifake(tmp_path / "cifake", PER_CLASS, seed=1)


# -- sources -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["folder", "zip", "tar.gz", "tgz", "tar", "split-archives"])
def test_every_source_layout_gives_the_same_dataset(
    kind: str, small_dir: Path, tmp_path: Path, cache_dir: Path
) -> None:
    reference = load(small_dir, cache_dir)
    if kind == "folder":
        source = small_dir
    elif kind == "zip":
        source = make_zip(small_dir, tmp_path / "cifake.zip")
    elif kind in ("tar.gz", "tgz", "tar"):
        source = make_tar(small_dir, tmp_path / f"cifake.{kind}", arcname="cifake")
    else:
        source = make_split_archives(small_dir, tmp_path / "archives")
    ds = load(source, cache_dir)

    n = 2 * (PER_CLASS["train"] + PER_CLASS["test"])
    assert ds.images.shape == (n, 32, 32, 3) and ds.images.dtype == np.uint8
    assert len(ds.labels) == len(ds.splits) == len(ds.hashes) == len(ds.paths) == n
    assert ds.report.counts == expected_counts(PER_CLASS)
    assert ds.digest == reference.digest
    assert_labels_follow_paths(ds)
    assert ds.report.bad_files == [] and ds.report.resized_files == []
    # the same file bytes decode to the same pixels whatever the container
    by_hash = {bytes(h): img for h, img in zip(reference.hashes, reference.images, strict=True)}
    for h, img in zip(ds.hashes, ds.images, strict=True):
        np.testing.assert_array_equal(img, by_hash[bytes(h)])


def test_labels_fake_is_one(small_dir: Path, cache_dir: Path) -> None:
    ds = load(small_dir, cache_dir)
    assert CLASSES.index("FAKE") == 1 and CLASSES.index("REAL") == 0
    fake = np.array(["/FAKE/" in str(p) for p in ds.paths])
    assert fake.sum() == PER_CLASS["train"] + PER_CLASS["test"]
    np.testing.assert_array_equal(ds.labels, fake.astype(np.uint8))
    assert len(ds.indices("train")) == 2 * PER_CLASS["train"]
    assert len(ds.indices("test")) == 2 * PER_CLASS["test"]


def test_digest_depends_on_content(tmp_path: Path, cache_dir: Path) -> None:
    a = load(write_cifake(tmp_path / "a", 3, seed=1), cache_dir)
    b = load(write_cifake(tmp_path / "b", 3, seed=2), cache_dir)
    assert a.digest != b.digest


# -- bad data ----------------------------------------------------------------------------------
def test_missing_path(tmp_path: Path, cache_dir: Path) -> None:
    missing = tmp_path / "no-such-cifake"
    with pytest.raises(DataError) as info:
        load(missing, cache_dir)
    assert str(missing) in str(info.value)
    assert "--data" in str(info.value)


def test_not_a_folder_nor_archive(tmp_path: Path, cache_dir: Path) -> None:
    source = tmp_path / "cifake.txt"
    source.write_text("hello")
    with pytest.raises(DataError, match="neither a folder nor"):
        load(source, cache_dir)


def test_missing_test_split(tmp_path: Path, cache_dir: Path) -> None:
    source = write_cifake(tmp_path / "cifake", {"train": 3})
    with pytest.raises(DataError, match="no 'test' split"):
        load(source, cache_dir)


def test_missing_class_folder(small_dir: Path, cache_dir: Path) -> None:
    shutil.rmtree(small_dir / "train" / "FAKE")
    with pytest.raises(DataError, match="missing class folder train/FAKE"):
        load(small_dir, cache_dir)


@pytest.mark.parametrize("kind", ["folder", "zip", "tar.gz"])
def test_empty_class_folder(kind: str, small_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    for path in (small_dir / "train" / "FAKE").iterdir():
        path.unlink()
    source = {
        "folder": lambda: small_dir,
        "zip": lambda: make_zip(small_dir, tmp_path / "c.zip"),
        "tar.gz": lambda: make_tar(small_dir, tmp_path / "c.tar.gz", arcname="cifake"),
    }[kind]()
    with pytest.raises(DataError, match="empty class folder train/FAKE") as info:
        load(source, cache_dir)
    assert "no files" in str(info.value)


def test_hidden_and_foreign_files_are_ignored(
    small_dir: Path, tmp_path: Path, cache_dir: Path
) -> None:
    """Zips made on macOS carry __MACOSX/._* and .DS_Store entries; they are not images."""
    reference = load(small_dir, cache_dir)
    (small_dir / "train" / "FAKE" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (small_dir / "__MACOSX" / "train" / "FAKE").mkdir(parents=True)
    (small_dir / "__MACOSX" / "train" / "FAKE" / "._0000.jpg").write_bytes(b"\0\5\26\7")
    (small_dir / "README.txt").write_text("CIFAKE")
    ds = load(make_zip(small_dir, tmp_path / "mac.zip"), cache_dir)
    assert ds.report.bad_files == []
    assert ds.digest == reference.digest


def test_class_folder_of_only_bad_files(small_dir: Path, cache_dir: Path) -> None:
    folder = small_dir / "test" / "REAL"
    for path in folder.iterdir():
        path.write_bytes(b"not a picture")
    with pytest.raises(DataError, match="empty class folder test/REAL") as info:
        load(small_dir, cache_dir, on_bad_file="skip")
    assert f"all {PER_CLASS['test']} files are unreadable" in str(info.value)


@pytest.fixture
def bad_dir(small_dir: Path) -> Path:
    (small_dir / "train" / "REAL" / "notes.txt").write_text("this is not an image\n")
    full = noisy_jpeg()
    (small_dir / "train" / "FAKE" / "broken.jpg").write_bytes(full[: len(full) // 2])
    return small_dir


def test_bad_files_raise_a_report_by_default(bad_dir: Path, cache_dir: Path) -> None:
    with pytest.raises(DataError) as info:
        load(bad_dir, cache_dir)
    message = str(info.value)
    assert "2 bad image file(s)" in message
    assert "notes.txt" in message and "broken.jpg" in message
    assert "--on-bad-file skip" in message


def test_bad_files_are_skipped_and_listed(bad_dir: Path, cache_dir: Path) -> None:
    ds = load(bad_dir, cache_dir, on_bad_file="skip")
    assert ds.report.counts == expected_counts(PER_CLASS)
    bad = {Path(b["path"]).name: b["reason"] for b in ds.report.bad_files}
    assert set(bad) == {"notes.txt", "broken.jpg"}
    assert "not an image" in bad["notes.txt"]
    assert "truncated" in bad["broken.jpg"]
    names = {Path(str(p)).name for p in ds.paths}
    assert "notes.txt" not in names and "broken.jpg" not in names


def test_long_bad_file_list_is_shortened(small_dir: Path, cache_dir: Path) -> None:
    for i in range(55):
        (small_dir / "test" / "FAKE" / f"bad{i:02d}.jpg").write_bytes(b"junk")
    with pytest.raises(DataError) as info:
        load(small_dir, cache_dir)
    message = str(info.value)
    assert "55 bad image file(s)" in message
    assert "and 5 more" in message
    assert sum(f"bad{i:02d}.jpg" in message for i in range(55)) == 50


def test_bad_file_policy_applies_to_cached_data(bad_dir: Path, cache_dir: Path) -> None:
    """The cache keeps the bad-file list, so 'error' still stops after a 'skip' run cached it."""
    load(bad_dir, cache_dir, on_bad_file="skip")
    with pytest.raises(DataError, match="bad image file"):
        load(bad_dir, cache_dir)


def test_random_bytes_archive(tmp_path: Path, cache_dir: Path) -> None:
    source = tmp_path / "x.tar.gz"
    source.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="cannot read archive") as info:
        load(source, cache_dir)
    assert "x.tar.gz" in str(info.value)


def test_truncated_zip(small_dir: Path, tmp_path: Path, cache_dir: Path) -> None:
    full = make_zip(small_dir, tmp_path / "full.zip").read_bytes()
    source = tmp_path / "cut.zip"
    source.write_bytes(full[: len(full) // 2])
    with pytest.raises(DataError, match="cannot read archive"):
        load(source, cache_dir)


def test_truncated_tar_gz_in_archive_folder(small_dir: Path, tmp_path: Path, cache_dir: Path):
    source = make_split_archives(small_dir, tmp_path / "archives")
    train = source / "cifake-train.tar.gz"
    train.write_bytes(train.read_bytes()[: train.stat().st_size // 2])
    with pytest.raises(DataError, match="cannot read archive"):
        load(source, cache_dir)


def test_larger_image_is_resized_and_reported(small_dir: Path, cache_dir: Path) -> None:
    small = synthetic_image(0, np.random.default_rng(9))
    big = np.kron(small, np.ones((2, 2, 1), np.uint8))
    (small_dir / "train" / "REAL" / "big.png").write_bytes(png_bytes(big))
    ds = load(small_dir, cache_dir)
    assert [Path(p).name for p in ds.report.resized_files] == ["big.png"]
    row = [i for i, p in enumerate(ds.paths) if str(p).endswith("big.png")]
    assert len(row) == 1
    assert ds.images[row[0]].shape == (32, 32, 3)
    assert np.abs(ds.images[row[0]].astype(np.int64) - small).mean() < 10
    assert ds.report.counts["train_real"] == PER_CLASS["train"] + 1


# -- duplicates --------------------------------------------------------------------------------
@pytest.fixture
def dup_dir(small_dir: Path) -> Path:
    """One train FAKE file leaked into test/FAKE, one train REAL file copied within train."""
    shutil.copy(small_dir / "train" / "FAKE" / "0001.jpg", small_dir / "test" / "FAKE" / "leak.jpg")
    shutil.copy(small_dir / "train" / "REAL" / "0002.jpg", small_dir / "train" / "REAL" / "dup.jpg")
    return small_dir


def test_duplicates_are_reported(dup_dir: Path, cache_dir: Path) -> None:
    dups = load(dup_dir, cache_dir).report.duplicates
    assert dups["groups"] == 2
    assert dups["extra_copies"] == 2
    assert dups["train_test_shared"] == 1
    assert dups["groups_within_train"] == 1
    assert dups["groups_within_test"] == 0
    (example,) = dups["train_test_examples"]
    assert sorted(Path(p).name for p in example) == ["0001.jpg", "leak.jpg"]


def test_no_duplicates_reported_on_clean_data(small_dir: Path, cache_dir: Path) -> None:
    dups = load(small_dir, cache_dir).report.duplicates
    assert dups["groups"] == dups["train_test_shared"] == dups["groups_within_train"] == 0


def test_make_splits_drops_leaks_and_copies(dup_dir: Path, cache_dir: Path) -> None:
    ds = load(dup_dir, cache_dir)
    splits = make_splits(ds, val_fraction=0.25, seed=0, drop_duplicates=True)
    assert splits.dropped_test_leaks == 1
    assert splits.dropped_train_duplicates == 1
    used = np.concatenate([splits.train, splits.val])
    used_hashes = [bytes(h) for h in ds.hashes[used]]
    test_hashes = {bytes(h) for h in ds.hashes[splits.test]}
    assert not set(used_hashes) & test_hashes
    assert len(set(used_hashes)) == len(used_hashes)
    assert len(used) == len(ds.indices("train")) - 2
    np.testing.assert_array_equal(np.sort(splits.test), ds.indices("test"))


def test_make_splits_keeps_duplicates_when_asked(dup_dir: Path, cache_dir: Path) -> None:
    ds = load(dup_dir, cache_dir)
    splits = make_splits(ds, val_fraction=0.25, seed=0, drop_duplicates=False)
    assert splits.dropped_test_leaks == splits.dropped_train_duplicates == 0
    used = np.sort(np.concatenate([splits.train, splits.val]))
    np.testing.assert_array_equal(used, ds.indices("train"))


# -- splits on a synthetic index ---------------------------------------------------------------
def index_dataset(train: tuple[int, int], test: tuple[int, int]) -> Dataset:
    """A Dataset of unique blank images: ``train``/``test`` are (n_real, n_fake)."""
    labels, splits = [], []
    for split_id, (n_real, n_fake) in enumerate((train, test)):
        labels += [0] * n_real + [1] * n_fake
        splits += [split_id] * (n_real + n_fake)
    n = len(labels)
    hashes = [hashlib.blake2b(str(i).encode(), digest_size=16).digest() for i in range(n)]
    return Dataset(
        images=np.zeros((n, 32, 32, 3), np.uint8),
        labels=np.asarray(labels, np.uint8),
        splits=np.asarray(splits, np.uint8),
        hashes=np.asarray(hashes, dtype="S16"),
        paths=np.asarray(
            [
                f"{SPLITS[s]}/{CLASSES[lab]}/{i}.jpg"
                for i, (s, lab) in enumerate(zip(splits, labels, strict=True))
            ]
        ),
        digest="",
        source="synthetic",
        report=DataReport(),
    )


def fake_share(ds: Dataset, idx: np.ndarray) -> float:
    return float(ds.labels[idx].mean())


def test_make_splits_partitions_train_and_keeps_test() -> None:
    ds = index_dataset(train=(300, 100), test=(150, 50))
    splits = make_splits(ds, val_fraction=0.2, seed=0)
    assert not set(splits.train) & set(splits.val)
    np.testing.assert_array_equal(
        np.sort(np.concatenate([splits.train, splits.val])), ds.indices("train")
    )
    np.testing.assert_array_equal(np.sort(splits.test), ds.indices("test"))


def test_make_splits_is_stratified() -> None:
    ds = index_dataset(train=(300, 100), test=(150, 50))
    splits = make_splits(ds, val_fraction=0.2, seed=0)
    train_share = fake_share(ds, ds.indices("train"))
    assert abs(fake_share(ds, splits.val) - train_share) <= 1 / len(splits.val)
    assert abs(fake_share(ds, splits.train) - train_share) <= 1 / len(splits.train)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.33])
def test_make_splits_val_fraction(fraction: float) -> None:
    ds = index_dataset(train=(123, 77), test=(10, 10))
    splits = make_splits(ds, val_fraction=fraction, seed=1)
    assert abs(len(splits.val) - fraction * 200) <= 1


def test_make_splits_is_seeded() -> None:
    ds = index_dataset(train=(200, 200), test=(50, 50))
    first = make_splits(ds, 0.2, seed=7, max_test_images=40)
    again = make_splits(ds, 0.2, seed=7, max_test_images=40)
    other = make_splits(ds, 0.2, seed=8, max_test_images=40)
    np.testing.assert_array_equal(first.train, again.train)
    np.testing.assert_array_equal(first.val, again.val)
    np.testing.assert_array_equal(first.test, again.test)
    assert not np.array_equal(first.val, other.val)
    assert not np.array_equal(first.test, other.test)


@pytest.mark.parametrize("size", [40, 101, 8])
def test_max_train_images_is_a_stratified_subset(size: int) -> None:
    ds = index_dataset(train=(300, 100), test=(30, 10))
    splits = make_splits(ds, val_fraction=0.25, seed=0, max_train_images=size)
    used = np.concatenate([splits.train, splits.val])
    assert abs(len(used) - size) <= 1
    assert set(used) <= set(ds.indices("train"))
    assert set(ds.labels[used]) == {0, 1}
    if size >= 40:
        assert abs(fake_share(ds, used) - 0.25) <= 1 / size + 1e-9
    np.testing.assert_array_equal(np.sort(splits.test), ds.indices("test"))


@pytest.mark.parametrize("size", [20, 49, 2])
def test_max_test_images_is_a_stratified_subset(size: int) -> None:
    ds = index_dataset(train=(40, 40), test=(150, 50))
    splits = make_splits(ds, val_fraction=0.25, seed=0, max_test_images=size)
    assert abs(len(splits.test) - size) <= 1
    assert len(set(splits.test)) == len(splits.test)
    assert set(splits.test) <= set(ds.indices("test"))
    assert set(ds.labels[splits.test]) == {0, 1}
    if size >= 20:
        assert abs(fake_share(ds, splits.test) - 0.25) <= 1 / size + 1e-9
    assert len(splits.train) + len(splits.val) == 80


def test_max_images_larger_than_split_keeps_everything() -> None:
    ds = index_dataset(train=(30, 30), test=(20, 20))
    splits = make_splits(ds, 0.2, seed=0, max_train_images=1000, max_test_images=1000)
    assert len(splits.train) + len(splits.val) == 60
    assert len(splits.test) == 40


def test_make_splits_too_small_for_validation() -> None:
    ds = index_dataset(train=(2, 2), test=(2, 2))
    with pytest.raises(DataError, match="validation"):
        make_splits(ds, val_fraction=0.1, seed=0)


# -- cache -------------------------------------------------------------------------------------
@pytest.fixture
def decode_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts calls of the real decode_image made by the data module."""
    calls: list[int] = []
    real = data_module.decode_image

    def counting(data: bytes):
        calls.append(1)
        return real(data)

    monkeypatch.setattr(data_module, "decode_image", counting)
    return calls


def test_second_load_uses_the_cache(
    small_dir: Path, cache_dir: Path, decode_calls: list[int]
) -> None:
    first = load(small_dir, cache_dir)
    n = len(_files(small_dir))
    assert len(decode_calls) == n
    assert any(cache_dir.iterdir())
    second = load(small_dir, cache_dir)
    assert len(decode_calls) == n  # nothing decoded again
    assert second.digest == first.digest
    assert second.report == first.report
    for name in ("images", "labels", "splits", "hashes", "paths"):
        np.testing.assert_array_equal(getattr(second, name), getattr(first, name))


def test_default_cache_dir_is_the_environment_variable(
    small_dir: Path, cache_dir: Path, decode_calls: list[int]
) -> None:
    load_dataset(small_dir, progress=False)
    assert cache_dir.is_dir() and any(cache_dir.iterdir())
    load_dataset(small_dir, progress=False)
    assert len(decode_calls) == len(_files(small_dir))


def test_changed_file_rebuilds_the_cache(
    small_dir: Path, cache_dir: Path, decode_calls: list[int]
) -> None:
    first = load(small_dir, cache_dir)
    n = len(decode_calls)
    target = small_dir / "train" / "REAL" / "0000.jpg"
    before = target.stat()
    target.write_bytes(jpeg_bytes(synthetic_image(0, np.random.default_rng(1234))))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
    second = load(small_dir, cache_dir)
    assert len(decode_calls) == 2 * n
    assert second.digest != first.digest
    changed = [
        i
        for i, p in enumerate(second.paths)
        if Path(str(p)).name == "0000.jpg" and "train/REAL" in str(p).replace("\\", "/")
    ]
    assert len(changed) == 1
    assert bytes(second.hashes[changed[0]]) not in {bytes(h) for h in first.hashes}


@pytest.mark.parametrize("damage", ["truncated arrays", "missing arrays", "garbage meta"])
def test_damaged_cache_is_rebuilt(
    damage: str, small_dir: Path, cache_dir: Path, decode_calls: list[int]
) -> None:
    """An unreadable cache entry is decoded again rather than crashing the run."""
    first = load(small_dir, cache_dir)
    n = len(decode_calls)
    (entry,) = [p for p in cache_dir.iterdir() if p.name.startswith("cifake-")]
    arrays = entry / "arrays.npz"
    if damage == "truncated arrays":
        arrays.write_bytes(arrays.read_bytes()[: arrays.stat().st_size // 2])
    elif damage == "missing arrays":
        arrays.unlink()
    else:
        (entry / "meta.json").write_text("{not json")
    second = load(small_dir, cache_dir)
    assert len(decode_calls) == 2 * n
    assert second.digest == first.digest
    load(small_dir, cache_dir)  # and the rebuilt entry is used again
    assert len(decode_calls) == 2 * n


def test_fingerprint_changes_when_a_file_is_added(small_dir: Path) -> None:
    before = fingerprint(small_dir)
    assert fingerprint(small_dir) == before
    (small_dir / "test" / "FAKE" / "extra.jpg").write_bytes(
        jpeg_bytes(synthetic_image(1, np.random.default_rng(5)))
    )
    assert fingerprint(small_dir) != before


def test_fingerprint_of_an_archive_changes_with_its_bytes(small_dir: Path, tmp_path: Path):
    archive = make_zip(small_dir, tmp_path / "c.zip")
    before = fingerprint(archive)
    (small_dir / "test" / "FAKE" / "extra.jpg").write_bytes(
        jpeg_bytes(synthetic_image(1, np.random.default_rng(5)))
    )
    make_zip(small_dir, archive)
    assert fingerprint(archive) != before
