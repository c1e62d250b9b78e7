"""engine.images.decode_image on the files people actually upload: damaged PNGs, 16-bit PNGs,
rotated and multi-frame camera JPEGs, and headers that claim huge sizes."""
import io
import struct
import warnings
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from engine import images as eimages
from engine.errors import InvalidParameterError


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def raw_png(array: np.ndarray, bit_depth: int, colour_type: int, size: tuple[int, int] | None = None) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB): rows of ``array`` as big-endian
    samples; ``size`` overrides the (width, height) the header claims."""
    height, width = array.shape[:2]
    width, height = size or (width, height)
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = b"".join(b"\x00" + row.astype(dtype).tobytes() for row in array)
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return eimages._PNG_SIGNATURE + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_of(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_16_bit_greyscale_png_is_scaled_not_clipped_to_white():
    level = 20000  # 20000 / 65535 = 0.305; clipping at 255 would read it as 1.0
    for data in (png_of(np.full((12, 10), level, np.uint16)), raw_png(np.full((12, 10), level), 16, 0)):
        for shape in ((1, 8, 8), (3, 8, 8)):
            x = eimages.decode_image(data, shape)
            assert x.shape == (1, *shape)
            assert torch.allclose(x, torch.full_like(x, level / 65535), atol=1e-4)


def test_16_bit_greyscale_keeps_its_gradient():
    ramp = np.tile(np.linspace(0, 65535, 16).astype(np.uint16), (16, 1))
    x = eimages.decode_image(png_of(ramp), (1, 16, 16))[0, 0]
    assert torch.allclose(x[0], torch.linspace(0, 1, 16), atol=1e-3)


def test_16_bit_rgb_png_keeps_its_colour():
    array = np.zeros((6, 6, 3), np.int64)
    array[..., 0], array[..., 1], array[..., 2] = 65535, 32768, 0
    x = eimages.decode_image(raw_png(array, 16, 2), (3, 6, 6))
    assert torch.allclose(x[0, :, 2, 2], torch.tensor([1.0, 128 / 255, 0.0]), atol=1 / 255)


def test_png_with_a_damaged_chunk_is_refused_by_name():
    good = png_of(np.full((16, 16, 3), 90, np.uint8))
    idat = good.find(b"IDAT")
    (length,) = struct.unpack(">I", good[idat - 4:idat])
    bad_crc = bytearray(good)
    bad_crc[idat + 4 + length] ^= 0x01  # Pillow skips IDAT CRCs: this used to decode silently
    with pytest.raises(InvalidParameterError, match="chunk IDAT .* CRC"):
        eimages.decode_image(bytes(bad_crc), (3, 16, 16))
    bad_length = bytearray(good)
    bad_length[idat - 4:idat] = struct.pack(">I", 10**6)
    with pytest.raises(InvalidParameterError, match="IDAT .* claims 1000000 bytes"):
        eimages.decode_image(bytes(bad_length), (3, 16, 16))
    with pytest.raises(InvalidParameterError, match="truncated"):
        eimages.decode_image(good[: len(good) - 12], (3, 16, 16))  # IEND cut off


def test_exif_orientation_is_applied():
    array = np.zeros((20, 40, 3), np.uint8)  # landscape, bright left half
    array[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    x = eimages.decode_image(buf.getvalue(), (1, 40, 20))[0, 0]  # displayed portrait: 40 tall, 20 wide
    # after a clockwise quarter turn the bright left half is on top
    assert float(x[:15].mean()) > 0.9 and float(x[25:].mean()) < 0.1


def test_mpo_camera_jpeg_gives_its_first_frame():
    buf = io.BytesIO()
    first, second = Image.new("RGB", (32, 24), (250, 0, 0)), Image.new("RGB", (32, 24), (0, 0, 250))
    first.save(buf, format="MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    x = eimages.decode_image(buf.getvalue(), (3, 8, 8))
    assert float(x[0, 0].mean()) > 0.9 and float(x[0, 2].mean()) < 0.1


@pytest.mark.parametrize("size", [(eimages.MAX_SIDE + 1, 8), (12_000, 9_000), (100_000, 100_000)])
def test_huge_header_is_refused_before_decoding_with_our_error(size):
    data = raw_png(np.zeros((1, 1)), 8, 0, size=size)  # the header lies: one pixel of data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not leak either
        with pytest.raises(InvalidParameterError, match="limit"):
            eimages.decode_image(data, (1, 28, 28))


def test_big_photo_within_limits_decodes_at_reduced_scale():
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (10, 200, 30)).save(buf, format="JPEG")
    x = eimages.decode_image(buf.getvalue(), (3, 32, 32))
    assert x.shape == (1, 3, 32, 32)
    assert torch.allclose(x[0, :, 16, 16], torch.tensor([10, 200, 30]) / 255, atol=6 / 255)


def test_other_formats_are_named():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="BMP")
    with pytest.raises(InvalidParameterError, match="is BMP; upload a PNG or JPEG"):
        eimages.decode_image(buf.getvalue(), (3, 8, 8))
