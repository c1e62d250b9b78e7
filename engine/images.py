"""Image files in and out of the engine: decoding an uploaded PNG/JPEG to a model-sized tensor,
encoding a tensor as PNG, and making a perturbation visible. Pages call these; they never decode
or resize images themselves.
"""
from __future__ import annotations

import io

import numpy as np
import torch

from engine.errors import InvalidParameterError

#: largest accepted upload, in bytes, and in pixels per side
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_SIDE = 4096
FORMATS = ("PNG", "JPEG")


def decode_image(data: bytes, input_shape: tuple[int, int, int], name: str = "image") -> torch.Tensor:
    """Decode PNG/JPEG ``data`` and resize it to ``input_shape`` (C, H, W).

    Returns a float32 tensor (1, C, H, W) in [0, 1]: greyscale for C = 1, RGB for C = 3.
    Raises InvalidParameterError for an empty, oversized, corrupt or non-PNG/JPEG file.
    """
    from PIL import Image, UnidentifiedImageError

    channels, height, width = (int(s) for s in input_shape)
    if channels not in (1, 3):
        raise InvalidParameterError(f"can only convert uploads to 1 or 3 channels, the model takes {channels}")
    if not data:
        raise InvalidParameterError(f"{name} is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InvalidParameterError(
            f"{name} is {len(data) / 2**20:.1f} MiB; the limit is {MAX_UPLOAD_BYTES // 2**20} MiB"
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in FORMATS:
                raise InvalidParameterError(f"{name} is {img.format or 'unknown'}; upload a PNG or JPEG")
            if max(img.size) > MAX_SIDE:
                raise InvalidParameterError(
                    f"{name} is {img.size[0]}×{img.size[1]} pixels; the limit is {MAX_SIDE} per side"
                )
            img = img.convert("L" if channels == 1 else "RGB")
            img = img.resize((width, height), Image.Resampling.BILINEAR)
            array = np.asarray(img, dtype=np.float32) / 255.0
    except InvalidParameterError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidParameterError(f"{name} could not be read as a PNG or JPEG image: {exc}") from exc
    tensor = torch.from_numpy(array.copy())
    tensor = tensor[None] if channels == 1 else tensor.permute(2, 0, 1)
    return tensor[None].contiguous()


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
