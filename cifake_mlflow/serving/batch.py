"""Score image files and folders with a detector -> one CSV or JSON-lines row per file.

Scoring goes either through a running server (:func:`http_scorer`) or through a model loaded in
this process (:func:`local_scorer`); both take the same file bytes and give the same answer,
because both end in the served pyfunc. Files are sent in batches; when a batch is refused for
bad input, its files are retried one at a time so that one broken file costs only its own row
(``error`` says why) and never the batch. Rows are written and flushed batch by batch, so an
interrupted run keeps what it scored.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd
from mlflow.exceptions import MlflowException
from tqdm.auto import tqdm

from cifake_mlflow.serving.server import ServingError, score

#: File suffixes picked up when a folder is given (files named explicitly are always scored).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif"}
)
FIELDS = ("path", "prob_fake", "label", "error")

#: A scorer takes file bytes and returns one (prob_fake, label, threshold) row per file.
Scorer = Callable[[list[bytes]], pd.DataFrame]


class BadFile(ValueError):
    """The scorer refused the request because of its content (HTTP 400 or a payload error)."""


def find_images(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus image files found recursively in folders, in sorted order."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return found


def http_scorer(url: str, threshold: float | None = None) -> Scorer:
    """Score through a running ``mlflow models serve`` at ``url``."""

    def scorer(files: list[bytes]) -> pd.DataFrame:
        try:
            return score(url, files, threshold)
        except ServingError as exc:
            if exc.status == 400:
                raise BadFile(str(exc)) from None
            raise

    return scorer


def local_scorer(model_uri: str, threshold: float | None = None) -> Scorer:
    """Load ``model_uri`` as pyfunc in this process and score with it."""
    import mlflow

    from cifake_mlflow.tracking.schema import frame

    model = mlflow.pyfunc.load_model(model_uri)
    params = None if threshold is None else {"threshold": threshold}

    def scorer(files: list[bytes]) -> pd.DataFrame:
        try:
            return model.predict(frame(files), params=params)
        except MlflowException as exc:  # in-process, the model's own message, unprefixed
            raise BadFile(exc.message) from None

    return scorer


def predict_rows(
    files: Sequence[Path], scorer: Scorer, batch_size: int = 64, progress: bool = True
) -> Iterator[list[dict[str, Any]]]:
    """Yield one list of rows per batch, in file order."""
    with tqdm(total=len(files), unit="img", desc="scoring", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            batch = list(files[start : start + batch_size])
            yield score_files([str(p) for p in batch], [p.read_bytes() for p in batch], scorer)
            bar.update(len(batch))


def score_files(names: list[str], files: list[bytes], scorer: Scorer) -> list[dict[str, Any]]:
    """One row per file (``FIELDS``), in order; a file the scorer refuses gets an error row.

    The batch is scored in one call; when it is refused, its files are scored one at a time,
    so one broken file costs only its own row. Every batch scorer (``cifake predict`` and the
    Spark job) goes through here, so a file gets the same row on each.
    """
    try:
        answer = scorer(files)
    except BadFile as exc:
        if len(files) == 1:
            return [_error_row(names[0], exc)]
        return [_score_one(name, data, scorer) for name, data in zip(names, files, strict=True)]
    return [_row(n, a) for n, a in zip(names, answer.to_dict("records"), strict=True)]


def _score_one(name: str, data: bytes, scorer: Scorer) -> dict[str, Any]:
    try:
        return _row(name, scorer([data]).to_dict("records")[0])
    except BadFile as exc:
        return _error_row(name, exc)


def _error_row(name: str, exc: BadFile) -> dict[str, Any]:
    message = str(exc).removeprefix("item 0: ")
    return {"path": name, "prob_fake": None, "label": None, "error": message}


def _row(name: str, answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": name,
        "prob_fake": float(answer["prob_fake"]),
        "label": answer["label"],
        "error": "",
    }


class RowWriter:
    """Writes rows as CSV (with a header) or JSON lines, flushing after every batch."""

    def __init__(self, stream: IO[str], fmt: str) -> None:
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"format={fmt!r}: choose csv or jsonl")
        self.stream, self.fmt = stream, fmt
        self._csv = csv.DictWriter(stream, FIELDS) if fmt == "csv" else None
        if self._csv:
            self._csv.writeheader()

    def write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if self._csv:
                self._csv.writerow(row)
            else:
                self.stream.write(json.dumps(row) + "\n")
        self.stream.flush()


def format_for(output: str, fmt: str | None) -> str:
    """The explicit format, else the output file's suffix (.jsonl/.json -> jsonl), else csv."""
    if fmt:
        return fmt
    return "jsonl" if Path(output).suffix.lower() in (".jsonl", ".json", ".ndjson") else "csv"
