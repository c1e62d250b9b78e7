"""The [0, 1] wrapper: every RobustScope model normalises its input inside (robustness' AttackerModel).

Attacks, saliency maps and feature visualisations therefore all work in pixel space: they hand the
model images in [0, 1] and never need to know the dataset's mean and std.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from engine.errors import InvalidParameterError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean and std stored as buffers (saved in checkpoints).

    Args:
        mean, std: one value per channel; every std must be > 0.
    State-dict keys: ``mean`` and ``std``, each of shape (1, C, 1, 1).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.ndim != 1 or mean_t.shape != std_t.shape or mean_t.numel() == 0:
            raise InvalidParameterError(
                f"mean and std need one value per channel and the same length, got {list(mean)} and {list(std)}"
            )
        if not all(float(v) > 0 for v in std):  # plain floats: also works under torch.device("meta")
            raise InvalidParameterError(f"every std must be > 0, got {list(std)}")
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1))
        self.register_buffer("std", std_t.view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) in [0, 1] -> (B, C, H, W) normalised."""
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Classifier(nn.Module):
    """An image classifier taking images in [0, 1]: ``net(normalize(x))``.

    Built by :func:`engine.models.build_model`; checkpoints store its state dict, whose keys are
    ``normalize.mean``, ``normalize.std`` and ``net.<layer>...``.

    Attributes:
        normalize: the :class:`Normalize` module (dataset mean/std as buffers).
        net: the architecture proper, taking normalised images.
        arch: architecture name (a key of ``engine.models.ARCHITECTURES``).
        arch_kwargs: the full keyword arguments the architecture was built with.
        num_classes: number of output logits.
        input_shape: (C, H, W) the model was built for.
        dual_bn: whether every BatchNorm2d is a ``DualBatchNorm2d`` (AdvProp).
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        arch: str,
        arch_kwargs: dict,
        num_classes: int,
        input_shape: Sequence[int],
        mean: Sequence[float],
        std: Sequence[float],
        dual_bn: bool = False,
    ):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net
        self.arch = arch
        self.arch_kwargs = dict(arch_kwargs)
        self.num_classes = int(num_classes)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.dual_bn = bool(dual_bn)

    @property
    def mean(self) -> tuple[float, ...]:
        """The per-channel mean used for normalisation."""
        return tuple(self.normalize.mean.flatten().tolist())

    @property
    def std(self) -> tuple[float, ...]:
        """The per-channel std used for normalisation."""
        return tuple(self.normalize.std.flatten().tolist())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) float in [0, 1] -> logits (B, num_classes)."""
        return self.net(self.normalize(x))

    def extra_repr(self) -> str:
        return (
            f"arch={self.arch!r}, arch_kwargs={self.arch_kwargs}, num_classes={self.num_classes}, "
            f"input_shape={self.input_shape}, dual_bn={self.dual_bn}"
        )
