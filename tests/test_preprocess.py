"""Decoding every mode and format to RGB, limits, and the two profiles' pixel pipelines."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from featcache.errors import ConfigError, ImageError, ImageTooLargeError
from featcache.extractor.preprocess import (
    CAFFE_MEAN_BGR,
    decode_image,
    legacy_bilinear_resize,
    preprocess_rgb,
)


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


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
    bomb = encode(Image.new("1", (12000, 10000)), "PNG")  # 120 MP, a few kB on disk
    assert len(bomb) < 100_000
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png: 12000x10000 = 120000000 pixels"):
        decode_image(bomb, "bomb.png")
    with pytest.raises(ImageTooLargeError, match="24 pixels exceeds the limit of 10 "):
        decode_image(encode(Image.fromarray(RGB), "PNG"), "small.png", max_pixels=10)
    # Past twice Pillow's own limit, Pillow refuses inside open(): still our error, named.
    huge = encode(Image.new("1", (20000, 10000)), "PNG")
    with pytest.raises(ImageTooLargeError, match=r"huge\.png"):
        decode_image(huge, "huge.png", max_pixels=10**12)


def test_legacy_bilinear_matches_hand_computation() -> None:
    # TF1 ResizeBilinear, align_corners=False: src = dst * in/out, no half-pixel offset.
    img = np.array([[0.0, 10.0], [20.0, 30.0]], np.float32)[:, :, None]
    out = legacy_bilinear_resize(img, 4, 4)[:, :, 0]
    expected = np.array(
        [[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30]], np.float32
    )
    np.testing.assert_allclose(out, expected)


def test_udacity_profile_subtracts_the_scalar_mean_then_resizes() -> None:
    rgb = np.full((32, 32, 3), 100, np.uint8)
    rgb[:, :, 0] = 160
    out = preprocess_rgb(rgb, "udacity")
    assert out.shape == (227, 227, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], 40.0)  # RGB order, mean 120 removed
    np.testing.assert_allclose(out[..., 1], -20.0)


def test_caffe_profile_is_bgr_minus_mean() -> None:
    rgb = np.zeros((227, 227, 3), np.uint8)
    rgb[..., 0] = 255  # red
    out = preprocess_rgb(rgb, "caffe")
    np.testing.assert_allclose(
        out[0, 0], [0 - CAFFE_MEAN_BGR[0], -CAFFE_MEAN_BGR[1], 255 - CAFFE_MEAN_BGR[2]], rtol=1e-6
    )


def test_crop_policy_keeps_the_centre_square() -> None:
    wide = np.zeros((227, 227 * 3, 3), np.uint8)
    wide[:, 227:454] = 255  # the centre square is white, the sides black
    out = preprocess_rgb(wide, "caffe", "crop")
    assert out.shape == (227, 227, 3) and (out + CAFFE_MEAN_BGR).min() > 254
    squashed = preprocess_rgb(wide, "caffe", "squash")
    assert (squashed + CAFFE_MEAN_BGR)[:, 0].max() < 1


def test_unknown_profile_is_named() -> None:
    with pytest.raises(
        ConfigError, match=r"'profile' must be one of \['caffe', 'udacity'\]. Got 'vgg'"
    ):
        preprocess_rgb(RGB, "vgg")
