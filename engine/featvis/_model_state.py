"""Leaving shared models as they were found: mode, ``requires_grad`` and device helpers."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
from torch import nn

from engine.errors import InvalidParameterError


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def evaluation_state(model: nn.Module, freeze: bool = False) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (and optionally freeze its parameters) inside the block.

    Every submodule's ``training`` flag and every parameter's ``requires_grad`` are restored on
    exit, also when the block raises (torchattacks' ``_recover_model_mode`` habit).
    """
    modes = [(module, module.training) for module in model.modules()]
    grads = [(param, param.requires_grad) for param in model.parameters()]
    try:
        model.eval()
        if freeze:
            for param, _ in grads:
                param.requires_grad_(False)
        yield model
    finally:
        for module, mode in modes:
            module.training = mode
        for param, flag in grads:
            param.requires_grad_(flag)


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
