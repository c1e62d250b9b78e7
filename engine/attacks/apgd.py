"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"): PGD without a step size to tune.

APGD keeps the threat model's projection and steepest-ascent direction (``engine.attacks.steps``)
but has its own loop:

- start at a random point of the ball's surface (ℓ∞: x + ε·u/‖u‖∞ for u ~ U[−1, 1]; ℓ₂: x + ε·g/‖g‖₂
  for g ~ N(0, I)), clipped to the box;
- step size η⁰ = 2ε; a momentum step (α = 0.75; the first step has none):

      z = P(xᵗ + ηᵗ · direction(∇L(xᵗ)))
      xᵗ⁺¹ = P(xᵗ + α(z − xᵗ) + (1 − α)(xᵗ − xᵗ⁻¹))

- checkpoints after 22% of the iterations, then at intervals shrinking by 3% of the iterations
  down to 6%. At a checkpoint an example halves its step and restarts from its best point (the
  highest loss so far) when (1) the loss rose in at most ρ = 75% of the steps since the last
  checkpoint (the first step is counted as a rise when its loss is above 0, as the reference
  implementation does), or (2) the step was not halved at the last checkpoint and the best loss
  has not improved since then.

An example stops being updated once it is misclassified (its first adversarial iterate is
kept); this changes no robust-accuracy figure and saves the work on broken points. Random
numbers come from a generator seeded with ``seed`` at every call (drawn on the CPU, so the CPU
and CUDA runs start from the same points), so a call is deterministic and leaves torch's global
random state alone.

APGD-T (``APGDT``) is the targeted version AutoAttack uses: for each of the ``n_target_classes``
most likely classes other than the label (the 2nd, 3rd, ... largest clean logits), it runs APGD on
the targeted DLR loss towards that class, on the examples no earlier target broke.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.attacks.base import (
    MAX_RESTARTS, MAX_STEPS, Attack, Forward, check_eps, check_loss, check_norm, check_positive_int,
)
from engine.attacks.losses import Loss, get_loss
from engine.attacks.steps import STEPS, ThreatStep
from engine.errors import InvalidParameterError

#: most Expectation-over-Transformation samples per gradient (randomised models)
MAX_EOT = 1000
#: most target classes of a targeted ensemble attack (ImageNet has 999 others)
MAX_TARGETS = 999


def random_surface_start(x: torch.Tensor, norm: str, eps: float, gen: torch.Generator) -> torch.Tensor:
    """A point on the surface of the ε-ball around ``x`` (B,C,H,W), clipped to [0, 1].

    ℓ∞: uniform noise in [−1, 1] scaled so its largest coordinate is ε; ℓ₂: Gaussian noise
    scaled to norm ε. Drawn on the CPU from ``gen`` (device-independent), then moved to ``x``."""
    if norm == "linf":
        noise = 2 * torch.rand(x.shape, generator=gen) - 1
        scale = noise.flatten(1).abs().amax(dim=1)
    else:
        noise = torch.randn(x.shape, generator=gen)
        scale = noise.flatten(1).norm(dim=1)
    noise = noise.to(x.device, x.dtype) / (scale.to(x.device, x.dtype).view(-1, 1, 1, 1) + 1e-12)
    return (x + eps * noise).clamp(0.0, 1.0)


class _Schedule:
    """APGD's checkpoints: the first after ``max(int(0.22·N), 1)`` steps, each next interval shorter
    by ``max(int(0.03·N), 1)`` but at least ``max(int(0.06·N), 1)``."""

    def __init__(self, steps: int):
        self.interval = max(int(0.22 * steps), 1)
        self.shortest = max(int(0.06 * steps), 1)
        self.decrement = max(int(0.03 * steps), 1)
        self.since = 0

    def due(self) -> bool:
        """Count one step; True when it completes an interval (a checkpoint)."""
        self.since += 1
        return self.since == self.interval

    def next_interval(self) -> int:
        """The interval just completed; start the next, shorter one."""
        done = self.interval
        self.interval = max(self.interval - self.decrement, self.shortest)
        self.since = 0
        return done


def _gradient(fwd: Forward, x: torch.Tensor, y, targets, loss_fn: Loss, eot_iter: int):
    """``(mean gradient over eot_iter passes, logits and loss of the last pass)`` at ``x``."""
    grad = None
    for _ in range(eot_iter):
        z = x.detach().requires_grad_(True)
        logits = fwd(z)
        loss = loss_fn(logits, y, targets)
        (g,) = torch.autograd.grad(loss.sum(), z)
        grad = g if grad is None else grad + g
    if eot_iter > 1:
        grad = grad / eot_iter
    return grad, logits.detach(), loss.detach()


def apgd_run(fwd: Forward, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None, norm: str,
             eps: float, steps: int, loss_fn: Loss, gen: torch.Generator, rho: float = 0.75,
             eot_iter: int = 1, tick=None):
    """One APGD run from a random start on ``x`` (B,C,H,W) with labels ``y``.

    Args:
        targets: (B,) classes for a targeted loss, else None (the loss gets them as its 3rd argument).
        tick: ``tick(step)`` called before every step (progress and cancellation).
    Returns:
        ``(adv (B,C,H,W), fooled (B,) bool)``: the first misclassified iterate where ``fooled``,
        else the iterate with the highest loss.
    """
    threat: ThreatStep = STEPS[norm](eps)
    out = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    rows = torch.arange(len(x), device=x.device)  # original row of each active example

    x_adv = random_surface_start(x, norm, eps, gen)
    grad, logits, loss = _gradient(fwd, x_adv, y, targets, loss_fn, eot_iter)
    wrong = logits.argmax(dim=1) != y
    x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
    x_prev = x_adv.clone()
    step = torch.full((len(x), 1, 1, 1), 2.0 * eps, device=x.device, dtype=x.dtype)
    best_at_check = loss_best.clone()
    halved_at_check = torch.ones(len(x), dtype=torch.bool, device=x.device)
    rises = torch.zeros(steps, len(x), device=x.device)  # rises[i]: loss went up at step i
    last_loss = torch.zeros(len(x), device=x.device)  # the first step is compared with 0
    schedule = _Schedule(steps)
    # state of the active examples (compacted when some are broken)
    state = dict(x=x, y=y, t=targets, x_adv=x_adv, grad=grad, x_best=x_best, grad_best=grad_best,
                 loss_best=loss_best, x_prev=x_prev, step=step, best_at_check=best_at_check,
                 halved_at_check=halved_at_check, last_loss=last_loss, rises=rises)

    def retire(mask: torch.Tensor, found: torch.Tensor) -> None:
        """Write out the examples in ``mask`` (broken at ``found``) and drop them from the state."""
        nonlocal rows
        out[rows[mask]] = found[mask]
        fooled[rows[mask]] = True
        keep = ~mask
        rows = rows[keep]
        for key, value in state.items():
            if value is None:
                continue
            state[key] = value[:, keep] if key == "rises" else value[keep]

    if bool(wrong.any()):
        retire(wrong, x_adv)
    for i in range(steps):
        if tick is not None:
            tick(i)
        if len(rows) == 0:
            break
        s = state
        with torch.no_grad():
            momentum = 0.75 if i > 0 else 1.0
            step_threat = type(threat)(eps, s["step"].flatten())
            z = step_threat.project(step_threat.step(s["x_adv"], s["grad"]), s["x"])
            mixed = s["x_adv"] + momentum * (z - s["x_adv"]) + (1 - momentum) * (s["x_adv"] - s["x_prev"])
            s["x_prev"] = s["x_adv"]
            s["x_adv"] = threat.project(mixed, s["x"])
        grad, logits, loss = _gradient(fwd, s["x_adv"], s["y"], s["t"], loss_fn, eot_iter)
        s["grad"] = grad
        with torch.no_grad():
            s["rises"][i] = (loss > s["last_loss"]).float()
            s["last_loss"] = loss
            better = loss > s["loss_best"]
            s["x_best"] = torch.where(better.view(-1, 1, 1, 1), s["x_adv"], s["x_best"])
            s["grad_best"] = torch.where(better.view(-1, 1, 1, 1), grad, s["grad_best"])
            s["loss_best"] = torch.where(better, loss, s["loss_best"])
            found, broken = s["x_adv"], logits.argmax(dim=1) != s["y"]  # before a checkpoint moves x_adv
            if schedule.due():
                k = schedule.next_interval()
                rose = s["rises"][i - k + 1:i + 1].sum(dim=0)
                stalled = ~s["halved_at_check"] & (s["best_at_check"] >= s["loss_best"])
                halve = (rose <= k * rho) | stalled
                s["halved_at_check"] = halve
                s["best_at_check"] = s["loss_best"].clone()
                hv = halve.view(-1, 1, 1, 1)
                s["step"] = torch.where(hv, s["step"] / 2, s["step"])
                s["x_adv"] = torch.where(hv, s["x_best"], s["x_adv"])
                s["grad"] = torch.where(hv, s["grad_best"], s["grad"])
            if bool(broken.any()):
                retire(broken, found)
    if len(rows):
        out[rows] = state["x_best"]
    return out, fooled


@dataclass
class APGD(Attack):
    """Auto-PGD on the cross-entropy (APGD-CE; Croce & Hein 2020): no step size to choose.

    Args:
        eps: radius (ℓ∞ in [0, 1]; ℓ₂ in [0, sqrt(C·H·W)], checked against the images).
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per restart, 1 to 10,000 (AutoAttack: 100).
        restarts: random restarts, 1 to 100; each runs on the examples not yet broken.
        loss: ``"ce"``, ``"dlr"``, ``"margin"`` (:mod:`engine.attacks.losses`) or a callable
            ``loss(logits, labels, targets) -> (B,)`` to maximise.
        rho: the share of loss rises below which a checkpoint halves the step (0 < ρ <= 1).
        eot_iter: gradients averaged per step (Expectation over Transformation, for randomised
            models; AutoAttack's ``rand`` version uses 20).
        seed: seeds the random starts (the same seed gives the same result).
        amp, channels_last: bf16 autocast / channels-last memory format (CUDA only).
    Call: ``APGD(eps=8/255)(model, x, y) -> AttackResult``; robust examples come back at their
    highest-loss iterate.
    """

    eps: float = 8 / 255
    norm: str = "linf"
    steps: int = 100
    restarts: int = 1
    loss: str | Loss = "ce"
    rho: float = 0.75
    eot_iter: int = 1
    seed: int = 0
    amp: bool = False
    channels_last: bool = False

    name = "apgd-ce"
    title = "APGD-CE (Croce & Hein 2020)"

    def __post_init__(self):
        check_norm(self.norm)
        self.eps = check_eps(self.eps, self.norm)
        check_positive_int("steps", self.steps, MAX_STEPS)
        check_positive_int("restarts", self.restarts, MAX_RESTARTS)
        check_positive_int("eot_iter", self.eot_iter, MAX_EOT)
        check_loss(self.loss)
        if isinstance(self.rho, bool) or not isinstance(self.rho, (int, float)) or not 0 < self.rho <= 1:
            raise InvalidParameterError(f"rho must be in (0, 1], got {self.rho!r}")
        self.seed = _check_seed(self.seed)

    def _craft(self, fwd, x, y, targets, logits_clean):
        loss_fn = get_loss(self.loss)
        gen = torch.Generator().manual_seed(self.seed)
        adv, fooled = x.clone(), logits_clean.argmax(dim=1) != y  # misclassified: nothing to do
        total = self.steps * self.restarts
        for r in range(self.restarts):
            todo = (~fooled).nonzero().flatten()
            if len(todo) == 0:
                break
            t = None if targets is None else targets[todo]
            run_adv, run_fooled = apgd_run(fwd, x[todo], y[todo], t, self.norm, self.eps, self.steps, loss_fn, gen,
                                           self.rho, self.eot_iter,
                                           tick=lambda i, r=r: fwd.tick(r * self.steps + i, total))
            if r == 0:
                adv[todo] = run_adv  # robust examples keep the first run's best point
            else:
                adv[todo[run_fooled]] = run_adv[run_fooled]
            fooled[todo[run_fooled]] = True
        return adv, None


@dataclass
class APGDDLR(APGD):
    """APGD on the DLR loss (APGD-DLR; Croce & Hein 2020): the same loop, a loss invariant to the
    logits' shift and scale. Needs at least 3 classes. Args as :class:`APGD`."""

    loss: str | Loss = "dlr"

    name = "apgd-dlr"
    title = "APGD-DLR (Croce & Hein 2020)"


@dataclass
class APGDT(APGD):
    """Targeted APGD on the targeted DLR loss (APGD-T; Croce & Hein 2020), as in AutoAttack.

    Untargeted in effect: for each of the ``n_target_classes`` most likely wrong classes of the
    clean image (2nd, 3rd, ... largest logit), runs ``restarts`` APGD runs towards that class on
    the examples not broken yet; an example is broken when it is misclassified. With explicit
    ``targets`` (one class per image) it attacks only those and succeeds when it reaches them.
    The loss (``"dlr"``: targeted DLR, needs 4 classes; ``"ce"``: minus the target's CE; or a
    callable) receives the target as its third argument. ``n_target_classes`` is capped at the
    number of classes − 1. Other args as :class:`APGD`.
    """

    loss: str | Loss = "dlr"
    n_target_classes: int = 9

    name = "apgd-t"
    title = "APGD-T, targeted DLR (Croce & Hein 2020)"

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("n_target_classes", self.n_target_classes, MAX_TARGETS)

    def _craft(self, fwd, x, y, targets, logits_clean):
        loss_fn = get_loss(self.loss)
        gen = torch.Generator().manual_seed(self.seed)
        adv, fooled = x.clone(), logits_clean.argmax(dim=1) != y
        if targets is not None:  # the caller's targets: one pass towards them
            plan = [targets]
        else:
            ranked = logits_clean.sort(dim=1).indices  # ascending: the label is usually last
            n = min(self.n_target_classes, logits_clean.shape[1] - 1)
            plan = [ranked[:, -(j + 2)] for j in range(n)]  # 2nd, 3rd, ... most likely class
        total = self.steps * self.restarts * len(plan)
        first = True
        for j, target in enumerate(plan):
            for r in range(self.restarts):
                todo = (~fooled).nonzero().flatten()
                if len(todo) == 0:
                    return adv, None
                done = (j * self.restarts + r) * self.steps
                run_adv, run_fooled = apgd_run(fwd, x[todo], y[todo], target[todo], self.norm, self.eps,
                                               self.steps, loss_fn, gen, self.rho, self.eot_iter,
                                               tick=lambda i, d=done: fwd.tick(d + i, total))
                if first:
                    adv[todo] = run_adv
                    first = False
                else:
                    adv[todo[run_fooled]] = run_adv[run_fooled]
                fooled[todo[run_fooled]] = True
        return adv, None


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise InvalidParameterError(f"seed must be an integer in [0, 2^63), got {seed!r}")
    return seed
