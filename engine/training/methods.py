"""The training objectives: one small loss function per method, all crafting with ``engine.attacks``.

Every method function takes a :class:`Step` (the model, the recipe, the attack) and a batch, and
returns ``(loss (scalar), logits (B, K))``; the logits are what train accuracy is measured on.

Attack mode: adversarial examples are crafted with the model in **eval mode** (BatchNorm uses its
running statistics and is not updated by the attack's forward passes), as MadryLab's
``robustness`` library does; the training forward pass afterwards runs in train mode. The attack
runs on the plain module (never through the DDP wrapper), so crafting does not trigger gradient
synchronisation; stray parameter gradients it may leave are cleared before the training backward.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from engine.training.config import TrainConfig


@dataclass
class Step:
    """What a method needs for one batch.

    Attributes:
        model: the module trained (maybe DDP-wrapped); called for the training forward passes.
        raw: the plain module (attacks run on it).
        config: the recipe.
        autocast: a factory of the mixed-precision context (``nullcontext`` on CPU).
    """

    model: nn.Module
    raw: nn.Module
    config: TrainConfig
    autocast: Callable = nullcontext

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Training forward pass (train mode, mixed precision when enabled) -> logits (B, K)."""
        with self.autocast():
            return self.model(x)

    def craft(self, x: torch.Tensor, y: torch.Tensor, loss: str = "ce", steps: int | None = None,
              alpha: float | None = None) -> torch.Tensor:
        """Adversarial images (B, C, H, W) for the batch, crafted in eval mode with ``engine.attacks``."""
        from engine.training.adversary import craft

        cfg = self.config
        return craft(self.raw, x, y, norm=cfg.norm, eps=cfg.eps,
                     steps=cfg.attack_steps if steps is None else steps,
                     alpha=cfg.attack_alpha if alpha is None else alpha, loss=loss,
                     amp=cfg.amp and x.device.type == "cuda")


def standard_loss(step: Step, x: torch.Tensor, y: torch.Tensor):
    """Cross-entropy on clean images."""
    logits = step.forward(x)
    return F.cross_entropy(logits.float(), y), logits


def adversarial_loss(step: Step, x: torch.Tensor, y: torch.Tensor):
    """Cross-entropy on PGD images (Madry et al. 2018); with one step and alpha = 1.25 eps this is
    fast FGSM with random start (Wong et al. 2020)."""
    x_adv = step.craft(x, y)
    logits = step.forward(x_adv)
    return F.cross_entropy(logits.float(), y), logits


def trades_loss(step: Step, x: torch.Tensor, y: torch.Tensor):
    """TRADES (Zhang et al. 2019): CE(f(x), y) + beta * KL(softmax f(x) || softmax f(x_adv)),
    x_adv maximising the KL term within the eps-ball."""
    x_adv = step.craft(x, y, loss="trades")
    logits = step.forward(x)
    logits_adv = step.forward(x_adv)
    kl = F.kl_div(F.log_softmax(logits_adv.float(), dim=1), F.softmax(logits.float(), dim=1),
                  reduction="batchmean")
    return F.cross_entropy(logits.float(), y) + step.config.trades_beta * kl, logits


def advprop_loss(step: Step, x: torch.Tensor, y: torch.Tensor):
    """AdvProp (Xie et al. 2019): CE of clean images through the main BN + CE of PGD images
    (crafted and trained through the auxiliary BN)."""
    from engine.models import bn_branch

    with bn_branch(step.raw, "aux"):
        x_adv = step.craft(x, y)
        loss_adv = F.cross_entropy(step.forward(x_adv).float(), y)
    logits = step.forward(x)
    return F.cross_entropy(logits.float(), y) + loss_adv, logits


#: method name -> loss function (the registry the trainer dispatches on).
METHOD_LOSSES: dict[str, Callable] = {
    "standard": standard_loss,
    "pgd": adversarial_loss,
    "fast": adversarial_loss,
    "trades": trades_loss,
    "advprop": advprop_loss,
}

#: extra forward+backward passes per batch of each method (used by cost estimates).
def passes_per_batch(config: TrainConfig) -> int:
    """Forward+backward passes per training batch: 1 + attack steps (+1 for TRADES/AdvProp)."""
    extra = {"standard": 0, "pgd": 0, "fast": 0, "trades": 1, "advprop": 1}[config.method]
    return 1 + config.attack_steps + extra
