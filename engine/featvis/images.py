"""Turning image arrays into grids and PNG bytes (for the CLI and downloads)."""
from __future__ import annotations

import io

import numpy as np

from engine.errors import InvalidParameterError

#: largest grid (after scaling) :func:`grid` builds, in pixels per side: 4096² × 3 float32 = 192 MiB
MAX_GRID_SIDE = 4096


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

    Raises:
        InvalidParameterError: the scaled grid would exceed :data:`MAX_GRID_SIDE` per side.
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[0] == 0:
        raise InvalidParameterError(f"expected (N, H, W, C) images with N >= 1, got {images.shape}")
    n, h, w, c = images.shape
    columns = max(1, min(int(columns or n), n))
    height, width, factor = check_grid(n, h, w, columns, pad, scale)
    pad = int(pad)
    canvas = np.ones((height, width, c), np.float32)
    for i, image in enumerate(images):
        top, left = (i // columns) * (h + pad), (i % columns) * (w + pad)
        canvas[top:top + h, left:left + w] = image
    return canvas.repeat(factor, axis=0).repeat(factor, axis=1)


def check_grid(n: int, h: int, w: int, columns: int | None = None, pad: int = 1, scale: int = 1) -> tuple[int, int, int]:
    """``(height, width, factor)`` of the unscaled :func:`grid` of ``n`` images of ``h``×``w`` and
    its scale factor, or InvalidParameterError when the scaled grid would exceed
    :data:`MAX_GRID_SIDE` per side (checked before any pixel is allocated)."""
    if int(pad) < 0:
        raise InvalidParameterError(f"pad must be >= 0, got {pad!r}")
    columns = max(1, min(int(columns or n), n))
    rows = -(-n // columns)
    factor, pad = max(1, int(scale)), int(pad)
    height, width = rows * (h + pad) - pad, columns * (w + pad) - pad
    if max(height, width) * factor > MAX_GRID_SIDE:
        largest = MAX_GRID_SIDE // max(height, width)
        raise InvalidParameterError(
            f"a {rows}×{columns} grid of {h}×{w} images scaled {factor}× would be "
            f"{height * factor}×{width * factor} pixels; the limit is {MAX_GRID_SIDE} per side"
            + (f" (use a scale <= {largest})" if largest >= 1 else " (show fewer images)")
        )
    return height, width, factor


def fitting_grid(n: int, height: int, width: int, scale: int = 1, pad: int = 1) -> tuple[int, int]:
    """``(columns, scale)`` for a :func:`grid` of ``n`` images of ``height``×``width`` that stays
    within :data:`MAX_GRID_SIDE`: one row when it fits, else wrapped rows; ``scale`` reduced to
    what fits (at least 1). Raises InvalidParameterError when even scale 1 does not fit."""
    if max(height, width) > MAX_GRID_SIDE:
        raise InvalidParameterError(f"images of {height}×{width} exceed {MAX_GRID_SIDE} pixels per side")
    columns = max(1, min(n, (MAX_GRID_SIDE + pad) // (width + pad)))
    rows = -(-n // columns)
    side = max(rows * (height + pad) - pad, columns * (width + pad) - pad)
    if side > MAX_GRID_SIDE:
        raise InvalidParameterError(f"{n} images of {height}×{width} do not fit in a grid of "
                                    f"{MAX_GRID_SIDE} pixels per side; show fewer")
    return columns, max(1, min(int(scale), MAX_GRID_SIDE // side))


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
