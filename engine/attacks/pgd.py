"""The attack loop, written once: PGD (Madry et al. 2018) over any threat model, and FGSM
(Goodfellow et al. 2015) as its one-step ℓ∞ case.

    x⁰ = x + U(ball)  (optional)     xᵗ⁺¹ = Proj_{B(x,ε) ∩ [0,1]}(xᵗ + α · direction(∇ₓ L(xᵗ)))

with L the cross-entropy with the label (untargeted) or minus the cross-entropy with the target.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.attacks.base import (
    MAX_RESTARTS, MAX_STEPS, Attack, Forward, attack_loss, check_eps, check_norm, check_positive,
    check_positive_int, is_success,
)
from engine.attacks.steps import STEPS, ThreatStep
from engine.errors import InvalidParameterError


def default_alpha(eps: float, steps: int) -> float:
    """The step size used when none is given: 2.5·ε/steps (Madry et al. 2018)."""
    return 2.5 * eps / steps


def pgd_loop(
    fwd: Forward,
    x: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor | None,
    threat: ThreatStep,
    steps: int,
    random_start: bool = True,
    early_stop: bool = False,
    tick_offset: int = 0,
    tick_total: int | None = None,
) -> torch.Tensor:
    """Run ``steps`` projected-gradient steps from ``x`` (B,C,H,W); return the final iterate.

    With ``early_stop`` an example is frozen (and no longer computed) as soon as it is adversarial.
    ``threat.eps``/``threat.alpha`` may be per-example (B,) tensors.
    """
    x_adv = threat.random_start(x) if random_start else x.clone()
    total = tick_total or steps
    # examples still being updated: all of them (None) unless early_stop freezes successful ones
    active = torch.arange(len(x), device=x.device) if early_stop else None
    for t in range(steps):
        fwd.tick(tick_offset + t, total)
        y_a, t_a, x_a = _rows(y, active), _rows(targets, active), _rows(x_adv, active)
        grad, logits = fwd.input_grad(x_a, lambda z: attack_loss(z, y_a, t_a))  # (B', C, H, W)
        if active is not None:
            keep = ~is_success(logits, y_a, t_a)
            active, x_a, grad = active[keep], x_a[keep], grad[keep]
            if len(active) == 0:
                break
        threat_a = threat if active is None else _subset(threat, active)
        new = threat_a.project(threat_a.step(x_a, grad), _rows(x, active))
        if active is None:
            x_adv = new
        else:
            x_adv[active] = new
    return x_adv.detach()


def _rows(t: torch.Tensor | None, idx: torch.Tensor | None) -> torch.Tensor | None:
    """``t[idx]``, or ``t`` itself when ``idx`` is None (all rows) or ``t`` is None."""
    return t if t is None or idx is None else t[idx]


def _subset(threat: ThreatStep, idx: torch.Tensor) -> ThreatStep:
    """The same threat model restricted to examples ``idx`` (only matters for per-example ε)."""
    eps = threat.eps[idx] if isinstance(threat.eps, torch.Tensor) else threat.eps
    alpha = threat.alpha[idx] if isinstance(threat.alpha, torch.Tensor) else threat.alpha
    return type(threat)(eps, alpha)


@dataclass
class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018, "Towards Deep Learning Models Resistant to
    Adversarial Attacks").

    Args:
        eps: radius of the threat model in [0, 1] pixel units: ℓ∞ in [0, 1], ℓ₂ in
            [0, sqrt(C·H·W)] (checked when called, against the images).
        steps: number of gradient steps, 1 to ``MAX_STEPS`` (10,000).
        alpha: step size; default 2.5·eps/steps.
        norm: ``"linf"`` or ``"l2"`` (keys of :data:`engine.attacks.steps.STEPS`).
        random_start: start from a uniform point of the ball.
        restarts: independent runs (1 to ``MAX_RESTARTS`` = 100); per example the first
            successful one is kept.
        targeted: push towards ``targets`` instead of away from the label.
        early_stop: stop updating each example once it is adversarial (a minimal-effort example).
        amp, channels_last: bf16 autocast / channels-last memory format (CUDA only).
    Call: ``PGD(eps=8/255)(model, x, y) -> AttackResult``.
    """

    eps: float = 8 / 255
    steps: int = 20
    alpha: float | None = None
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1
    targeted: bool = False
    early_stop: bool = False
    amp: bool = False
    channels_last: bool = False

    name = "pgd"
    title = "PGD (Madry et al. 2018)"

    def __post_init__(self):
        check_norm(self.norm)
        self.eps = check_eps(self.eps, self.norm)  # ℓ∞ <= 1 here; ℓ₂ against the image size when called
        check_positive_int("steps", self.steps, MAX_STEPS)
        check_positive_int("restarts", self.restarts, MAX_RESTARTS)
        if self.alpha is not None:
            self.alpha = check_positive("alpha (step size)", self.alpha)

    @property
    def step_size(self) -> float:
        """The α actually used."""
        return self.alpha if self.alpha is not None else default_alpha(self.eps, self.steps)

    def config(self) -> dict:
        return {**super().config(), "alpha": self.step_size}

    def _craft(self, fwd, x, y, targets, logits_clean):
        threat = STEPS[self.norm](self.eps, self.step_size)
        total = self.steps * self.restarts
        best, best_logits, found = None, None, None
        for r in range(self.restarts):
            adv = pgd_loop(fwd, x, y, targets, threat, self.steps, self.random_start, self.early_stop,
                           tick_offset=r * self.steps, tick_total=total)
            if self.restarts == 1:
                return adv, None
            with torch.no_grad():
                logits = fwd(adv)
            ok = is_success(logits, y, targets)
            if best is None:
                best, best_logits, found = adv, logits, ok
                continue
            take = ok & ~found
            best[take], best_logits[take] = adv[take], logits[take]
            found |= ok
        return best, best_logits


@dataclass
class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): the PGD loop with one ℓ∞ step of size ε
    from the clean image. Args: ``eps`` (>= 0), ``targeted``, ``amp``, ``channels_last``."""

    eps: float = 8 / 255
    steps: int = 1
    alpha: float | None = None
    norm: str = "linf"
    random_start: bool = False
    restarts: int = 1
    targeted: bool = False
    early_stop: bool = False
    amp: bool = False
    channels_last: bool = False

    name = "fgsm"
    title = "FGSM (Goodfellow et al. 2015)"

    def __post_init__(self):
        super().__post_init__()
        if (self.steps, self.norm, self.random_start, self.restarts, self.early_stop) != (1, "linf", False, 1, False) \
                or self.alpha not in (None, self.eps):
            raise InvalidParameterError(
                "FGSM is one ℓ∞ step of size ε from the clean image; use PGD for steps, α, ℓ₂, "
                "random start, restarts or early stop"
            )
        self.alpha = self.eps

    def config(self) -> dict:
        return {"attack": self.name, "eps": self.eps, "norm": "linf", "steps": 1, "alpha": self.eps,
                "targeted": self.targeted, "amp": self.amp, "channels_last": self.channels_last}
