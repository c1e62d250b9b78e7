"""Threat models for the attack loop: ℓ∞ and ℓ₂ steps (MadryLab robustness' ``LinfStep``/``L2Step``).

A threat model knows three things: how to draw a random start inside the ε-ball, the steepest
ascent direction of a gradient under its norm (``direction``; ``step`` = α·direction), and how to
project back onto ball ∩ [0, 1] box. DeepFool also needs the dual norm. ``eps`` and ``alpha`` may
be floats or per-example tensors of shape (B,), so one loop serves a per-example ε bisection too.
"""
from __future__ import annotations

import torch

Scalar = float | torch.Tensor


def _per_example(value: Scalar, like: torch.Tensor) -> torch.Tensor | float:
    """A float stays a float; a (B,) tensor becomes (B, 1, 1, 1) to broadcast over ``like``."""
    if isinstance(value, torch.Tensor):
        return value.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))
    return float(value)


def _flat_norm(t: torch.Tensor, p: float) -> torch.Tensor:
    """Per-example p-norm of (B, ...) -> (B, 1, 1, 1) (broadcastable back)."""
    return t.flatten(1).norm(p=p, dim=1).view(-1, *([1] * (t.dim() - 1)))


class ThreatStep:
    """Base class: one threat model with radius ``eps`` and step size ``alpha``."""

    name = ""
    #: the norm used to measure perturbations (``float("inf")`` or 2.0)
    p = 2.0

    def __init__(self, eps: Scalar, alpha: Scalar | None = None):
        self.eps = eps
        self.alpha = eps if alpha is None else alpha

    def random_start(self, x: torch.Tensor) -> torch.Tensor:
        """A uniformly random point of the ε-ball around ``x`` (B,C,H,W), clipped to [0, 1]."""
        raise NotImplementedError

    def direction(self, grad: torch.Tensor) -> torch.Tensor:
        """Unit-norm steepest ascent direction of ``grad`` under this norm (B,C,H,W)."""
        raise NotImplementedError

    def dual_norm(self, grad: torch.Tensor) -> torch.Tensor:
        """Per-example dual norm of ``grad``, shape (B, 1, 1, 1)."""
        raise NotImplementedError

    def clip_delta(self, delta: torch.Tensor) -> torch.Tensor:
        """Project a perturbation onto the ε-ball (no box)."""
        raise NotImplementedError

    def step(self, x_adv: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """One ascent step: ``x_adv + α · direction(grad)``."""
        return x_adv + _per_example(self.alpha, x_adv) * self.direction(grad)

    def project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Project ``x_adv`` onto B(x, ε) ∩ [0, 1]. Clipping to the box only moves pixels towards
        ``x`` (which is in the box), so the result stays inside the ball."""
        return (x + self.clip_delta(x_adv - x)).clamp_(0.0, 1.0)


class LinfStep(ThreatStep):
    """ℓ∞ ball: sign-gradient steps, coordinate-wise clipping (Madry et al. 2018)."""

    name = "linf"
    p = float("inf")

    def random_start(self, x):
        eps = _per_example(self.eps, x)
        return (x + (torch.rand_like(x) * 2 - 1) * eps).clamp_(0.0, 1.0)

    def direction(self, grad):
        return grad.sign()

    def dual_norm(self, grad):
        return _flat_norm(grad, 1.0)

    def clip_delta(self, delta):
        eps = _per_example(self.eps, delta)
        if isinstance(eps, float):
            return delta.clamp(-eps, eps)
        return torch.maximum(torch.minimum(delta, eps), -eps)


class L2Step(ThreatStep):
    """ℓ₂ ball: normalised-gradient steps, radial projection."""

    name = "l2"
    p = 2.0

    def random_start(self, x):
        eps = _per_example(self.eps, x)
        noise = torch.randn_like(x)
        dims = x[0].numel()
        radius = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) ** (1.0 / dims)
        return (x + noise / _flat_norm(noise, 2.0).clamp_min(1e-12) * radius * eps).clamp_(0.0, 1.0)

    def direction(self, grad):
        return grad / _flat_norm(grad, 2.0).clamp_min(1e-12)

    def dual_norm(self, grad):
        return _flat_norm(grad, 2.0)

    def clip_delta(self, delta):
        eps = _per_example(self.eps, delta)
        factor = (eps / _flat_norm(delta, 2.0).clamp_min(1e-12)).clamp(max=1.0)
        return delta * factor


#: threat-model name -> step class; fills the "norm" choices everywhere.
STEPS: dict[str, type[ThreatStep]] = {"linf": LinfStep, "l2": L2Step}
