"""Small seeded models shared by several test files (imported as a plain module from tests/)."""
from __future__ import annotations

import torch

from engine.models import bn_branch, build_model


def advprop_model(num_classes: int = 3, shape: tuple = (3, 16, 16), seed: int = 0):
    """A tiny dual-BN (AdvProp) small_cnn whose main and aux BatchNorm statistics differ: the main
    branch saw uniform images, the aux branch brighter ones. Returned in eval mode."""
    torch.manual_seed(seed)
    channels = shape[0]
    model = build_model("small_cnn", num_classes, shape, [0.5] * channels, [0.25] * channels, dual_bn=True,
                        width=4, hidden=8)
    model.train()
    with torch.no_grad():
        model(torch.rand(16, *shape))
        with bn_branch(model, "aux"):
            model(torch.rand(16, *shape) * 3)
    return model.eval()
