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
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Native CIFAKE side; the model resizes from here to its own input size.
NATIVE_SIZE = 32
#: Images with more pixels than this are refused from their header, before decoding. A 24 Mpx
#: camera photo passes; a 16-bit PNG of this size takes about a second of CPU to decode.
MAX_PIXELS = 25_000_000
#: The formats decoded, as Pillow names them (its JPEG reader also opens cameras' multi-picture
#: JPEGs). Pillow knows many more; each is refused before any of its code reads the file, since
#: rarely used decoders are where malformed files find bugs, and some hand files to external
#: programs (EPS runs Ghostscript).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
#: How :data:`ALLOWED_FORMATS` reads in messages and docs.
SUPPORTED_FORMATS = "JPEG, PNG, WebP, BMP, GIF or TIFF"
#: Leading bytes of formats that are refused, so that the message can name what was sent.
_FOREIGN_SIGNATURES = (
    (b"%!PS", "EPS/PostScript"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF", "PDF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"qoif", "QOI"),
    (b"DDS ", "DDS"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
    (b"\x01\xda", "SGI"),
    (b"8BPS", "PSD"),
    (b"icns", "ICNS"),
    (b"Image type:", "IM"),
    (b"v/1\x01", "OpenEXR"),
    (b"\x59\xa6\x6a\x95", "Sun raster"),
    (b"gimp xcf", "XCF"),
)


class ImageDecodeError(ValueError):
    """The bytes are not a usable image; the message says why."""


@dataclass
class PixelBudget:
    """Decoded pixels a batch of files may still cost; bounds the CPU time of one request."""

    limit: int
    spent: int = 0

    def spend(self, width: int, height: int) -> None:
        """Count an image from its header; refuse it, undecoded, when it would overspend."""
        if self.spent + width * height > self.limit:
            raise ImageDecodeError(
                f"{width}x{height} pixels would bring the request past its limit of "
                f"{self.limit:,} decoded pixels ({self.spent:,} spent by the items before it); "
                "send fewer or smaller images per request"
            )
        self.spent += width * height


def decode_image(data: bytes, budget: PixelBudget | None = None) -> tuple[np.ndarray, bool]:
    """Decode image bytes to ``(uint8 array (32, 32, 3), was_resized)``.

    Decodes :data:`ALLOWED_FORMATS` only: JPEG, PNG, WebP, BMP, GIF (first frame), TIFF (first
    page), in any mode (RGBA, grayscale, palette, CMYK, 16-bit), with EXIF orientation. Raises
    :class:`ImageDecodeError`, and nothing else, on any other format and on anything
    unreadable, truncated, larger than :data:`MAX_PIXELS` or over ``budget``.
    """
    if not data:
        raise ImageDecodeError("empty file")
    refuse_foreign_format(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            _check_pixels(image, budget)
            image.seek(0)
            image.load()
            rgb = to_rgb(ImageOps.exif_transpose(image))
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(
            f"not an image, or not in a supported format; send {SUPPORTED_FORMATS}"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"too many pixels: {exc}") from None
    except Exception as exc:  # a decoder's bug on a malformed file is still a bad file
        raise ImageDecodeError(f"unreadable or truncated image: {_reason(exc)}") from None
    resized = rgb.size != (NATIVE_SIZE, NATIVE_SIZE)
    if resized:
        rgb = downscale(rgb)
    return np.asarray(rgb, dtype=np.uint8), resized


def refuse_foreign_format(data: bytes) -> None:
    """Name a known format outside :data:`ALLOWED_FORMATS` from its leading bytes, and refuse it."""
    head = data[:16]
    name = next((n for sig, n in _FOREIGN_SIGNATURES if head.startswith(sig)), None)
    if name is None and len(head) > 2 and head[:1] == b"P" and head[1:2] in b"1234567":
        name = "Netpbm (PBM/PGM/PPM)"
    if name is None and head[4:8] == b"ftyp":
        name = "HEIF/AVIF"
    if name is None and head.lstrip()[:5] in (b"<?xml", b"<svg ", b"<svg>"):
        name = "SVG"
    if name is not None:
        raise ImageDecodeError(f"format {name} is not supported; send {SUPPORTED_FORMATS}")


def _reason(exc: Exception) -> str:
    """A decoder's complaint in one short line, without any traceback."""
    text = " ".join(str(exc).split())[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _check_pixels(image: Image.Image, budget: PixelBudget | None) -> None:
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ImageDecodeError(
            f"too many pixels: {width}x{height} exceeds the limit of {MAX_PIXELS:,}"
        )
    if budget is not None:
        budget.spend(width, height)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparency is composited onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Integer arithmetic: a 25 Mpx 16-bit image costs half the time and memory of floats.
        array = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        # 16-bit modes are full-range; mode "I" carries no scale, so guess from the values.
        wide = image.mode != "I" or array.max() > 255
        eight = array * 255 // 65535 if wide else array
        image = Image.fromarray(eight.astype(np.uint8), "L")
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
