"""Minimal-perturbation attacks by the penalty method, sharing one search over the penalty weight:

* box-constrained L-BFGS (Szegedy et al. 2013, "Intriguing properties of neural networks"):
  minimise ``c·‖r‖² + CE(f(x + r), l)`` with ``x + r ∈ [0, 1]``, by ``torch.optim.LBFGS``;
* Carlini–Wagner ℓ₂ (Carlini & Wagner 2017): minimise ``‖r‖² + c·max(max_{i≠t} Zᵢ − Z_t, −κ)``
  by Adam.

Both optimise in tanh space, ``x + r = (tanh(w) + 1) / 2``, which keeps every iterate inside the
[0, 1] box exactly (the smooth replacement for L-BFGS-B's bounds). Internally both minimise
``‖r‖² + s·loss`` with a per-example *strength* s (L-BFGS: s = 1/c; CW: s = c). The search starts
from ``initial_const`` and, per example, multiplies the strength by 10 until the target is reached,
then bisects between the last failing and succeeding values; the smallest-ℓ₂ adversarial found at
any iterate is kept. Szegedy et al. phrase this as a line search for "the minimum c > 0"; with the
penalty written as ``c·|r|``, a larger c gives a smaller r, so what the search delivers is the
smallest perturbation that still reaches the target — the quantity the paper reports.
Examples never made adversarial are returned unchanged (zero perturbation, success False).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.attacks.base import (
    MAX_SEARCH_STEPS, MAX_STEPS, Attack, Forward, check_positive, check_positive_int, is_success, margin,
)


def to_tanh_space(x: torch.Tensor) -> torch.Tensor:
    """w with ``(tanh(w) + 1) / 2 ≈ x`` (x shrunk by 1e-6 so that 0 and 1 stay finite)."""
    return torch.atanh((2 * x - 1) * (1 - 1e-6))


def from_tanh_space(w: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] from tanh-space variables."""
    return (torch.tanh(w) + 1) / 2


class BestTracker:
    """Per example, the adversarial image with the smallest ℓ₂ perturbation seen so far."""

    def __init__(self, x, y, targets, logits_clean):
        self.x, self.y, self.targets = x, y, targets
        self.adv = x.clone()
        self.logits = logits_clean.clone()
        self.norm = torch.full((len(x),), math.inf, device=x.device)
        self.round_success = torch.zeros(len(x), dtype=torch.bool, device=x.device)

    @torch.no_grad()
    def update(self, adv: torch.Tensor, logits: torch.Tensor) -> None:
        """Record ``adv`` (B,C,H,W) where it is adversarial and smaller than the best so far."""
        ok = is_success(logits, self.y, self.targets)
        norm = (adv - self.x).flatten(1).norm(dim=1)
        better = ok & (norm < self.norm)
        self.adv[better], self.logits[better], self.norm[better] = adv[better], logits[better], norm[better]
        self.round_success |= ok


@dataclass
class PenaltyAttack(Attack):
    """Shared search over the penalty strength; subclasses define ``_loss`` and ``_minimise``."""

    search_steps: int = 5
    initial_const: float = 1.0
    targeted: bool = True
    amp: bool = False
    channels_last: bool = False

    bounded = False

    def __post_init__(self):
        check_positive_int("search_steps", self.search_steps, MAX_SEARCH_STEPS)
        check_positive("initial_const", self.initial_const)

    def _strength(self, const: float) -> float:
        """Penalty constant -> strength s of the loss term (bigger = more aggressive)."""
        return const

    def _craft(self, fwd, x, y, targets, logits_clean):
        best = BestTracker(x, y, targets, logits_clean)
        s = torch.full((len(x),), self._strength(self.initial_const), device=x.device)
        lo = torch.zeros_like(s)                        # strongest strength known to fail
        hi = torch.full_like(s, math.inf)               # weakest strength known to succeed
        for k in range(self.search_steps):
            best.round_success.zero_()
            self._minimise(fwd, x, y, targets, s, best, k)
            ok = best.round_success
            hi = torch.where(ok, torch.minimum(hi, s), hi)
            lo = torch.where(ok, lo, torch.maximum(lo, s))
            s = torch.where(torch.isinf(hi), s * 10, (lo + hi) / 2)
        return best.adv, best.logits

    def _objective(self, fwd: Forward, w, x, y, targets, s, best):
        """``(‖r‖² + s·loss).sum()`` at tanh-space ``w``; records adversarials in ``best``."""
        adv = from_tanh_space(w)
        logits = fwd(adv)
        best.update(adv.detach(), logits.detach())
        dist = (adv - x).flatten(1).pow(2).sum(dim=1)
        return (dist + s * self._loss(logits, y, targets)).sum()

    def _loss(self, logits, y, targets):
        raise NotImplementedError

    def _minimise(self, fwd, x, y, targets, s, best, round_index):
        raise NotImplementedError


@dataclass
class LBFGS(PenaltyAttack):
    """Box-constrained L-BFGS (Szegedy et al. 2013): per example, the smallest perturbation found
    by ``min c·‖r‖² + CE(f(x+r), target)`` over a search on c (see module docstring).

    Args:
        search_steps: number of c values tried (>= 1).
        initial_const: first c (> 0).
        max_iter: L-BFGS iterations per c (>= 1).
        targeted: True (the paper's formulation); False pushes away from the label with ``-CE``.
        amp, channels_last: CUDA-only speed flags.
    """

    search_steps: int = 6
    initial_const: float = 1.0
    max_iter: int = 30
    targeted: bool = True
    amp: bool = False
    channels_last: bool = False

    name = "lbfgs"
    title = "L-BFGS (Szegedy et al. 2013)"

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("max_iter", self.max_iter, MAX_STEPS)

    def _strength(self, const):
        return 1.0 / const

    def _loss(self, logits, y, targets):
        if targets is not None:
            return F.cross_entropy(logits, targets, reduction="none")
        # untargeted: a bounded loss (the label's margin, floored) so the minimum exists
        return margin(logits, y).clamp_min(-1.0)

    def _minimise(self, fwd, x, y, targets, s, best, round_index):
        w = to_tanh_space(x).requires_grad_(True)
        opt = torch.optim.LBFGS([w], lr=1.0, max_iter=self.max_iter, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = self._objective(fwd, w, x, y, targets, s, best)
            loss.backward()
            return loss

        fwd.tick(round_index, self.search_steps)
        opt.step(closure)


@dataclass
class CW(PenaltyAttack):
    """Carlini–Wagner ℓ₂ (Carlini & Wagner 2017, "Towards Evaluating the Robustness of Neural
    Networks"): tanh space, Adam, margin loss with confidence κ, binary search on c.

    Args:
        steps: Adam iterations per c (>= 1).
        lr: Adam learning rate (> 0).
        kappa: confidence margin (>= 0).
        search_steps, initial_const: the search on c (see module docstring).
        targeted: push to ``targets`` (default False: away from the label).
    """

    steps: int = 100
    lr: float = 0.01
    kappa: float = 0.0
    search_steps: int = 5
    initial_const: float = 1.0
    targeted: bool = False
    amp: bool = False
    channels_last: bool = False

    name = "cw"
    title = "Carlini–Wagner ℓ₂ (2017)"

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("steps", self.steps, MAX_STEPS)
        check_positive("lr", self.lr)
        check_positive("kappa", self.kappa, allow_zero=True)

    def _loss(self, logits, y, targets):
        if targets is not None:
            return (-margin(logits, targets)).clamp_min(-self.kappa)
        return margin(logits, y).clamp_min(-self.kappa)

    def _minimise(self, fwd, x, y, targets, s, best, round_index):
        w = to_tanh_space(x).requires_grad_(True)
        opt = torch.optim.Adam([w], lr=self.lr)
        for t in range(self.steps):
            fwd.tick(round_index * self.steps + t, self.search_steps * self.steps)
            opt.zero_grad()
            self._objective(fwd, w, x, y, targets, s, best).backward()
            opt.step()
