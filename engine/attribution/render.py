"""Turning attribution maps into pictures: channel reduction, percentile normalisation, colour
maps, overlays and PNG bytes. Pure functions on arrays; no file I/O."""
from __future__ import annotations

import io

import numpy as np

from engine.errors import InvalidParameterError

#: Channel reductions (C, H, W) -> (H, W), applied on axis -3 so batches work too.
REDUCTIONS = {
    "abs_sum": lambda a: np.abs(a).sum(axis=-3),
    "max": lambda a: np.abs(a).max(axis=-3),
}

#: Colour maps as anchor colours spread evenly over [0, 1] (linear interpolation between them).
COLORMAPS: dict[str, np.ndarray] = {
    "inferno": np.array(
        [[0.0, 0.0, 0.02], [0.34, 0.06, 0.43], [0.73, 0.21, 0.33], [0.98, 0.55, 0.04], [0.99, 1.0, 0.64]]
    ),
    "hot": np.array([[0.0, 0.0, 0.0], [0.9, 0.0, 0.0], [1.0, 0.9, 0.0], [1.0, 1.0, 1.0]]),
    "gray": np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]),
}


def _as_array(x) -> np.ndarray:
    """A float32 numpy copy of an array or (CPU/GPU) tensor."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def to_heatmap(maps, reduce: str = "abs_sum", percentile: float = 99.0) -> np.ndarray:
    """Reduce attribution maps over channels and normalise each map to [0, 1].

    Args:
        maps: attributions (B, C, H, W) or (C, H, W), array or tensor.
        reduce: ``"abs_sum"`` (sum of absolute values over channels) or ``"max"`` (largest
            absolute value over channels).
        percentile: each map is divided by its own ``percentile``-th percentile and clipped to 1
            (100 = divide by the maximum); a few extreme pixels then do not wash out the rest.

    Returns:
        float32 array (B, H, W) or (H, W), values in [0, 1]; an all-zero map stays zero.

    Raises:
        InvalidParameterError: wrong shape, unknown reduction, or percentile outside (0, 100].
    """
    a = _as_array(maps)
    if a.ndim not in (3, 4):
        raise InvalidParameterError(f"maps must be (C, H, W) or (B, C, H, W), got shape {a.shape}")
    if reduce not in REDUCTIONS:
        raise InvalidParameterError(f"unknown reduction {reduce!r}; choose from {', '.join(REDUCTIONS)}")
    if not 0 < percentile <= 100:
        raise InvalidParameterError(f"percentile must be in (0, 100], got {percentile!r}")
    h = REDUCTIONS[reduce](a)  # (B, H, W) or (H, W)
    flat = h.reshape(-1, h.shape[-2] * h.shape[-1])  # (B, H*W)
    scale = np.percentile(flat, percentile, axis=1)
    scale = np.where(scale > 0, scale, flat.max(axis=1))  # sparse maps: fall back to the maximum
    scale = np.where(scale > 0, scale, 1.0)  # all-zero maps stay zero
    out = np.clip(flat / scale[:, None], 0.0, 1.0).reshape(h.shape)
    return out.astype(np.float32)


def colorize(heatmap, cmap: str = "inferno") -> np.ndarray:
    """Map a heatmap (H, W) in [0, 1] to RGB (H, W, 3) float32 in [0, 1] with a named colour map."""
    if cmap not in COLORMAPS:
        raise InvalidParameterError(f"unknown colour map {cmap!r}; choose from {', '.join(COLORMAPS)}")
    h = np.clip(_as_array(heatmap), 0.0, 1.0)
    if h.ndim != 2:
        raise InvalidParameterError(f"heatmap must be (H, W), got shape {h.shape}")
    anchors = COLORMAPS[cmap]
    grid = np.linspace(0.0, 1.0, len(anchors))
    rgb = [np.interp(h, grid, anchors[:, c]) for c in range(3)]
    return np.stack(rgb, axis=-1).astype(np.float32)


def image_to_rgb(image) -> np.ndarray:
    """An image (C, H, W) with C in {1, 3}, or (H, W), in [0, 1] -> RGB (H, W, 3) float32."""
    x = _as_array(image)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise InvalidParameterError(f"image must be (C, H, W) with C = 1 or 3, or (H, W); got shape {x.shape}")
    x = np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x
    return np.clip(x.transpose(1, 2, 0), 0.0, 1.0)


def overlay(image, heatmap, alpha: float = 0.6, cmap: str = "inferno") -> np.ndarray:
    """Blend a coloured heatmap over an image, weighted by the heatmap so that unattributed pixels
    show the image unchanged.

    Args:
        image: (C, H, W) with C in {1, 3}, or (H, W), values in [0, 1].
        heatmap: (H, W) in [0, 1] (e.g. one map of :func:`to_heatmap`).
        alpha: opacity of the colour where the heatmap is 1, in [0, 1].
        cmap: a key of :data:`COLORMAPS`.

    Returns:
        RGB float32 array (H, W, 3) in [0, 1]: ``image * (1 - alpha*h) + colour * alpha*h``.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise InvalidParameterError(f"alpha must be in [0, 1], got {alpha!r}")
    rgb = image_to_rgb(image)
    colour = colorize(heatmap, cmap)
    if colour.shape != rgb.shape:
        raise InvalidParameterError(f"heatmap {colour.shape[:2]} and image {rgb.shape[:2]} sizes differ")
    weight = float(alpha) * np.clip(_as_array(heatmap), 0.0, 1.0)[..., None]  # (H, W, 1)
    return (rgb * (1.0 - weight) + colour * weight).astype(np.float32)


def to_png_bytes(rgb, scale: int = 1) -> bytes:
    """Encode an RGB (H, W, 3) or grey (H, W) float array in [0, 1] as PNG bytes (PIL).

    Args:
        rgb: the picture; values are clipped to [0, 1].
        scale: integer nearest-neighbour upscaling (small 28x28 maps are unreadable otherwise).
    """
    from PIL import Image

    x = np.clip(_as_array(rgb), 0.0, 1.0)
    if x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[-1] != 3):
        raise InvalidParameterError(f"expected an (H, W, 3) or (H, W) picture, got shape {x.shape}")
    if int(scale) < 1:
        raise InvalidParameterError(f"scale must be >= 1, got {scale!r}")
    x = np.repeat(np.repeat(x, int(scale), axis=0), int(scale), axis=1)
    buffer = io.BytesIO()
    Image.fromarray(np.round(x * 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()
