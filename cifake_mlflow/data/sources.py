"""Where CIFAKE's files come from: a folder, a .zip/.tar.gz of it, or a folder of archives.

Each source yields :class:`Entry` objects (split, label, readable location, a reader of the
bytes) in the Kaggle layout ``train|test/REAL|FAKE``; nothing here decodes an image.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

SPLITS = ("train", "test")
CLASSES = ("REAL", "FAKE")  # index == label: REAL=0, FAKE=1 (the positive class)
FAKE = 1
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
LAYOUT_HINT = (
    "expected the Kaggle CIFAKE layout train/REAL, train/FAKE, test/REAL, test/FAKE "
    "(as a folder, a .zip/.tar.gz of it, or a folder of such archives)"
)


class DataError(ValueError):
    """The dataset cannot be used as it is; the message says what is wrong and what to do."""


@dataclass(frozen=True)
class Entry:
    """One image file of the source, not yet decoded."""

    split: str
    label: int
    path: str  # readable location, e.g. "cifake-test.tar.gz:test/FAKE/0001.jpg"
    read: Callable[[], bytes]


# -- discovering files -----------------------------------------------------------------------
def _classify(parts: tuple[str, ...]) -> tuple[str, int] | None:
    """``(split, label)`` if the path ends in ``train|test/REAL|FAKE/<file>``."""
    if len(parts) < 3 or parts[-1].startswith("."):
        return None
    split, cls = parts[-3].lower(), parts[-2].upper()
    if split in SPLITS and cls in CLASSES:
        return split, CLASSES.index(cls)
    return None


def _class_dir(parts: tuple[str, ...]) -> tuple[str, int] | None:
    if len(parts) < 2:
        return None
    split, cls = parts[-2].lower(), parts[-1].upper()
    return (split, CLASSES.index(cls)) if split in SPLITS and cls in CLASSES else None


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


def _iter_archive(path: Path, seen: set[tuple[str, int]]) -> Iterator[Entry]:
    try:
        if path.name.lower().endswith(".zip"):
            yield from _iter_zip(path, seen)
        else:
            yield from _iter_tar(path, seen)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as exc:
        raise DataError(
            f"cannot read archive {path}: {exc}. The file is damaged or not an archive; "
            "download it again, or extract it and pass the folder"
        ) from None


def _iter_zip(path: Path, seen: set[tuple[str, int]]) -> Iterator[Entry]:
    archive = zipfile.ZipFile(path)
    for info in archive.infolist():
        parts = PurePosixPath(info.filename).parts
        if info.is_dir():
            if (hit := _class_dir(parts)) is not None:
                seen.add(hit)
            continue
        if (hit := _classify(parts)) is not None:
            seen.add(hit)
            name = info.filename

            def read(name: str = name) -> bytes:
                return archive.read(name)

            yield Entry(hit[0], hit[1], f"{path.name}:{name}", read)


def _iter_tar(path: Path, seen: set[tuple[str, int]]) -> Iterator[Entry]:
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            parts = PurePosixPath(member.name).parts
            if member.isdir():
                if (hit := _class_dir(parts)) is not None:
                    seen.add(hit)
                continue
            if not member.isfile() or (hit := _classify(parts)) is None:
                continue
            seen.add(hit)
            fileobj = archive.extractfile(member)
            data = fileobj.read() if fileobj is not None else b""
            yield Entry(hit[0], hit[1], f"{path.name}:{member.name}", lambda d=data: d)


def _iter_folder(root: Path, seen: set[tuple[str, int]]) -> Iterator[Entry]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        rel_parts = here.relative_to(root).parts
        if (hit := _class_dir(rel_parts)) is not None:
            seen.add(hit)
        for name in sorted(filenames):
            file = here / name
            if is_archive(file) and _class_dir(rel_parts) is None:
                yield from _iter_archive(file, seen)
                continue
            if (hit := _classify((*rel_parts, name))) is not None:
                yield Entry(hit[0], hit[1], str(file.relative_to(root)), file.read_bytes)


def iter_entries(source: Path, seen: set[tuple[str, int]]) -> Iterator[Entry]:
    """Every image file of ``source``; ``seen`` collects the (split, class) folders met."""
    if not source.exists():
        raise DataError(
            f"dataset not found: {source} does not exist. Pass --data PATH (or -P data=PATH) "
            f"pointing at CIFAKE; {LAYOUT_HINT}. `cifake data download` fetches it from Kaggle"
        )
    if source.is_dir():
        yield from _iter_folder(source, seen)
    elif is_archive(source):
        yield from _iter_archive(source, seen)
    else:
        raise DataError(f"{source} is neither a folder nor a .zip/.tar.gz archive; {LAYOUT_HINT}")
