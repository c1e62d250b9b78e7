"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard 2016, "DeepFool: a simple and accurate method to
fool deep neural networks"), multi-class, ℓ₂ or ℓ∞.

Each iteration linearises the classifier around the current point and takes the smallest step to
the nearest linearised decision boundary among the ``candidates`` most likely other classes:
``l = argmin_k |f_k| / ‖w_k‖_*``, ``r = (|f_l| + 1e-4) / ‖w_l‖_* · direction(w_l)``, with
``f_k = Z_k − Z_y``, ``w_k = ∇f_k`` and ‖·‖_* the dual norm of the threat model. The total step
is scaled by ``1 + overshoot``. Untargeted; examples already misclassified are left unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.attacks.base import MAX_STEPS, Attack, check_norm, check_positive, check_positive_int

#: most classes DeepFool linearises per step (each one costs a backward pass)
MAX_CANDIDATES = 1000
from engine.attacks.steps import STEPS


@dataclass
class DeepFool(Attack):
    """DeepFool. Args: ``steps`` (max iterations, >= 1), ``overshoot`` (>= 0), ``norm`` ("l2" or
    "linf"), ``candidates`` (how many top classes to consider, >= 1), ``amp``, ``channels_last``."""

    steps: int = 50
    overshoot: float = 0.02
    norm: str = "l2"
    candidates: int = 10
    amp: bool = False
    channels_last: bool = False

    name = "deepfool"
    title = "DeepFool (Moosavi-Dezfooli et al. 2016)"
    bounded = False
    targeted = False

    def __post_init__(self):
        check_positive_int("steps", self.steps, MAX_STEPS)
        check_positive("overshoot", self.overshoot, allow_zero=True)
        check_norm(self.norm)
        check_positive_int("candidates", self.candidates, MAX_CANDIDATES)

    def _craft(self, fwd, x, y, targets, logits_clean):
        threat = STEPS[self.norm](0.0)
        k = min(self.candidates, logits_clean.shape[1] - 1)
        # candidate classes per example: the k most likely other than the label (B, k)
        cand = logits_clean.scatter(1, y[:, None], float("-inf")).topk(k, dim=1).indices
        r_tot = torch.zeros_like(x)
        adv = x.clone()
        active = torch.arange(len(x), device=x.device)
        for t in range(self.steps):
            fwd.tick(t, self.steps)
            xa = adv[active].detach().requires_grad_(True)
            logits = fwd(xa)
            still = logits.argmax(dim=1) == y[active]
            if not bool(still.any()):
                break
            f_y = logits.gather(1, y[active, None])            # (B', 1)
            f = logits.gather(1, cand[active]) - f_y           # (B', k), negative while correct
            grads = torch.stack([
                torch.autograd.grad(f[:, j].sum(), xa, retain_graph=j < k - 1)[0] for j in range(k)
            ], dim=1)                                          # (B', k, C, H, W)
            flat = grads.flatten(0, 1)
            dual = threat.dual_norm(flat).view(len(xa), k).clamp_min(1e-12)
            dist = f.detach().abs() / dual                     # (B', k)
            best = dist.argmin(dim=1)
            rows = torch.arange(len(xa), device=x.device)
            w = grads[rows, best]                              # (B', C, H, W)
            scale = (f.detach()[rows, best].abs() + 1e-4) / dual[rows, best]
            step = scale.view(-1, 1, 1, 1) * threat.direction(w)
            idx = active[still]
            r_tot[idx] += step[still]
            adv[idx] = (x[idx] + (1 + self.overshoot) * r_tot[idx]).clamp(0.0, 1.0)
            active = idx
        return adv.detach(), None
