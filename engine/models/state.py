"""Leave shared models as they were found (as torchattacks' ``_recover_model_mode`` does)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def frozen_eval(model: nn.Module, freeze: bool = True) -> Iterator[nn.Module]:
    """Eval mode (and, with ``freeze``, ``requires_grad=False`` on every parameter) inside the block.

    Every submodule's ``training`` flag and every parameter's ``requires_grad`` are restored on
    exit, module by module and parameter by parameter, also when the block raises.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        if freeze:
            for p, _ in grads:
                p.requires_grad_(False)
        yield model
    finally:
        for m, flag in modes:
            m.training = flag
        for p, flag in grads:
            p.requires_grad_(flag)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextmanager
def moved_to(model: nn.Module, device=None) -> Iterator[torch.device]:
    """The model on ``device`` (default: where it is) inside the block, back on its own device
    afterwards, also when the block raises; yields the device it runs on."""
    home = model_device(model)
    target = torch.device(device) if device is not None else home
    model.to(target)
    try:
        yield target
    finally:
        model.to(home)


@torch.no_grad()
def batched_logits(model: nn.Module, images: torch.Tensor, batch_size: int = 256, device=None) -> torch.Tensor:
    """(N, K) float32 logits of ``model`` on ``images`` (N, C, H, W), ``batch_size`` at a time, on
    the CPU; in eval mode on ``device`` (default: the model's own), every mode and the model's
    device restored afterwards. An empty batch gives a (0, 0) tensor."""
    out = []
    with moved_to(model, device) as target, frozen_eval(model):
        for i in range(0, len(images), batch_size):
            out.append(model(images[i:i + batch_size].to(target)).float().cpu())
    return torch.cat(out) if out else torch.zeros((0, 0))


def predict_labels(model: nn.Module, images: torch.Tensor, batch_size: int = 256, device=None) -> torch.Tensor:
    """(N,) long predicted classes on the CPU (see :func:`batched_logits`)."""
    logits = batched_logits(model, images, batch_size, device)
    return logits.argmax(dim=1) if len(logits) else torch.zeros(0, dtype=torch.long)
