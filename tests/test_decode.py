"""Decoding every format and mode to RGB, and the limits: `featcache.data.decode`."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from featcache.data.decode import array_to_rgb, decode_image
from featcache.errors import ImageError, ImageTooLargeError
from imagebytes import encode, forged_size, png_bomb, samples

RGB = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "WEBP", "TIFF"])
def test_lossless_formats_round_trip(fmt: str) -> None:
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(encode(Image.fromarray(RGB), fmt, **kw), "x")
    assert out.dtype == np.uint8 and out.shape == (4, 6, 3)
    np.testing.assert_array_equal(out, RGB)


def test_jpeg_decodes_close() -> None:
    out = decode_image(encode(Image.fromarray(RGB), "JPEG", quality=100), "x.jpg")
    assert out.shape == (4, 6, 3) and np.abs(out.astype(int) - RGB).mean() < 8


def test_grayscale_becomes_three_equal_channels() -> None:
    gray = np.array([[0, 128], [200, 255]], dtype=np.uint8)
    out = decode_image(encode(Image.fromarray(gray), "PNG"), "g.png")
    assert out.shape == (2, 2, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_rgba_drops_alpha_keeping_colour() -> None:
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    out = decode_image(encode(Image.fromarray(rgba), "PNG"), "a.png")
    assert out.shape == (2, 2, 3) and (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()


def test_palette_image() -> None:
    img = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    out = decode_image(encode(img, "PNG"), "p.png")
    np.testing.assert_array_equal(out, np.asarray(img.convert("RGB")))


def test_16_bit_grayscale_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257 * 100], [65535, 257 * 2]], dtype=np.uint16)
    img = Image.fromarray(values)
    out = decode_image(encode(img, "PNG"), "deep.png")
    np.testing.assert_array_equal(out[:, :, 0], [[0, 100], [255, 2]])


def test_cmyk_jpeg_becomes_rgb() -> None:
    img = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_image(encode(img, "JPEG", quality=100), "cmyk.jpg")
    assert out.shape == (4, 4, 3)
    assert out[..., 0].mean() > 200 and out[..., 1].mean() < 60


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (3, 3), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = decode_image(buf.getvalue(), "anim.gif")
    assert out[..., 0].min() > 200 and out[..., 2].max() < 50


def test_exif_orientation_is_applied() -> None:
    tall = np.zeros((4, 2, 3), np.uint8)
    tall[0, :, :] = 255  # white top row
    img = Image.fromarray(tall)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = decode_image(encode(img, "JPEG", exif=exif, quality=100), "rot.jpg")
    assert out.shape == (2, 4, 3)  # displayed landscape
    assert out[:, -1].mean() > 200  # the white row is now the right column


def test_truncated_png_names_the_file() -> None:
    data = encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "PNG"
    )
    with pytest.raises(ImageError, match=r"cut\.png: not a readable image"):
        decode_image(data[: len(data) // 2], "cut.png")


@pytest.mark.parametrize(("data", "message"), [(b"", "empty file"), (b"hello", "known format")])
def test_not_images(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data, "f.png")


def test_pixel_limit_stops_before_decoding() -> None:
    bomb = png_bomb(12000, 10000)  # 120 MP, a few kB on disk
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: 12000x10000 = 120000000 pixels"):
        decode_image(bomb, "bomb.png")
    with pytest.raises(ImageTooLargeError, match="24 pixels exceeds the limit of 10 "):
        decode_image(encode(Image.fromarray(RGB), "PNG"), "small.png", max_pixels=10)
    # Past twice Pillow's own limit, Pillow refuses inside open(): still our error, named.
    huge = png_bomb(20000, 10000)
    with pytest.raises(ImageTooLargeError, match=r"huge\.png"):
        decode_image(huge, "huge.png", max_pixels=10**12)


def test_16_bit_tiff_and_32_bit_integer_images_are_scaled() -> None:
    deep = np.array([[0, 65535], [257 * 10, 257 * 200]], dtype=np.uint16)
    out = decode_image(encode(Image.fromarray(deep), "TIFF"), "deep.tif")
    np.testing.assert_array_equal(out[:, :, 0], [[0, 255], [10, 200]])
    wide = Image.fromarray(np.array([[0, 70000], [-5, 257 * 30]], dtype=np.int32))
    assert wide.mode == "I"
    out = decode_image(encode(wide, "TIFF"), "wide.tif")  # above 255: read as 16-bit range
    np.testing.assert_array_equal(out[:, :, 1], [[0, 255], [0, 30]])
    small = Image.fromarray(np.array([[0, 17], [200, 255]], dtype=np.int32))
    out = decode_image(encode(small, "TIFF"), "small.tif")  # within 0..255: kept as is
    np.testing.assert_array_equal(out[:, :, 2], [[0, 17], [200, 255]])


def test_float_images_are_clipped_and_nan_is_black() -> None:
    values = np.array([[-3.0, 12.4], [300.0, np.nan], [np.inf, -np.inf]], dtype=np.float32)
    img = Image.fromarray(values)
    assert img.mode == "F"
    out = decode_image(encode(img, "TIFF"), "float.tif")
    assert out.dtype == np.uint8 and out.shape == (3, 2, 3)
    np.testing.assert_array_equal(out[:, :, 0], [[0, 12], [255, 0], [255, 0]])


@pytest.mark.parametrize(
    ("mode", "fmt"), [("LA", "PNG"), ("RGBA", "TIFF"), ("1", "BMP"), ("CMYK", "TIFF"), ("L", "GIF")]
)
def test_other_modes_become_rgb(mode: str, fmt: str) -> None:
    img = Image.fromarray(RGB).convert(mode)
    out = decode_image(encode(img, fmt), f"x.{fmt.lower()}")
    assert out.dtype == np.uint8 and out.shape == (4, 6, 3)
    expected = np.asarray(img.convert("RGB"))
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("kind", ["png", "bmp", "gif", "jpeg", "tiff", "webp"])
def test_huge_headers_are_refused_before_decoding(kind: str) -> None:
    # A few hundred bytes claiming 9000x9000: refused from the header, no 243 MB allocated.
    small = samples()[{"webp": "webp/lossless", "gif": "gif/p"}.get(kind, f"{kind}/rgb")]
    with pytest.raises(ImageTooLargeError, match=rf"^x\.{kind}: 9000x9000 = 81000000 pixels"):
        decode_image(forged_size(kind, small, 9000, 9000), f"x.{kind}")
    with pytest.raises(ImageTooLargeError, match=rf"^x\.{kind}: .*decompression bomb"):
        decode_image(forged_size(kind, small, 16000, 16000), f"x.{kind}", max_pixels=10**12)


@pytest.mark.parametrize(("tag_type", "raised"), [(2, "TypeError"), (16, "OverflowError")])
def test_broken_tiff_tag_is_an_image_error(tag_type: int, raised: str) -> None:
    # StripOffsets retyped as ASCII text or as 8-byte integers: Pillow's load() raises
    # TypeError or OverflowError, which used to stop a whole extract.
    tiff = samples()["tiff/rgb"]
    entry = tiff.index(b"\x11\x01\x04\x00")  # tag 273 StripOffsets, type LONG
    broken = tiff[: entry + 2] + bytes([tag_type, 0]) + tiff[entry + 4 :]
    with pytest.raises(ImageError, match=rf"^strips\.tif: not a readable image \({raised}: "):
        decode_image(broken, "strips.tif")


def test_arrays_become_rgb_within_limits() -> None:
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(array_to_rgb(gray, "g")[:, :, 1], gray)
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., 2] = 9
    assert (
        array_to_rgb(rgba, "a").shape == (2, 3, 3) and (array_to_rgb(rgba, "a")[..., 2] == 9).all()
    )
    with pytest.raises(ImageError, match=r"train\.p#3: array dtype float32, expected uint8"):
        array_to_rgb(np.zeros((2, 2, 3), np.float32), "train.p#3")
    with pytest.raises(ImageError, match=r"array shape \(2, 2, 2\), expected \(H, W, 1\|3\|4\)"):
        array_to_rgb(np.zeros((2, 2, 2), np.uint8), "x")
    with pytest.raises(ImageTooLargeError, match=r"^big: 3x2 = 6 pixels exceeds the limit of 5"):
        array_to_rgb(np.zeros((2, 3, 3), np.uint8), "big", max_pixels=5)


def test_multi_picture_jpeg_decodes_its_first_picture() -> None:
    first, second = Image.new("RGB", (8, 6), (200, 10, 10)), Image.new("RGB", (8, 6), "blue")
    mpo = encode(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(mpo)).format == "MPO"  # how Pillow opens many camera JPEGs
    out = decode_image(mpo, "camera.jpg")
    assert out.shape == (6, 8, 3) and out[..., 0].min() > 180 and out[..., 2].max() < 40


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX"])
def test_formats_outside_the_six_are_refused(fmt: str) -> None:
    # Pillow reads these, but the decoder only lets its six formats' parsers see the bytes.
    data = encode(Image.fromarray(RGB), fmt)
    with pytest.raises(ImageError, match=r"^x: not an image in a known format \(PNG, JPEG"):
        decode_image(data, "x")
