"""Request parsing for the served model, without a server: every shape MLflow hands over."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest
from conftest import jpeg_bytes, synthetic_image
from hostile import png16

from cifake_mlflow.data.decode import MAX_PIXELS, decode_image
from cifake_mlflow.serving.payload import (
    MAX_REQUEST_PIXELS,
    BadInput,
    images_from,
    items,
    threshold_from,
    to_pixels,
)
from cifake_mlflow.tracking.schema import MAX_BATCH, frame

pytestmark = pytest.mark.fast  # unit tests: the fast lane (pytest -m fast)


@pytest.fixture
def files() -> list[bytes]:
    rng = np.random.default_rng(0)
    return [jpeg_bytes(synthetic_image(i % 2, rng)) for i in range(3)]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_every_shape_mlflow_passes_flattens_to_the_same_images(files: list[bytes]) -> None:
    expected = np.stack([decode_image(f)[0] for f in files])
    texts = [b64(f) for f in files]
    shapes = {
        "one row per file": pd.DataFrame({"image": texts}),
        "one row holding a list": pd.DataFrame({"image": [texts]}),
        "one row holding an array": pd.DataFrame({"image": [np.array(texts)]}),
        "dict of list": {"image": texts},
        "pixel rows": frame(expected),
        "pixel lists": pd.DataFrame({"image": [p.tolist() for p in expected]}),
        "a 4-d array in one cell": pd.DataFrame({"image": [expected]}),
        "file bytes": frame(files),
        "data URLs": pd.DataFrame({"image": [f"data:image/jpeg;base64,{t}" for t in texts]}),
    }
    for name, model_input in shapes.items():
        got = images_from(model_input)
        assert got.dtype == np.uint8, name
        np.testing.assert_array_equal(got, expected, err_msg=name)


def test_items_keeps_one_entry_per_image(files: list[bytes]) -> None:
    assert len(items(pd.DataFrame({"image": [b64(f) for f in files]}))) == 3
    assert len(items({"image": np.zeros((5, 32, 32, 3), np.uint8)})) == 5


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("%%%", "item 4: invalid base64"),
        (b64(b"plain text, no image"), "item 4: not an image"),
        (np.zeros((32, 32), np.uint8), r"item 4: pixel array has shape \(32, 32\)"),
        (np.full((32, 32, 3), 256), r"item 4: pixel values must be in 0..255, got 256..256"),
        (np.full((32, 32, 3), 0.5), "item 4: pixel values must be integers"),
        (None, "item 4: expected a base64 image file or a 32x32x3 uint8 array, got NoneType"),
        (3.5, "got float"),
    ],
)
def test_bad_items_name_their_index(item: object, message: str) -> None:
    with pytest.raises(BadInput, match=message):
        to_pixels(item, 4)


def test_whole_float_pixels_are_accepted() -> None:
    pixels = to_pixels(np.full((32, 32, 3), 7.0))
    assert pixels.dtype == np.uint8 and int(pixels.max()) == 7


def test_batch_limits_and_missing_column(files: list[bytes]) -> None:
    with pytest.raises(BadInput, match="empty batch"):
        images_from(pd.DataFrame({"image": []}))
    with pytest.raises(BadInput, match=f"batch of {MAX_BATCH + 1} images exceeds"):
        images_from(pd.DataFrame({"image": ["x"] * (MAX_BATCH + 1)}))
    with pytest.raises(BadInput, match=r"no 'image' column \(got \['img'\]\)"):
        images_from(pd.DataFrame({"img": [b64(files[0])]}))


def test_bad_input_is_an_http_400() -> None:
    assert BadInput("x").get_http_status_code() == 400


def test_threshold_param_is_checked() -> None:
    assert threshold_from(None, 0.3) == 0.3
    assert threshold_from({"threshold": "0.7"}, 0.3) == 0.7
    with pytest.raises(BadInput, match=r"params.threshold=-0.1 is outside \[0, 1\]"):
        threshold_from({"threshold": -0.1}, 0.5)
    with pytest.raises(BadInput, match=r"params.threshold='high' is not a number"):
        threshold_from({"threshold": "high"}, 0.5)


def test_files_over_the_size_limit_are_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch, files: list[bytes]
) -> None:
    from cifake_mlflow.serving import payload

    monkeypatch.setattr(payload, "MAX_FILE_BYTES", 2**20)  # 1 MiB: the real 20 MiB is slow
    big = files[0] + b"\0" * 2**20  # a JPEG with trailing bytes: valid, but too large
    for item in (big, b64(big)):
        with pytest.raises(BadInput, match="item 2: file is larger than the limit of 1 MiB"):
            to_pixels(item, 2)
    assert to_pixels(files[0], 2).shape == (32, 32, 3)


def test_error_message_is_not_rewritten_to_echo_the_request() -> None:
    """MLflow's server sets ``e.message = f"Failed to predict data '{data}' ..."``: ignored."""
    error = BadInput("item 3: not an image")
    error.message = f"Failed to predict data '{'x' * 10**6}'. \nError: {error.message}"
    assert error.message == "item 3: not an image"
    assert len(error.serialize_as_json()) < 200
    assert error.get_http_status_code() == 400


def test_empty_instances_and_inputs_are_an_empty_batch() -> None:
    # What MLflow hands the model for {"instances": []} and {"inputs": []}.
    for model_input in (pd.DataFrame({"image": [[]]}), pd.DataFrame({"image": [np.array([])]})):
        with pytest.raises(BadInput, match="empty batch"):
            images_from(model_input)


def test_request_pixel_budget_names_the_item_that_overspends() -> None:
    side = int(MAX_PIXELS**0.5)
    big = png16(side, side)
    per_request = MAX_REQUEST_PIXELS // (side * side)
    assert per_request >= 2
    with pytest.raises(BadInput, match=rf"item {per_request}: .* past its limit of"):
        images_from(frame([big] * (per_request + 1)))
