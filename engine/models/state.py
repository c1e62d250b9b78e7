"""Leave shared models as they were found (DESIGN.md habit 8; torchattacks' ``_recover_model_mode``)."""
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
