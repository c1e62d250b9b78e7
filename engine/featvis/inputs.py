"""The feature-visualisation code's checked input: a batch of images as a float32 tensor."""
from __future__ import annotations


import numpy as np
import torch

from engine.errors import InvalidParameterError


def as_image_tensor(images) -> torch.Tensor:
    """Check and convert images (tensor or array, (N, C, H, W) in [0, 1]) to a float32 tensor."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise InvalidParameterError(
            f"images must be a tensor or array of shape (N, C, H, W), got {type(images).__name__}"
        )
    if images.ndim != 4 or images.shape[0] == 0:
        raise InvalidParameterError(
            f"images must have shape (N, C, H, W) with N >= 1, got {tuple(images.shape)}"
        )
    return images.float()
