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

from cifake_mlflow.serving import ServingError, score

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

    from cifake_mlflow.payload import frame

    model = mlflow.pyfunc.load_model(model_uri)
    params = None if threshold is None else {"threshold": threshold}

    def scorer(files: list[bytes]) -> pd.DataFrame:
        try:
            return model.predict(frame(files), params=params)
        except MlflowException as exc:
            raise BadFile(exc.message.rsplit("Error: ", 1)[-1]) from None

    return scorer


def predict_rows(
    files: Sequence[Path], scorer: Scorer, batch_size: int = 64, progress: bool = True
) -> Iterator[list[dict[str, Any]]]:
    """Yield one list of rows per batch, in file order."""
    with tqdm(total=len(files), unit="img", desc="scoring", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            batch = list(files[start : start + batch_size])
            yield _score_batch(batch, scorer)
            bar.update(len(batch))


def _score_batch(batch: list[Path], scorer: Scorer) -> list[dict[str, Any]]:
    try:
        answer = scorer([p.read_bytes() for p in batch])
    except BadFile as exc:
        if len(batch) == 1:
            return [_error_row(batch[0], exc)]
        return [_score_one(p, scorer) for p in batch]
    return [_row(p, a) for p, a in zip(batch, answer.to_dict("records"), strict=True)]


def _score_one(path: Path, scorer: Scorer) -> dict[str, Any]:
    try:
        return _row(path, scorer([path.read_bytes()]).to_dict("records")[0])
    except BadFile as exc:
        return _error_row(path, exc)


def _error_row(path: Path, exc: BadFile) -> dict[str, Any]:
    message = str(exc).removeprefix("item 0: ")
    return {"path": str(path), "prob_fake": None, "label": None, "error": message}


def _row(path: Path, answer: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": str(path),
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
