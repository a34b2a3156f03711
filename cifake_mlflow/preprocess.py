"""Any image file -> the 32x32 uint8 RGB array the detector sees.

This is the ONE preprocessing function: the dataset cache, evaluation and the served model all
call :func:`decode_image`, so a picture scored over HTTP goes through exactly what training saw.
CIFAKE's images are 32x32 (CIFAR-10 photos, and Stable Diffusion outputs downscaled to 32x32), so
other sizes are brought to the training distribution the same way: centre-cropped to a square,
then downscaled with an antialiasing filter.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Native CIFAKE side; the model resizes from here to its own input size.
NATIVE_SIZE = 32
#: Images with more pixels than this are refused before decoding (decompression-bomb guard).
MAX_PIXELS = 40_000_000


class ImageDecodeError(ValueError):
    """The bytes are not a usable image; the message says why."""


def decode_image(data: bytes) -> tuple[np.ndarray, bool]:
    """Decode image bytes to ``(uint8 array (32, 32, 3), was_resized)``.

    Handles JPEG, PNG, WebP, BMP, GIF (first frame), any mode (RGBA, grayscale, palette, CMYK,
    16-bit) and EXIF orientation. Raises :class:`ImageDecodeError` on anything unreadable,
    truncated, or larger than :data:`MAX_PIXELS`.
    """
    if not data:
        raise ImageDecodeError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_pixels(image)
            image.seek(0)
            image.load()
            rgb = to_rgb(ImageOps.exif_transpose(image))
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"too many pixels: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"unreadable or truncated image: {exc}") from None
    resized = rgb.size != (NATIVE_SIZE, NATIVE_SIZE)
    if resized:
        rgb = downscale(rgb)
    return np.asarray(rgb, dtype=np.uint8), resized


def _check_pixels(image: Image.Image) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(
            f"too many pixels: {width}x{height} exceeds the limit of {MAX_PIXELS:,}"
        )


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        # 16-bit modes are full-range; mode "I" carries no scale, so guess from the values.
        wide = image.mode != "I" or array.max() > 255
        peak = 65535.0 if wide else 255.0
        image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def downscale(image: Image.Image) -> Image.Image:
    """Centre-crop to a square and resize to 32x32 with a Lanczos (antialiased) filter."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.crop((left, top, left + side, top + side))
    return square.resize((NATIVE_SIZE, NATIVE_SIZE), Image.Resampling.LANCZOS, reducing_gap=3.0)
