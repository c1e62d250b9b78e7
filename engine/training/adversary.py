"""Adapter from the trainers to ``engine.attacks`` (the project's single attack loop).

``engine.attacks.PGD`` crafts in eval mode with every parameter's ``requires_grad`` off and
restores both afterwards (``engine.attacks.base.frozen_eval``), which is the mode the trainers want.

TRADES maximises KL(f(x) || f(x')) rather than the cross-entropy. ``engine.attacks.PGD`` always
ascends the cross-entropy of the logits it sees, so :class:`KLObjective` wraps the model to output
two logits ``[-KL(x'), 0]`` with label 0: their cross-entropy is ``softplus(KL(x'))``, a strictly
increasing function of the KL, whose input gradient is the KL gradient times a positive
per-example factor. Sign (l-inf) and per-example normalised (l2) steps ignore that factor, so PGD
on the wrapper takes exactly TRADES' inner-maximisation steps (from a uniform random start rather
than TRADES' 0.001-scaled Gaussian one).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class KLObjective(nn.Module):
    """``x' -> [-KL(p_clean || softmax f(x')), 0]`` (B, 2): CE with label 0 is softplus(KL).

    Args:
        model: the classifier f.
        logits_clean: f(x) (B, K) for the clean batch (detached).
    """

    num_classes = 2

    def __init__(self, model: nn.Module, logits_clean: torch.Tensor):
        super().__init__()
        self.model = model
        self.input_shape = getattr(model, "input_shape", None)
        self.register_buffer("p_clean", F.softmax(logits_clean.detach().float(), dim=1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_q = F.log_softmax(self.model(x).float(), dim=1)                    # (B, K)
        kl = (self.p_clean * (torch.log(self.p_clean.clamp_min(1e-12)) - log_q)).sum(dim=1)  # (B,)
        return torch.stack([-kl, torch.zeros_like(kl)], dim=1)                  # (B, 2)


def craft(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, steps: int,
          alpha: float, loss: str = "ce", amp: bool = False) -> torch.Tensor:
    """PGD images (B, C, H, W) in [0, 1] from ``engine.attacks.PGD`` with a uniform random start.

    Args:
        model: the plain (not DDP) model; the attack runs it in eval mode and restores it.
        x: clean images (B, C, H, W) in [0, 1]; y: labels (B,).
        norm, eps, steps, alpha: the threat model and PGD settings.
        loss: ``"ce"`` (maximise cross-entropy with ``y``) or ``"trades"`` (maximise
            KL(f(x) || f(x')), f(x) taken in eval mode as in TRADES' reference code).
        amp: bf16 autocast inside the attack (CUDA only).

    Returns:
        Detached adversarial images, same shape as ``x``.
    """
    from engine.attacks.pgd import PGD

    attack = PGD(eps=eps, steps=steps, alpha=alpha, norm=norm, random_start=True, amp=amp)
    if loss == "trades":
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                logits_clean = model(x)
        finally:
            model.train(was_training)
        target = KLObjective(model, logits_clean)
        return attack(target, x, torch.zeros_like(y)).adv.detach()
    return attack(model, x, y).adv.detach()
