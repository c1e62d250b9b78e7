"""Pieces shared by the architecture registry (:mod:`engine.models.architectures`) and the
torchvision/timm adapters (:mod:`engine.models.external`), so neither imports the other's internals:
:class:`ArchSpec` (one registered architecture) and :func:`split_relus` (a torchvision ResNet with one
non-inplace ReLU module per use, state-dict keys unchanged).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class ArchSpec:
    """One registered architecture.

    Attributes:
        builder: ``builder(in_channels, num_classes, **kwargs) -> nn.Module`` taking normalised
            (B, in_channels, H, W) images and returning (B, num_classes) logits.
        description: one line for select boxes and ``--help``.
        default_kwargs: every accepted keyword argument with its default.
        has_bn: whether the net has BatchNorm2d layers (so a dual-BN variant exists).
        min_input: smallest accepted image side (H and W), in pixels.
        default_layers: the main blocks, relative to the net (``Classifier`` prefixes ``net.``).
        layers_for: ``layers_for(net) -> list[str]`` for nets whose blocks depend on the instance
            (torchvision/timm); used instead of ``default_layers`` when given.
        check_input: ``check_input((C, H, W), kwargs)`` raising ``InvalidParameterError`` for image
            sizes the net cannot take (e.g. a ViT's fixed size); run before building.
        canonical_kwargs: ``canonical_kwargs(kwargs) -> kwargs`` recording the options as they
            were resolved (e.g. torchvision's ``weights="DEFAULT"`` -> its member's name).
    """

    builder: Callable[..., nn.Module]
    description: str
    default_kwargs: dict = field(default_factory=dict)
    has_bn: bool = True
    min_input: int = 16
    default_layers: tuple[str, ...] = ()
    layers_for: Callable[[nn.Module], list[str]] | None = None
    check_input: Callable[[tuple[int, int, int], dict], None] | None = None
    canonical_kwargs: Callable[[dict], dict] | None = None


class ResidualBlock(nn.Module):
    """A torchvision ``BasicBlock``/``Bottleneck`` rebuilt with one non-inplace ReLU per use.

    Holds the block's own ``conv1, bn1, conv2, bn2[, conv3, bn3]`` and ``downsample`` modules
    (state-dict keys unchanged) and ReLUs ``relu1 .. reluN`` (``reluN`` after the residual sum).
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        self.depth = 3 if hasattr(block, "conv3") else 2
        for i in range(1, self.depth + 1):
            setattr(self, f"conv{i}", getattr(block, f"conv{i}"))
            setattr(self, f"bn{i}", getattr(block, f"bn{i}"))
            setattr(self, f"relu{i}", nn.ReLU())
        self.downsample = block.downsample if block.downsample is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.depth:
                out = getattr(self, f"relu{i}")(out)
        return getattr(self, f"relu{self.depth}")(out + self.downsample(x))


def split_relus(net: nn.Module) -> nn.Module:
    """Make a torchvision ResNet use separate non-inplace ReLU modules (see :class:`ResidualBlock`)."""
    net.relu = nn.ReLU()
    for stage_name in ("layer1", "layer2", "layer3", "layer4"):
        stage = getattr(net, stage_name)
        for index, block in list(stage.named_children()):
            setattr(stage, index, ResidualBlock(block))
    return net
