"""Turning image arrays into grids and PNG bytes (for the CLI and downloads)."""
from __future__ import annotations

import io

import numpy as np

from engine.errors import InvalidParameterError


def to_hwc(images) -> np.ndarray:
    """(N, C, H, W) tensor/array in [0, 1] -> float32 (N, H, W, C) array."""
    array = images.detach().cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    if array.ndim != 4:
        raise InvalidParameterError(f"expected (N, C, H, W) images, got shape {array.shape}")
    return np.transpose(array, (0, 2, 3, 1)).astype(np.float32)


def grid(images: np.ndarray, columns: int | None = None, pad: int = 1, scale: int = 1) -> np.ndarray:
    """Tile (N, H, W, C) images in [0, 1] into one (H', W', C) image, white padding between.

    Args:
        images: float array (N, H, W, C), N >= 1.
        columns: images per row (default all in one row).
        pad: pixels between images (before scaling).
        scale: integer nearest-neighbour upscaling of the whole grid (>= 1).
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise InvalidParameterError(f"expected (N, H, W, C) images with N >= 1, got {images.shape}")
    n, h, w, c = images.shape
    columns = max(1, min(int(columns or n), n))
    rows = -(-n // columns)
    canvas = np.ones((rows * (h + pad) - pad, columns * (w + pad) - pad, c), np.float32)
    for i, image in enumerate(images):
        top, left = (i // columns) * (h + pad), (i % columns) * (w + pad)
        canvas[top:top + h, left:left + w] = image
    factor = max(1, int(scale))
    return canvas.repeat(factor, axis=0).repeat(factor, axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode one (H, W, C) image in [0, 1] (C = 1 or 3) as PNG bytes."""
    from PIL import Image

    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] not in (1, 3):
        raise InvalidParameterError(f"expected an (H, W, 1|3) image, got shape {array.shape}")
    pixels = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
