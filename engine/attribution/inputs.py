"""The attribution methods' checked inputs: images in [0, 1] (:func:`as_images`), class indices
(:func:`as_labels`) and the models' predicted classes (:func:`predict`)."""
from __future__ import annotations


import numpy as np
import torch
from torch import nn

from engine.errors import InvalidParameterError
from engine.models.state import batched_logits


def as_images(images, name: str = "images") -> torch.Tensor:
    """Check and convert a batch of images to a float32 tensor (B, C, H, W) in [0, 1].

    Raises:
        InvalidParameterError: not 4-D, empty, not finite, or values outside [0, 1].
    """
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise InvalidParameterError(f"{name} must be a tensor or array (B, C, H, W), got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] == 0:
        raise InvalidParameterError(
            f"{name} must have shape (B, C, H, W) with B >= 1, got {tuple(images.shape)}"
        )
    images = images.detach().float()
    if not torch.isfinite(images).all():
        raise InvalidParameterError(f"{name} contain NaN or infinite values")
    low, high = float(images.min()), float(images.max())
    if low < -1e-4 or high > 1 + 1e-4:
        raise InvalidParameterError(
            f"{name} must be in [0, 1] (models normalise internally), got values in [{low:.3g}, {high:.3g}]"
        )
    return images.clamp(0, 1)


def as_labels(labels, batch: int, num_classes: int, name: str = "labels") -> torch.Tensor:
    """Check class indices: an int (broadcast) or a sequence/tensor of ``batch`` ints in range.

    Returns:
        A long tensor (B,) on the CPU.

    Raises:
        InvalidParameterError: wrong length or a class index outside ``[0, num_classes)``.
    """
    if isinstance(labels, (int, np.integer)):
        labels = [int(labels)] * batch
    tensor = torch.as_tensor(np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels))
    if tensor.ndim != 1 or tensor.shape[0] != batch:
        raise InvalidParameterError(f"{name} must be one int or {batch} ints, got shape {tuple(tensor.shape)}")
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool:
        raise InvalidParameterError(f"{name} must be integer class indices, got dtype {tensor.dtype}")
    tensor = tensor.long()
    if int(tensor.min()) < 0 or int(tensor.max()) >= num_classes:
        raise InvalidParameterError(
            f"{name} must be class indices in [0, {num_classes - 1}], got {tensor.tolist()[:8]}"
        )
    return tensor


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits of ``model`` on ``images`` (B, C, H, W) in batches, in eval mode; returns (B, K) on CPU."""
    return batched_logits(model, images, batch_size)
