"""Fuzzing the image-upload entry point, ``engine.images.decode_image``.

Property: for any bytes (random, or a valid PNG/JPEG/MPO with random damage), ``decode_image``
either returns a finite float32 tensor (1, C, H, W) in [0, 1] of the requested shape, or raises a
``RobustScopeError`` with a message; never another exception, never a warning, and the Python
heap it allocates (numpy/torch arrays included, as tracemalloc sees them) stays under
``PEAK_BOUND`` bytes per call.
"""
import io
import struct
import tracemalloc
import warnings
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine import images as eimages
from engine.errors import RobustScopeError

#: per-call bound on the Python-heap peak (the largest legitimate array is one (H, W, C) float32
#: image of at most MAX_SIDE² pixels only inside Pillow (not on this heap); our own arrays are
#: model-sized). 64 MiB leaves a wide margin for Pillow's Python-side buffers of a 10 MiB file.
PEAK_BOUND = 64 * 2**20
SHAPES = [(1, 28, 28), (3, 32, 32), (3, 17, 9)]


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray((rng.random((24, 20, 3)) * 255).astype(np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 8
    rows = b"".join(b"\x00" + r.astype(">u2").tobytes() for r in (rng.random((6, 5, 3)) * 65535).astype(np.int64))
    png16 = (eimages._PNG_SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 6, 16, 2, 0, 0, 0))
             + _chunk(b"IDAT", zlib.compress(rows)) + _chunk(b"IEND", b""))
    return [
        _save(rgb, "PNG"),
        _save(rgb.convert("L"), "PNG"),
        _save(rgb.convert("P"), "PNG"),
        _save(rgb.convert("RGBA"), "PNG"),
        _save(Image.fromarray((rng.random((9, 7)) * 65535).astype(np.uint16)), "PNG"),
        png16,
        _save(rgb, "JPEG", quality=80),
        _save(rgb, "JPEG", quality=80, progressive=True),
        _save(rgb, "JPEG", exif=exif.tobytes()),
        _save(rgb.convert("CMYK"), "JPEG"),
        _save(rgb, "MPO", save_all=True, append_images=[rgb.convert("L").convert("RGB")]),
    ]


SEEDS = _seeds()


@st.composite
def damaged(draw) -> bytes:
    """A seed file with a few random edits: byte overwrites, cuts, insertions, or a header field
    (PNG width/height, JPEG SOF size) set to a random, possibly huge, value."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["set", "cut", "insert", "size"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:pos + draw(st.integers(1, 64))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
        elif op == "size":
            value = draw(st.integers(0, 2**31 - 1) | st.integers(0, 9000))
            if data.startswith(eimages._PNG_SIGNATURE) and len(data) >= 24:
                data[16 + 4 * draw(st.integers(0, 1)):][:4] = struct.pack(">I", value)
                ihdr = bytes(data[12:29])
                data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)  # keep the CRC valid
            else:
                sof = data.find(b"\xff\xc0")
                if sof > 0 and sof + 9 <= len(data):
                    data[sof + 5 + 2 * draw(st.integers(0, 1)):][:2] = struct.pack(">H", value & 0xFFFF)
    return bytes(data)


ANY_BYTES = st.one_of(
    damaged(),
    st.binary(max_size=512),
    st.binary(max_size=256).map(lambda b: eimages._PNG_SIGNATURE + b),
    st.binary(max_size=256).map(lambda b: b"\xff\xd8\xff" + b),
)


def check_decode(data: bytes, shape: tuple[int, int, int]) -> None:
    """The property itself, for one input."""
    tracemalloc.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning (e.g. Pillow's decompression bomb) fails
            try:
                x = eimages.decode_image(data, shape)
            except RobustScopeError as exc:
                assert str(exc)
                return
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BOUND, f"peak {peak / 2**20:.1f} MiB"
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
    assert tuple(x.shape) == (1, *shape)
    assert torch.isfinite(x).all() and float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=ANY_BYTES, shape=st.sampled_from(SHAPES))
def test_any_bytes_give_an_image_or_our_error(data, shape):
    check_decode(data, shape)


@pytest.mark.parametrize("index", range(len(SEEDS)))
def test_every_seed_decodes(index):
    """The undamaged seeds are valid uploads (so the fuzzing starts from accepted files)."""
    for shape in SHAPES:
        x = eimages.decode_image(SEEDS[index], shape)
        assert tuple(x.shape) == (1, *shape)


def test_peak_bound_would_catch_a_full_resolution_float_copy():
    """The bound is meaningful: a float32 copy of a 4096² RGB image (what decoding at full size
    into numpy would cost) is far above it."""
    tracemalloc.start()
    try:
        np.zeros((eimages.MAX_SIDE, eimages.MAX_SIDE, 3), np.float32).fill(0.5)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak > PEAK_BOUND
