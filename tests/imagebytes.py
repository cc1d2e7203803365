"""Small encoded images for the decoder tests, and where their header fields sit.

`header_fields` lists (offset, struct format) of the fields a decoder trusts (sizes, depths,
counts, offsets, tag types), so a test can overwrite one with a chosen value. PNG chunks
carry a CRC that Pillow checks; `fix_png_crc` recomputes it so the damage reaches the
decoder instead of stopping at the checksum.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

Field = tuple[int, str]  # byte offset, struct format ("<H", ">I", "B", ...)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def samples(seed: int = 0) -> dict[str, bytes]:
    """Tiny images in every format and a spread of modes, named format/mode."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    deep = Image.fromarray(rng.integers(0, 65535, (6, 8), dtype=np.uint16))
    floats = Image.fromarray(rng.random((6, 8), dtype=np.float32) * 300)
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    animated = io.BytesIO()
    frames[0].save(animated, "GIF", save_all=True, append_images=frames[1:])
    return {
        "png/rgb": encode(rgb, "PNG"),
        "png/rgba": encode(rgb.convert("RGBA"), "PNG"),
        "png/p": encode(rgb.convert("P"), "PNG"),
        "png/la": encode(rgb.convert("LA"), "PNG"),
        "png/i16": encode(deep, "PNG"),
        "png/interlaced": encode(rgb, "PNG", interlace=1),
        "jpeg/rgb": encode(rgb, "JPEG", quality=90),
        "jpeg/l": encode(rgb.convert("L"), "JPEG"),
        "jpeg/cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "jpeg/progressive": encode(rgb, "JPEG", progressive=True),
        "gif/p": encode(rgb, "GIF"),
        "gif/animated": animated.getvalue(),
        "bmp/rgb": encode(rgb, "BMP"),
        "bmp/p": encode(rgb.convert("P"), "BMP"),
        "bmp/1": encode(rgb.convert("1"), "BMP"),
        "webp/lossless": encode(rgb, "WEBP", lossless=True),
        "webp/lossy": encode(rgb.convert("RGBA"), "WEBP", quality=80),
        "tiff/rgb": encode(rgb, "TIFF"),
        "tiff/lzw": encode(rgb, "TIFF", compression="tiff_lzw"),
        "tiff/deflate": encode(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "tiff/packbits": encode(rgb, "TIFF", compression="packbits"),
        "tiff/cmyk": encode(rgb.convert("CMYK"), "TIFF"),
        "tiff/i16": encode(deep, "TIFF"),
        "tiff/f": encode(floats, "TIFF"),
    }


def png_bomb(width: int, height: int) -> bytes:
    """A complete, valid 1-bit PNG of width × height black pixels: a few kB on disk.

    Written by hand because Pillow takes seconds to encode a 120-megapixel image."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    pixels = zlib.compress(row * height, 9)
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def _png(data: bytes) -> list[Field]:
    return [(16, ">I"), (20, ">I"), (24, "B"), (25, "B"), (26, "B"), (27, "B"), (28, "B")]


def fix_png_crc(data: bytearray) -> None:
    """Recompute the CRC of every complete chunk (after the 8-byte signature)."""
    at = 8
    while at + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, at)
        end = at + 8 + length
        if end + 4 > len(data):
            return
        struct.pack_into(">I", data, end, zlib.crc32(data[at + 4 : end]))
        at = end + 4


def _bmp(data: bytes) -> list[Field]:
    return [
        (2, "<I"),
        (10, "<I"),
        (14, "<I"),
        (18, "<i"),
        (22, "<i"),
        (26, "<H"),
        (28, "<H"),
        (30, "<I"),
        (34, "<I"),
        (46, "<I"),
    ]


def _gif(data: bytes) -> list[Field]:
    fields: list[Field] = [(6, "<H"), (8, "<H"), (10, "B"), (11, "B")]
    flags = data[10]
    at = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    while at < len(data) and data[at] == 0x21:  # extension blocks before the image
        at += 2
        while at < len(data) and data[at]:
            at += data[at] + 1
        at += 1
    if at + 11 <= len(data) and data[at] == 0x2C:
        fields += [(at + 1, "<H"), (at + 3, "<H"), (at + 5, "<H"), (at + 7, "<H")]
        fields += [(at + 9, "B"), (at + 10, "B")]
    return fields


def _jpeg(data: bytes) -> list[Field]:
    fields: list[Field] = []
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        (length,) = struct.unpack_from(">H", data, at + 2)
        fields.append((at + 2, ">H"))
        if marker in (0xC0, 0xC2):  # start of frame: precision, height, width, components
            fields += [(at + 4, "B"), (at + 5, ">H"), (at + 7, ">H"), (at + 9, "B")]
            fields += [(at + 10 + i, "B") for i in range(3 * data[at + 9])]
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        at += 2 + length
    return fields


def _jpeg_frame(data: bytes) -> int:
    """Offset of the start-of-frame marker."""
    at = 2
    while data[at + 1] not in (0xC0, 0xC2):
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return at


def _webp(data: bytes) -> list[Field]:
    fields: list[Field] = [(4, "<I"), (16, "<I")]
    chunk = data[12:16]
    if chunk == b"VP8L":
        fields += [(21, "B"), (22, "B"), (23, "B"), (24, "B")]
    elif chunk == b"VP8 ":
        fields += [(20, "B"), (26, "<H"), (28, "<H")]
    elif chunk == b"VP8X":
        fields += [(20, "B"), (24, "<H"), (27, "<H")]
    return fields


def _tiff(data: bytes) -> list[Field]:
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", data, 4)
    fields: list[Field] = [(4, order + "I")]
    if ifd + 2 > len(data):
        return fields
    (count,) = struct.unpack_from(order + "H", data, ifd)
    fields.append((ifd, order + "H"))
    for i in range(min(count, 64)):
        entry = ifd + 2 + 12 * i
        if entry + 12 > len(data):
            break
        fields += [(entry, order + "H"), (entry + 2, order + "H")]
        fields += [(entry + 4, order + "I"), (entry + 8, order + "I")]
    return fields


_LOCATORS = {"png": _png, "bmp": _bmp, "gif": _gif, "jpeg": _jpeg, "webp": _webp, "tiff": _tiff}


def header_fields(kind: str, data: bytes) -> list[Field]:
    """The header fields of `data`, an image of `kind` ("png", "tiff", ...)."""
    return _LOCATORS[kind](data)


def overwrite(kind: str, data: bytes, field: Field, value: int) -> bytes:
    """`data` with one header field set to `value` (masked to the field's width)."""
    at, fmt = field
    size = struct.calcsize(fmt)
    out = bytearray(data)
    if at + size > len(out):
        return bytes(out)
    signed = fmt[-1] in "bhiq"
    bits = 8 * size
    value &= (1 << bits) - 1
    if signed and value >= 1 << (bits - 1):
        value -= 1 << bits
    struct.pack_into(fmt, out, at, value)
    if kind == "png":
        fix_png_crc(out)
    return bytes(out)


def forged_size(kind: str, data: bytes, width: int, height: int) -> bytes:
    """`data` with its header claiming width × height pixels (the pixels are not there)."""
    if kind == "png":
        return overwrite("png", overwrite("png", data, (16, ">I"), width), (20, ">I"), height)
    if kind == "bmp":
        return overwrite("bmp", overwrite("bmp", data, (18, "<i"), width), (22, "<i"), height)
    if kind == "gif":
        out = data
        for (at, fmt), value in zip(_gif(data)[:2], (width, height), strict=True):
            out = overwrite("gif", out, (at, fmt), value)
        image = _gif(data)[4:8]  # the image descriptor's left, top, width, height
        return overwrite("gif", overwrite("gif", out, image[2], width), image[3], height)
    if kind == "jpeg":
        sof = _jpeg_frame(data)
        out = overwrite("jpeg", data, (sof + 5, ">H"), height)
        return overwrite("jpeg", out, (sof + 7, ">H"), width)
    if kind == "tiff":
        order = "<" if data[:2] == b"II" else ">"
        out = data
        for at, fmt in _tiff(data)[2::4]:  # each entry's tag
            (tag,) = struct.unpack_from(fmt, data, at)
            if tag in (256, 257):  # ImageWidth, ImageLength: make them LONG values
                out = overwrite("tiff", out, (at + 2, order + "H"), 4)
                out = overwrite("tiff", out, (at + 8, order + "I"), width if tag == 256 else height)
        return out
    if kind == "webp":  # lossless: 14-bit width-1 and height-1 after the signature byte
        bits = (width - 1) | ((height - 1) << 14) | (data[24] >> 4 << 28)
        out = bytearray(data)
        struct.pack_into("<I", out, 21, bits)
        return bytes(out)
    raise ValueError(kind)
