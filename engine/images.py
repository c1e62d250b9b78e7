"""Image files in and out of the engine: decoding an uploaded PNG/JPEG to a model-sized tensor,
reading the image files of dataset folders (``engine.data.folders``) through the same checks,
encoding a tensor as PNG, and making a perturbation visible. Pages call these; they never decode
or resize images themselves.
"""
from __future__ import annotations

import contextlib
import io
import os
import struct
import warnings
import zlib

import numpy as np
import torch

from engine.errors import InvalidParameterError, RobustScopeError

#: largest accepted upload, in bytes
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: largest accepted image, in pixels per side and in pixels in all, read from the file's header
#: before anything is decoded (a 4096² RGBA image decodes to 64 MiB; a 12-megapixel phone photo,
#: 4032×3024, fits). Pillow's own decompression-bomb limit is higher and only warns below 2×.
MAX_SIDE = 4096
MAX_PIXELS = MAX_SIDE * MAX_SIDE
#: the same limits for image files in dataset folders (``engine.data``), higher than an upload's:
#: ImageNet's training set holds photos of several thousand pixels per side; 64 M pixels decode to
#: 192 MiB of RGB at most
MAX_FILE_SIDE = 16384
MAX_FILE_PIXELS = 8192 * 8192
MAX_FILE_BYTES = 256 << 20
#: accepted container formats: PNG, JPEG, and MPO (camera JPEGs with extra frames; the first is used)
FORMATS = ("PNG", "JPEG", "MPO")
_DECODERS = ("PNG", "JPEG")  # Pillow's JPEG decoder is the one that opens MPO files
#: pixel modes holding more than 8 bits per sample (16-bit greyscale PNGs): scaled by 2¹⁶ - 1
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: signatures of formats people upload by mistake (named in the error, never decoded)
_OTHER_FORMATS = {b"GIF87a": "GIF", b"GIF89a": "GIF", b"BM": "BMP", b"RIFF": "WEBP (or another RIFF file)",
                  b"II*\x00": "TIFF", b"MM\x00*": "TIFF", b"%PDF": "a PDF"}


def decode_image(data: bytes, input_shape: tuple[int, int, int], name: str = "image") -> torch.Tensor:
    """Decode PNG/JPEG ``data`` and resize it to ``input_shape`` (C, H, W).

    The EXIF orientation of camera photos is applied; an MPO file (a camera JPEG with extra
    frames) gives its first frame; 16-bit PNGs are scaled by 65535, not clipped at 255. The
    header's size is checked against :data:`MAX_SIDE`/:data:`MAX_PIXELS` before decoding, and
    JPEGs are decoded at a reduced scale when the model's size allows (bounded memory).

    Returns a float32 tensor (1, C, H, W) in [0, 1]: greyscale for C = 1, RGB for C = 3.
    Raises InvalidParameterError for an empty, oversized, damaged or non-PNG/JPEG file; no
    other exception escapes for any bytes.
    """
    channels, height, width = (int(s) for s in input_shape)
    if channels not in (1, 3):
        raise InvalidParameterError(f"can only convert uploads to 1 or 3 channels, the model takes {channels}")
    if min(height, width) < 1 or max(height, width) > MAX_SIDE:
        raise InvalidParameterError(f"cannot resize uploads to {height}×{width}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidParameterError(f"{name} must be the file's bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidParameterError(f"{name} is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidParameterError(
            f"{name} is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB"
        )
    check_other_format(data, name)
    if data.startswith(_PNG_SIGNATURE):
        check_png_chunks(data, name)
    array = _decode(data, channels, height, width, name)  # (H, W, C) float32 in [0, 1]
    return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()


def check_other_format(data: bytes, name: str = "image") -> None:
    """Refuse, by name, a format people upload by mistake (GIF, BMP, WEBP, TIFF, PDF)."""
    other = next((fmt for magic, fmt in _OTHER_FORMATS.items() if data.startswith(magic)), None)
    if other:
        raise InvalidParameterError(f"{name} is {other}; upload a PNG or JPEG")


def _decode(data: bytes, channels: int, height: int, width: int, name: str) -> np.ndarray:
    """Open, check, orient and resize; every decoder failure becomes InvalidParameterError."""
    from PIL import Image, ImageOps

    with decoding(name, "a PNG or JPEG image"):
        with Image.open(io.BytesIO(data), formats=_DECODERS) as img:
            if img.format not in FORMATS:
                raise InvalidParameterError(f"{name} is {img.format or 'unknown'}; upload a PNG or JPEG")
            check_size(img.size, name)
            img.seek(0)  # MPO / animated PNG: the first frame
            if img.format in ("JPEG", "MPO"):
                side = max(height, width)
                img.draft("L" if channels == 1 else "RGB", (side, side))  # decode at 1/2..1/8 scale
            img = ImageOps.exif_transpose(img)
            return _resized_array(img, channels, height, width)


@contextlib.contextmanager
def decoding(name: str, readable: str, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS):
    """``with decoding(name, "an image"):`` around Pillow calls: its decompression-bomb warning is
    an error inside, and any decoder failure leaving the block becomes an InvalidParameterError
    naming ``name`` (our own RobustScopeErrors pass unchanged)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns (and above 2× its limit raises) for huge headers; ours is lower, so a
            # warning here means our limit is exceeded: make it an error we report ourselves.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except RobustScopeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidParameterError(
            f"{name} claims too many pixels ({exc}); the limit is {max_side} per side ({max_pixels:,} pixels)"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InvalidParameterError(f"{name} could not be read as {readable}: not one, or its header is damaged") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure on these bytes is a damaged file
        raise InvalidParameterError(
            f"{name} could not be read as {readable} (damaged or truncated file): {type(exc).__name__}: {exc}"
        ) from exc


def read_image_file(path: str | os.PathLike, name: str | None = None):
    """Decode an image file of a dataset folder to an RGB ``PIL.Image``, through the checks uploads
    get: its size, read from the header, against :data:`MAX_FILE_SIDE`/:data:`MAX_FILE_PIXELS`
    before anything is decoded (a 30,000 × 30,000 decompression bomb is refused from its header),
    Pillow's decompression-bomb warning as an error, a PNG's chunks and CRCs. Any format Pillow
    reads; no EXIF rotation (as torchvision's loader, so published accuracies reproduce).

    Raises InvalidParameterError naming the file (``name``, default its path) for an unreadable,
    empty, damaged, truncated or oversize file.
    """
    from PIL import Image

    name = name or str(path)
    data = _file_bytes(path, name)
    if data.startswith(_PNG_SIGNATURE):
        check_png_chunks(data, name)
    with decoding(name, "an image", MAX_FILE_SIDE, MAX_FILE_PIXELS):
        with Image.open(io.BytesIO(data)) as img:
            check_size(img.size, name, MAX_FILE_SIDE, MAX_FILE_PIXELS)
            return img.convert("RGB")


def _file_bytes(path: str | os.PathLike, name: str) -> bytes:
    """The bytes of an image file, at most :data:`MAX_FILE_BYTES`; an unreadable or empty file
    raises InvalidParameterError naming it."""
    try:
        size = os.stat(path).st_size
        if size > MAX_FILE_BYTES:
            raise InvalidParameterError(
                f"{name} is {size / 2**20:.0f} MiB; image files over {MAX_FILE_BYTES >> 20} MiB are not read"
            )
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise InvalidParameterError(f"cannot read image {name}: {exc.strerror or exc}") from exc
    if not data:
        raise InvalidParameterError(f"{name} is empty")
    return data


def check_size(size: tuple[int, int], name: str = "image", max_side: int = MAX_SIDE,
               max_pixels: int = MAX_PIXELS) -> None:
    """Refuse an image whose (width, height), read from its header, exceeds the limits (default:
    an upload's, :data:`MAX_SIDE` and :data:`MAX_PIXELS`)."""
    w, h = (int(v) for v in size)
    if w < 1 or h < 1:
        raise InvalidParameterError(f"{name} has no pixels ({w}×{h})")
    if max(w, h) > max_side or w * h > max_pixels:
        raise InvalidParameterError(
            f"{name} is {w}×{h} pixels; the limit is {max_side} per side ({max_pixels:,} pixels)"
        )


def check_png_chunks(data: bytes, name: str = "image") -> None:
    """Walk a PNG's chunks and refuse a damaged one (bad length, type or CRC, or no IEND).

    Pillow skips the CRC of image-data chunks, so a damaged PNG could otherwise decode silently
    to wrong pixels; this names the chunk and its byte offset instead.
    """
    pos = len(_PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise InvalidParameterError(f"{name} is a truncated PNG (ends at byte {len(data)} without an IEND chunk)")
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        label = kind.decode("latin-1")
        if not kind.isalpha():
            raise InvalidParameterError(f"{name} is a damaged PNG: invalid chunk type {kind!r} at byte {pos}")
        end = pos + 8 + length + 4
        if end > len(data):
            raise InvalidParameterError(
                f"{name} is a damaged or truncated PNG: chunk {label} at byte {pos} claims {length} bytes "
                f"but the file ends at byte {len(data)}"
            )
        (crc,) = struct.unpack(">I", data[end - 4:end])
        if zlib.crc32(data[pos + 4:end - 4]) & 0xFFFFFFFF != crc:
            raise InvalidParameterError(f"{name} is a damaged PNG: chunk {label} at byte {pos} fails its CRC check")
        if kind == b"IEND":
            return
        pos = end


def _resized_array(img, channels: int, height: int, width: int) -> np.ndarray:
    """(H, W, C) float32 in [0, 1] of ``img`` converted to ``channels`` and resized (bilinear)."""
    from PIL import Image

    if img.mode in _WIDE_MODES:  # 16-bit greyscale: keep the precision, scale by 2¹⁶ - 1
        grey = img.convert("F").resize((width, height), Image.Resampling.BILINEAR)
        array = np.clip(np.asarray(grey, dtype=np.float32) / 65535.0, 0.0, 1.0)[:, :, None]
        return np.repeat(array, channels, axis=2) if channels == 3 else array
    img = img.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
    array = np.asarray(img, dtype=np.float32) / 255.0
    return array[:, :, None] if channels == 1 else array.copy()


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) or (H, W, 3) uint8 array for display."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise InvalidParameterError(f"expected one (C, H, W) image with 1 or 3 channels, got {tuple(image.shape)}")
    array = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    return array[0].numpy() if array.shape[0] == 1 else array.permute(1, 2, 0).numpy()


def encode_png(image: torch.Tensor) -> bytes:
    """(C, H, W) in [0, 1] -> PNG file bytes (lossless, 8-bit)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(image)).save(buf, format="PNG")
    return buf.getvalue()


def amplify(perturbation: torch.Tensor) -> torch.Tensor:
    """Make a perturbation (C, H, W) visible: ``0.5 + δ / (2·max|δ|)`` (grey = 0); zero stays grey."""
    scale = float(perturbation.abs().max())
    return (0.5 + perturbation / (2 * scale if scale > 0 else 1.0)).clamp(0, 1)
