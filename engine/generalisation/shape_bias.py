"""Shape bias on cue-conflict images (Geirhos et al. 2019; used by Agarwal & Chen 2020).

A cue-conflict image has the shape of one class and the texture of another. Among the images the
model classifies as *either* its shape class or its texture class,

    shape bias = shape decisions / (shape decisions + texture decisions),

1.0 = always follows shape, 0.0 = always follows texture. Images whose shape and texture classes
coincide carry no conflict and are excluded (as in Geirhos et al.).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from engine.errors import InvalidParameterError
from engine.generalisation.ood import predict


class ShapeBiasResult(NamedTuple):
    """Shape-vs-texture decisions on cue-conflict images.

    Attributes:
        shape_bias: n_shape / (n_shape + n_texture) in [0, 1]; NaN when neither was ever chosen.
        shape_fraction, texture_fraction, other_fraction: shares of the ``n`` conflicting images
            classified as the shape class, the texture class, or neither (sum to 1).
        n_shape, n_texture, n_other: the counts.
        n: conflicting images used; n_excluded: images whose two labels agree (left out).
    """

    shape_bias: float
    shape_fraction: float
    texture_fraction: float
    other_fraction: float
    n_shape: int
    n_texture: int
    n_other: int
    n: int
    n_excluded: int


def _as_labels(name: str, values, n: int | None = None) -> torch.Tensor:
    labels = torch.as_tensor(values).long().flatten().cpu()
    if n is not None and len(labels) != n:
        raise InvalidParameterError(f"{name} has {len(labels)} entries, expected {n}")
    return labels


def shape_bias_from_predictions(predictions, shape_labels, texture_labels) -> ShapeBiasResult:
    """Shape bias from top-1 predictions (N,), shape labels (N,) and texture labels (N,)."""
    preds = _as_labels("predictions", predictions)
    shapes = _as_labels("shape_labels", shape_labels, len(preds))
    textures = _as_labels("texture_labels", texture_labels, len(preds))
    conflict = shapes != textures
    preds, shapes, textures = preds[conflict], shapes[conflict], textures[conflict]
    n = len(preds)
    n_shape = int((preds == shapes).sum())
    n_texture = int((preds == textures).sum())
    n_other = n - n_shape - n_texture
    decided = n_shape + n_texture
    bias = n_shape / decided if decided else math.nan
    share = (lambda k: k / n) if n else (lambda k: math.nan)
    return ShapeBiasResult(bias, share(n_shape), share(n_texture), share(n_other),
                           n_shape, n_texture, n_other, n, int((~conflict).sum()))


def shape_bias(model: nn.Module, images: torch.Tensor, shape_labels, texture_labels,
               batch_size: int = 256) -> ShapeBiasResult:
    """Shape bias of ``model`` on cue-conflict images.

    Args:
        model: classifier taking (N, C, H, W) images in [0, 1] (run in eval mode on its device,
            mode restored).
        images: (N, C, H, W) cue-conflict images in [0, 1], e.g.
            ``engine.data.shapes.make_shapes(n, variant="cue-conflict").images``.
        shape_labels: (N,) class of each image's shape (``ShapesBatch.labels``).
        texture_labels: (N,) class whose texture each image carries (``ShapesBatch.textures``).
        batch_size: images per forward pass.

    Returns:
        :class:`ShapeBiasResult`.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InvalidParameterError("images must be a tensor (N, C, H, W) in [0, 1]")
    return shape_bias_from_predictions(predict(model, images, batch_size), shape_labels, texture_labels)


class CueConflictSet(NamedTuple):
    """Cue-conflict images (N, C, H, W) in [0, 1] with their shape and texture classes (N,)."""

    images: torch.Tensor
    shape_labels: torch.Tensor
    texture_labels: torch.Tensor


#: Why datasets other than ``shapes`` get no shape-bias score.
CUE_CONFLICT_UNAVAILABLE = (
    "Cue-conflict images exist only for the synthetic `shapes` dataset (shape of one class, "
    "texture of another); `{dataset}` has no texture labels, so no shape-bias score is computed. "
    "Use the texture-less distortions (edges, silhouette, low-pass) and patch shuffle instead."
)


def cue_conflict_set(dataset: str, n: int, seed: int = 0, image_size: int = 32) -> CueConflictSet | None:
    """``n`` cue-conflict images for ``dataset``, or None where the dataset has none.

    Only ``shapes`` has them (``engine.data.shapes.make_shapes(variant="cue-conflict")``); for
    other datasets show :data:`CUE_CONFLICT_UNAVAILABLE`.
    """
    if dataset != "shapes":
        return None
    from engine.data.shapes import make_shapes

    batch = make_shapes(n, seed=seed, variant="cue-conflict", image_size=image_size)
    return CueConflictSet(batch.images, batch.labels, batch.textures)
