"""Input transforms for CKA runs: clean, adversarial (crafted on model A or B), or distorted.

Each builder returns ``transform(images (B,C,H,W) in [0,1], labels (B,)) -> images`` for
:func:`engine.similarity.compare_models`, or None for clean inputs.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from engine.similarity.features import Transform


def attack_transform(attack: Callable, model: nn.Module) -> Transform:
    """Adversarial inputs crafted on ``model`` by ``attack`` (an ``engine.attacks`` attack).

    Args:
        attack: callable ``attack(model, x, y) -> result`` with ``result.adv`` (B,C,H,W), e.g.
            ``engine.attacks.make_attack("pgd", dataset)``; a plain tensor return also works.
        model: the model the examples are crafted on (A or B).
    """

    def transform(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out = attack(model, images, labels)
        return getattr(out, "adv", out)

    return transform


def distortion_transform(name: str, severity: int, seed: int = 0) -> Transform:
    """Distorted inputs: ``engine.data.distortions.apply(name, images, severity, seed)``."""
    from engine.data import distortions

    distortions.get_distortion(name)                     # unknown name fails early

    def transform(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return distortions.apply(name, images, severity, seed=seed)

    return transform
