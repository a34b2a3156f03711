"""Malformed and foreign files a hostile client may send, built here byte by byte.

Each builder returns file bytes that reach a decoder bug or a decoder outside the supported
formats in Pillow, so tests can check that every one of them ends as a short 400 answer.
"""

from __future__ import annotations

import io
import struct

from PIL import Image

TIFF_STRIP_OFFSETS = 273
TIFF_ASCII = 2


def tiff_with_text_strip_offsets() -> bytes:
    """A TIFF whose StripOffsets tag is typed ASCII: Pillow raises TypeError loading it."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for index in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * index
        if struct.unpack_from("<H", data, entry)[0] == TIFF_STRIP_OFFSETS:
            struct.pack_into("<H", data, entry + 2, TIFF_ASCII)
    return bytes(data)


def im_with_bad_size_line() -> bytes:
    """A Pillow IM header whose size line is not two numbers."""
    header = b"Image type: RGB image\r\nImage size (x*y): 32*abc\r\n\x1a"
    return header.ljust(512, b"\x00") + bytes(32 * 32 * 3)


def dds_without_pixel_format_flags() -> bytes:
    """A DDS header (124 bytes after the magic) whose pixel-format flags are zero."""
    header = bytearray(124)
    struct.pack_into("<IIII", header, 0, 124, 0x1007, 32, 32)  # size, flags, height, width
    struct.pack_into("<II", header, 72, 32, 0)  # pixel format: size 32, flags 0
    return b"DDS " + bytes(header) + bytes(32 * 32 * 4)


def eps() -> bytes:
    """An Encapsulated PostScript file: Pillow would hand it to Ghostscript."""
    return (
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n%%EndComments\n"
        b"newpath 0 0 moveto 32 32 lineto stroke\nshowpage\n%%EOF\n"
    )


def png16(width: int, height: int) -> bytes:
    """A black 16-bit PNG: a few kilobytes that decode to ``width * height`` samples."""
    buffer = io.BytesIO()
    Image.new("I;16", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def pillow_file(fmt: str, mode: str = "RGB") -> bytes:
    """A small valid image in any format Pillow can write."""
    buffer = io.BytesIO()
    Image.new(mode, (32, 32), (200, 30, 30) if mode == "RGB" else 0).save(buffer, fmt)
    return buffer.getvalue()


#: Formats Pillow writes but the detector refuses, with the name the refusal gives (or None
#: where the file carries no signature to name it by).
FOREIGN_FORMATS = {
    "ICO": "ICO",
    "PPM": "Netpbm",
    "TGA": None,
    "PCX": None,
    "SGI": "SGI",
    "IM": "IM",
    "DDS": "DDS",
    "QOI": "QOI",
    "EPS": "EPS",
}
