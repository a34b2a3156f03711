"""One scoring request -> the uint8 (N, 32, 32, 3) batch the detector sees.

The served model takes a single column, ``image``. Each item is either an image file encoded as
base64 text (JPEG, PNG, WebP, BMP, GIF or TIFF; any size; a ``data:image/...;base64,`` prefix is
allowed) or a 32x32x3 array of integers in 0..255. Files go through
:func:`cifake_mlflow.data.decode.decode_image`, the function that built the training cache, so an
image scored over HTTP is prepared exactly as training prepared CIFAKE.

MLflow hands the column over in several shapes, depending on the request format
(``dataframe_split`` and ``dataframe_records`` give one row per image; ``inputs`` and
``instances`` may give one row holding a list of images, or a bare 4-D array): :func:`items`
flattens them all into one list. Every problem raises :class:`BadInput`, which the scoring server
answers with HTTP 400 and a short message that names the item and the reason.

Limits per request: :data:`MAX_BATCH` images, :data:`MAX_FILE_BYTES` per file and
:data:`MAX_REQUEST_PIXELS` decoded pixels in all (each file's size is read from its header, so
an image over the budget is refused before it is decoded); per image, those of
:mod:`cifake_mlflow.data.decode`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from cifake_mlflow.data.decode import (
    MAX_PIXELS,
    NATIVE_SIZE,
    ImageDecodeError,
    PixelBudget,
    decode_image,
)
from cifake_mlflow.tracking.schema import COLUMN, MAX_BATCH

#: Bytes per encoded image file; larger files are refused before decoding.
MAX_FILE_BYTES = 20 * 1024 * 1024
#: Decoded pixels per request, all files together: two of the largest images one may send.
#: This bounds the CPU one request can hold the server for (a few seconds on 2 cores).
MAX_REQUEST_PIXELS = 2 * MAX_PIXELS
_SHAPE = (NATIVE_SIZE, NATIVE_SIZE, 3)


class ModelError(MlflowException):
    """An error the served model answers with; its message is set once, and stays short.

    MLflow's scoring server rewrites the message of any ``MlflowException`` a model raises to
    ``Failed to predict data '<the request>'. Error: ...`` (``mlflow.pyfunc.scoring_server``,
    ``invocations``), so a 20 MB bad request would get a 20 MB reply. That rewrite is ignored:
    the reply carries only the reason.
    """

    @property
    def message(self) -> str:
        return self._reason

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_reason"):
            self._reason = value


class BadInput(ModelError):
    """A request the model cannot score; MLflow's server turns it into HTTP 400."""

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)


def images_from(model_input: Any) -> np.ndarray:
    """Validate and decode a whole request; raises :class:`BadInput` naming the bad item."""
    cells = items(model_input)
    if not cells:
        raise BadInput(
            f"empty batch: send at least one image in column {COLUMN!r} "
            "(base64 image file or 32x32x3 uint8 array)"
        )
    if len(cells) > MAX_BATCH:
        raise BadInput(
            f"batch of {len(cells)} images exceeds the limit of {MAX_BATCH} per request; "
            "split it into smaller requests"
        )
    budget = PixelBudget(MAX_REQUEST_PIXELS)
    return np.stack([to_pixels(cell, index, budget) for index, cell in enumerate(cells)])


def items(model_input: Any) -> list[Any]:
    """The request's images as one flat list, whatever shape MLflow passed them in."""
    if isinstance(model_input, pd.DataFrame):
        if COLUMN not in model_input.columns:
            raise BadInput(
                f"no {COLUMN!r} column (got {list(model_input.columns)}); put base64 image "
                f"files or 32x32x3 uint8 arrays in column {COLUMN!r}"
            )
        cells = model_input[COLUMN].tolist()
    elif isinstance(model_input, Mapping):
        if COLUMN not in model_input:
            raise BadInput(f"no {COLUMN!r} input (got {list(model_input)})")
        value = model_input[COLUMN]
        cells = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    else:
        cells = list(model_input)
    if len(cells) == 1 and _is_empty_list(cells[0]):
        return []  # ``{"instances": []}`` and ``{"inputs": []}`` arrive as one empty cell
    flat: list[Any] = []
    for cell in cells:
        flat.extend(_unpack(cell))
    return flat


def _is_empty_list(cell: Any) -> bool:
    return isinstance(cell, (list, tuple, np.ndarray)) and len(cell) == 0


def _unpack(cell: Any) -> list[Any]:
    """A cell is one image, or (``inputs``/``instances`` forms) a list of images."""
    if not isinstance(cell, (list, tuple, np.ndarray)) or not len(cell):
        return [cell]
    if all(isinstance(c, (str, bytes)) for c in cell):
        return list(cell)
    try:
        nested = np.asarray(cell[0]).ndim == 3  # a list of 3-D pixel arrays
    except ValueError:
        nested = False
    return list(cell) if nested else [cell]


def to_pixels(cell: Any, index: int = 0, budget: PixelBudget | None = None) -> np.ndarray:
    """One item -> uint8 (32, 32, 3); raises :class:`BadInput` that names ``index``."""
    if isinstance(cell, str):
        return _decode(_unbase64(cell, index), index, budget)
    if isinstance(cell, (bytes, bytearray)):
        return _decode(bytes(cell), index, budget)
    if isinstance(cell, (list, tuple, np.ndarray)):
        return _pixel_array(cell, index)
    raise BadInput(
        f"item {index}: expected a base64 image file or a 32x32x3 uint8 array, "
        f"got {type(cell).__name__}"
    )


def _unbase64(text: str, index: int) -> bytes:
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    if len(text) > MAX_FILE_BYTES * 4 // 3 + 4:
        raise BadInput(
            f"item {index}: file is larger than the limit of {MAX_FILE_BYTES // 2**20} MiB"
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadInput(f"item {index}: invalid base64 ({exc})") from None


def _decode(data: bytes, index: int, budget: PixelBudget | None) -> np.ndarray:
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(
            f"item {index}: file is larger than the limit of {MAX_FILE_BYTES // 2**20} MiB"
        )
    try:
        return decode_image(data, budget)[0]
    except ImageDecodeError as exc:
        raise BadInput(f"item {index}: {exc}") from None


def _pixel_array(cell: Any, index: int) -> np.ndarray:
    try:
        array = np.asarray(cell)
    except ValueError:
        raise BadInput(f"item {index}: ragged pixel array; expected shape {_SHAPE}") from None
    if array.shape != _SHAPE:
        raise BadInput(f"item {index}: pixel array has shape {array.shape}, expected {_SHAPE}")
    whole = array.dtype.kind in "iu" or (
        array.dtype.kind == "f" and bool(np.all(np.mod(array, 1) == 0))
    )
    if not whole:
        raise BadInput(f"item {index}: pixel values must be integers in 0..255, got {array.dtype}")
    if array.min() < 0 or array.max() > 255:
        raise BadInput(
            f"item {index}: pixel values must be in 0..255, got {array.min()}..{array.max()}"
        )
    return array.astype(np.uint8)


def threshold_from(params: Mapping[str, Any] | None, default: float) -> float:
    """The request's ``threshold`` param (or the model's), checked to lie in [0, 1]."""
    value = (params or {}).get("threshold", default)
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        raise BadInput(f"params.threshold={value!r} is not a number") from None
    if not 0.0 <= threshold <= 1.0:
        raise BadInput(f"params.threshold={threshold} is outside [0, 1]")
    return threshold
