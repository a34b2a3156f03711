"""decode_image: every format and mode to (32, 32, 3) uint8, resizing, EXIF and errors."""

from __future__ import annotations

import io
import struct
import zlib

import hostile
import numpy as np
import pytest
from conftest import jpeg_bytes, synthetic_image
from PIL import Image

from cifake_mlflow.data import decode as preprocess
from cifake_mlflow.data.decode import ImageDecodeError, decode_image

pytestmark = pytest.mark.fast  # unit tests: the fast lane (pytest -m fast)

RED = (220, 30, 30)
BLUE = (30, 30, 220)


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _pil_rgb(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int64)


@pytest.fixture
def pixels() -> np.ndarray:
    return synthetic_image(1, np.random.default_rng(3))


def _check_native(result: tuple[np.ndarray, bool]) -> np.ndarray:
    array, resized = result
    assert array.shape == (32, 32, 3)
    assert array.dtype == np.uint8
    assert resized is False
    return array.astype(np.int64)


# -- formats and modes -------------------------------------------------------------------------
def test_jpeg_32_matches_pil(pixels: np.ndarray) -> None:
    data = jpeg_bytes(pixels)
    array = _check_native(decode_image(data))
    assert np.abs(array - _pil_rgb(data)).max() <= 1
    # and is the picture that was encoded, up to JPEG loss
    assert np.abs(array - pixels.astype(np.int64)).mean() < 8


@pytest.mark.parametrize(
    ("fmt", "options"),
    [("PNG", {}), ("BMP", {}), ("WEBP", {"lossless": True})],
)
def test_lossless_formats_are_exact(pixels: np.ndarray, fmt: str, options: dict) -> None:
    data = _encode(Image.fromarray(pixels), fmt, **options)
    array = _check_native(decode_image(data))
    np.testing.assert_array_equal(array, pixels)


def test_rgba_png_transparency_is_composited_on_white(pixels: np.ndarray) -> None:
    rgba = np.dstack([pixels, np.full((32, 32), 255, np.uint8)])
    rgba[0, 0] = (0, 0, 0, 0)  # fully transparent black pixel
    rgba[5, 5, 3] = 128  # half transparent
    array = _check_native(decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG")))
    assert tuple(array[0, 0]) == (255, 255, 255)
    expected_half = pixels[5, 5].astype(np.float64) * 128 / 255 + 255 * (1 - 128 / 255)
    assert np.abs(array[5, 5] - expected_half).max() <= 2
    np.testing.assert_array_equal(array[10:, 10:], pixels[10:, 10:])


def test_grayscale_png(pixels: np.ndarray) -> None:
    gray = np.asarray(Image.fromarray(pixels).convert("L"))
    array = _check_native(decode_image(_encode(Image.fromarray(gray, "L"), "PNG")))
    for channel in range(3):
        np.testing.assert_array_equal(array[..., channel], gray)


def test_palette_png(pixels: np.ndarray) -> None:
    palette = Image.fromarray(pixels).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    assert palette.mode == "P"
    data = _encode(palette, "PNG")
    array = _check_native(decode_image(data))
    np.testing.assert_array_equal(array, _pil_rgb(data))


def test_palette_with_transparency_is_white() -> None:
    image = Image.new("P", (32, 32), 1)
    image.putpalette([0, 0, 0, *RED] + [0] * (256 - 2) * 3)
    image.info["transparency"] = 0
    image.paste(0, (0, 0, 8, 8))  # transparent corner
    array = _check_native(decode_image(_encode(image, "PNG", transparency=0)))
    assert tuple(array[0, 0]) == (255, 255, 255)
    assert tuple(array[20, 20]) == RED


def test_cmyk_jpeg(pixels: np.ndarray) -> None:
    data = _encode(Image.fromarray(pixels).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    array = _check_native(decode_image(data))
    assert np.abs(array - _pil_rgb(data)).max() <= 1


def test_16_bit_png_keeps_its_range() -> None:
    """A 16-bit grey ramp must come out as the same ramp in 8 bits, not clipped to white."""
    gray8 = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint16)
    image = Image.fromarray(gray8 * 257)
    assert image.mode == "I;16"
    array = _check_native(decode_image(_encode(image, "PNG")))
    for channel in range(3):
        assert np.abs(array[..., channel] - gray8.astype(np.int64)).max() <= 1


def test_16_bit_scale_does_not_depend_on_content() -> None:
    """16-bit samples are on a 0..65535 scale whatever the picture holds.

    Two dark 16-bit images that differ by one unit in one pixel must decode alike, and a dark
    image must stay dark (values <= 255 of 65535 are < 0.4 % brightness).
    """
    dark = (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint16)  # max 255 of 65535
    nudged = dark.copy()
    nudged[0, 0] = 256
    first = _check_native(decode_image(_encode(Image.fromarray(dark), "PNG")))
    second = _check_native(decode_image(_encode(Image.fromarray(nudged), "PNG")))
    assert first.max() <= 1, f"dark 16-bit image decoded with max {first.max()}"
    assert np.abs(first - second)[1:].max() <= 1


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)]
    data = _encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    array = _check_native(decode_image(data))
    assert np.abs(array - np.array(RED)).max() <= 2


# -- resizing ----------------------------------------------------------------------------------
def test_large_image_is_centre_cropped_and_downscaled() -> None:
    """640x480: the 80 px side margins (red) must be cropped off, leaving the blue square."""
    canvas = np.empty((480, 640, 3), np.uint8)
    canvas[:] = RED
    canvas[:, 80:560] = BLUE
    array, resized = decode_image(_encode(Image.fromarray(canvas), "PNG"))
    assert resized is True
    assert array.shape == (32, 32, 3) and array.dtype == np.uint8
    distance_blue = np.abs(array.astype(np.int64) - np.array(BLUE)).sum(axis=-1)
    distance_red = np.abs(array.astype(np.int64) - np.array(RED)).sum(axis=-1)
    assert (distance_blue < distance_red).all()
    assert distance_blue.max() <= 6


def test_downscale_averages_blocks() -> None:
    """A 64x64 image made of 2x2 blocks of a smooth picture downscales to that picture."""
    small = np.kron(
        np.random.default_rng(0).integers(40, 200, size=(4, 4, 3)), np.ones((8, 8, 1))
    ).astype(np.uint8)
    big = np.kron(small, np.ones((2, 2, 1), np.uint8))
    array, resized = decode_image(_encode(Image.fromarray(big), "PNG"))
    assert resized is True
    assert np.abs(array.astype(np.int64) - small).mean() < 3


@pytest.mark.parametrize(("orientation", "left_ends_up"), [(6, "top"), (8, "bottom")])
def test_exif_orientation_is_applied(orientation: int, left_ends_up: str) -> None:
    """A 64x32 image tagged 'rotate 90°' is shown portrait: its left half becomes top/bottom."""
    raw = np.empty((32, 64, 3), np.uint8)
    raw[:, :32] = RED
    raw[:, 32:] = BLUE
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(Image.fromarray(raw), "JPEG", exif=exif, quality=95)
    array, resized = decode_image(data)
    assert resized is True
    array = array.astype(np.int64)
    top = array[:12].reshape(-1, 3).mean(axis=0)
    bottom = array[20:].reshape(-1, 3).mean(axis=0)
    first, second = (RED, BLUE) if left_ends_up == "top" else (BLUE, RED)
    assert np.abs(top - first).max() < 12, top
    assert np.abs(bottom - second).max() < 12, bottom
    # the un-rotated crop would split left/right instead: columns must be uniform
    assert np.abs(array[:12, :12].mean(axis=(0, 1)) - array[:12, 20:].mean(axis=(0, 1))).max() < 12


# -- errors ------------------------------------------------------------------------------------
def test_empty_bytes() -> None:
    with pytest.raises(ImageDecodeError, match="empty"):
        decode_image(b"")


def test_random_bytes_are_not_an_image() -> None:
    data = np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(data)


def test_text_is_not_an_image() -> None:
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(b"hello, this is a text file\n" * 10)


def test_truncated_jpeg() -> None:
    noisy = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    data = jpeg_bytes(noisy)
    decode_image(data)  # the whole file is fine
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) // 2])


def test_too_many_pixels_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _encode(Image.new("RGB", (200, 200), RED), "PNG")
    decode_image(data)  # under the real limit
    monkeypatch.setattr(preprocess, "MAX_PIXELS", 100 * 100)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    message = str(info.value)
    assert "pixels" in message and "limit" in message
    assert "10,000" in message or "10000" in message
    assert "200x200" in message


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` but holds no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_pixel_limit_is_checked_before_decoding() -> None:
    """8000x6000 (48 MP) exceeds the real limit; refused from the header, nothing allocated."""
    data = _png_header_only(8000, 6000)
    assert Image.open(io.BytesIO(data)).size == (8000, 6000)
    assert preprocess.MAX_PIXELS < 8000 * 6000
    with pytest.raises(ImageDecodeError, match="too many pixels"):
        decode_image(data)


def test_decode_error_is_a_value_error() -> None:
    assert issubclass(ImageDecodeError, ValueError)


# -- hostile files: an allow-list of decoders, and only ImageDecodeError out ------------------
@pytest.mark.parametrize(("fmt", "named"), hostile.FOREIGN_FORMATS.items())
def test_formats_outside_the_allow_list_are_refused_by_name(fmt: str, named: str | None) -> None:
    data = hostile.eps() if fmt == "EPS" else hostile.pillow_file(fmt)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(data)
    message = str(info.value)
    assert preprocess.SUPPORTED_FORMATS in message
    assert (f"format {named}" if named else "not in a supported format") in message


@pytest.mark.parametrize(
    ("builder", "message"),
    [
        (hostile.tiff_with_text_strip_offsets, "unreadable or truncated image: TypeError"),
        (hostile.im_with_bad_size_line, "format IM is not supported"),
        (hostile.dds_without_pixel_format_flags, "format DDS is not supported"),
        (hostile.eps, "format EPS/PostScript is not supported"),
    ],
)
def test_files_that_break_pillow_end_as_decode_errors(builder: object, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(builder())


def test_foreign_formats_never_reach_a_pillow_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused from the leading bytes, or by Image.open's own format list: no plugin runs."""
    opened: list[tuple] = []
    real_open = Image.open

    def spy(fp: object, mode: str = "r", formats: tuple | None = None) -> Image.Image:
        opened.append(tuple(formats or ()))
        return real_open(fp, mode, formats)

    monkeypatch.setattr(preprocess.Image, "open", spy)
    for fmt in ("PCX", "TGA"):  # no signature: Pillow is asked, with the allow-list only
        with pytest.raises(ImageDecodeError):
            decode_image(hostile.pillow_file(fmt))
    assert opened == [preprocess.ALLOWED_FORMATS] * 2
    opened.clear()
    with pytest.raises(ImageDecodeError):
        decode_image(hostile.eps())
    assert opened == []


def test_pixel_budget_refuses_from_the_header_and_counts_what_it_lets_through() -> None:
    budget = preprocess.PixelBudget(limit=3000 * 2000)
    wide = hostile.png16(2000, 2000)
    decode_image(wide, budget)
    assert budget.spent == 4_000_000
    with pytest.raises(ImageDecodeError, match=r"past its limit of 6,000,000 decoded pixels"):
        decode_image(wide, budget)
    assert budget.spent == 4_000_000  # the refused image cost nothing
    decode_image(hostile.png16(1000, 2000), budget)
    assert budget.spent == 6_000_000


def test_largest_allowed_16_bit_image_decodes_to_black() -> None:
    side = int(preprocess.MAX_PIXELS**0.5)
    pixels, resized = decode_image(hostile.png16(side, side))
    assert resized and pixels.max() == 0
    with pytest.raises(ImageDecodeError, match="too many pixels: 6300x6300"):
        decode_image(hostile.png16(6300, 6300))
