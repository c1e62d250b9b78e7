"""FAB, the Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack"), ℓ∞ and ℓ₂, untargeted and targeted (FAB-T).

FAB looks for the *smallest* perturbation that changes the decision. At each step it linearises
the classifier at the current point xᵗ: for a class k ≠ y the boundary fₖ − f_y = 0 becomes the
hyperplane {z : ⟨∇(fₖ − f_y)(xᵗ), z − xᵗ⟩ + (fₖ − f_y)(xᵗ) = 0}. It takes the class whose
hyperplane is nearest (distance |fₖ − f_y| / ‖∇(fₖ − f_y)‖_dual; FAB-T uses the target class
only), projects both xᵗ and the original x onto that hyperplane inside the box [0, 1] (minimal
ℓp distance: :func:`project_to_hyperplane`), and moves to a convex combination biased towards x:

    xᵗ⁺¹ = clip((1 − α)(xᵗ + η·δᵗ) + α(x + η·δ₀)),   α = min(‖δᵗ‖ / (‖δᵗ‖ + ‖δ₀‖), α_max)

with overshoot η = 1.05 and α_max = 0.1. When xᵗ⁺¹ is adversarial it is kept if it is the closest
so far, and the iterate is pulled back towards x: x + β(xᵗ⁺¹ − x), β = 0.9. Restarts after the
first start at a random point at distance ε/2. An example counts as broken when the closest
adversarial found is within ε; other examples come back unchanged.

FAB-T (``FABT``): for each of the ``n_target_classes`` most likely wrong classes of the clean
image, FAB on the single hyperplane of that class, on the examples not broken yet (AutoAttack).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.attacks.apgd import MAX_TARGETS, _check_seed
from engine.attacks.base import (
    MAX_RESTARTS, MAX_STEPS, Attack, Forward, check_eps, check_norm, check_positive, check_positive_int,
)
from engine.attacks.steps import STEPS
from engine.errors import InvalidParameterError

#: the reference's stand-in for "no adversarial found yet" / "this class is the label"
FAR = 1e10
#: hyperplane normals smaller than this in a coordinate are treated as 0 there (ℓ₂)
TINY = 1e-8


#: the share of pulled-back examples above which a FAB step predicts first and linearises once
#: (a forward plus a forward-backward pass) rather than linearising at the new iterate and again at
#: the pulled-back ones (one forward-backward, plus one for that share; a backward ≈ 2 forwards)
PREDICT_FIRST_ABOVE = 1 / 3

def _solve_piecewise(r: torch.Tensor, q: torch.Tensor, need: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the smallest λ >= 0 with Σᵢ qᵢ·min(λ, rᵢ) = need, for breakpoints r >= 0 and
    weights q >= 0 (N, D) and need >= 0 (N,).

    The left side is non-decreasing and piecewise linear in λ with a kink at each rᵢ, so sort the
    r, evaluate it at every kink (cumulative sums) and solve the linear piece the root lies on.
    Returns ``(λ (N,), reachable (N,) bool)``; where even λ = max r falls short, reachable is False.
    """
    r_sorted, order = r.sort(dim=1)
    q_sorted = q.gather(1, order)
    saturated = torch.cumsum(q_sorted * r_sorted, dim=1)  # Σ_{j<=k} q r
    weight = torch.cumsum(q_sorted, dim=1)  # Σ_{j<=k} q
    total = weight[:, -1:]
    at_kink = saturated + r_sorted * (total - weight)  # the left side at λ = r_(k)
    reachable = at_kink[:, -1] >= need
    k = (at_kink < need[:, None]).sum(dim=1).clamp(max=r.shape[1] - 1)  # the piece holding the root
    before = torch.where(k > 0, saturated.gather(1, (k - 1).clamp(min=0)[:, None]).squeeze(1), torch.zeros_like(need))
    free = total.squeeze(1) - torch.where(k > 0, weight.gather(1, (k - 1).clamp(min=0)[:, None]).squeeze(1),
                                          torch.zeros_like(need))
    lam = ((need - before) / free.clamp_min(1e-30)).clamp_min(0.0)
    return lam, reachable


def project_to_hyperplane(points: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest step d (ℓ∞ or ℓ₂ norm) from each row of ``points`` (N, D) in [0, 1] onto the
    hyperplane ⟨w, z⟩ = b with z = points + d in the box [0, 1]^D.

    Moving towards the hyperplane, coordinate i can travel at most pᵢ (to 0 or to 1, whichever
    lies on the hyperplane's side). ℓ∞: every coordinate moves min(λ, pᵢ) for the λ that closes
    the gap; ℓ₂: min(λ|wᵢ|, pᵢ) (the Euclidean projection, clipped by the box). Where the box does
    not reach the hyperplane, every coordinate goes all the way (the closest box corner).
    Coordinates with wᵢ = 0 (ℓ₂: |wᵢ| < 1e-8) do not move. Returns d (N, D).
    """
    gap = (w * points).sum(dim=1) - b  # (N,) >= 0: move down along w; < 0: up
    side = torch.where(gap >= 0, 1.0, -1.0).to(points.dtype)
    w = w * side[:, None]
    need = gap * side  # how much ⟨w, ·⟩ must fall
    toward_one = w < 0  # these coordinates move up (to 1), the others down (to 0)
    room = torch.where(toward_one, 1 - points, points)  # (N, D) pᵢ
    aw = w.abs()
    if norm == "linf":
        lam, reachable = _solve_piecewise(room, aw, need)
        move = torch.minimum(lam[:, None].expand_as(room), room)
        moving = aw > 0
    else:
        moving = aw >= TINY
        r = torch.where(moving, room / aw.clamp_min(TINY), torch.full_like(room, 1e12))
        q = torch.where(moving, aw * aw, torch.zeros_like(aw))
        lam, reachable = _solve_piecewise(r, q, need)
        move = torch.minimum(lam[:, None] * aw, room)
    move = torch.where(reachable[:, None], move, room)  # out of reach: the closest corner
    d = torch.where(toward_one, move, -move)
    return d * moving


def _norms(d: torch.Tensor, norm: str) -> torch.Tensor:
    """(N,) ℓ∞ or ℓ₂ norm of each row of d (N, ...)."""
    flat = d.flatten(1)
    return flat.abs().amax(dim=1) if norm == "linf" else flat.norm(dim=1)


def _boundary_untargeted(fwd: Forward, x1: torch.Tensor, y: torch.Tensor):
    """``(f (B, K), g (B, K, C, H, W), logits (B, K))``: fₖ − f_y and its gradient for every class
    (the label's entry set far away so it is never the nearest)."""
    z = x1.detach().requires_grad_(True)
    logits = fwd(z)
    k = logits.shape[1]
    grads = []
    for c in range(k):
        select = torch.zeros_like(logits)
        select[:, c] = 1.0
        (g,) = torch.autograd.grad(logits, z, grad_outputs=select, retain_graph=c < k - 1)
        grads.append(g)
    g = torch.stack(grads, dim=1)  # (B, K, C, H, W)
    rows = torch.arange(len(y), device=y.device)
    f = (logits - logits[rows, y][:, None]).detach()
    g = g - g[rows, y][:, None]
    f[rows, y] = FAR
    return f, g, logits.detach()


def _boundary_targeted(fwd: Forward, x1: torch.Tensor, y: torch.Tensor, t: torch.Tensor):
    """``(f (B, 1), g (B, 1, C, H, W), logits (B, K))``: f_t − f_y and its gradient."""
    z = x1.detach().requires_grad_(True)
    logits = fwd(z)
    rows = torch.arange(len(y), device=y.device)
    diff = logits[rows, t] - logits[rows, y]
    (g,) = torch.autograd.grad(diff.sum(), z)
    return diff.detach()[:, None], g[:, None], logits.detach()


def fab_run(fwd: Forward, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, norm: str, eps: float,
            steps: int, gen: torch.Generator | None, alpha_max: float = 0.1, eta: float = 1.05,
            beta: float = 0.9, tick=None):
    """One FAB run on correctly classified ``x`` (B,C,H,W); ``t`` (B,) targets or None; ``gen``:
    a random start at distance ε/2 (None: start at x).

    Returns ``(closest adversarial (B,C,H,W), its norm (B,))``, norm ``FAR`` where none was found.

    The forward pass that tells whether a new iterate is adversarial also gives the gradient the
    next step needs, so a step costs one forward-backward pass, plus one more only for the
    iterates pulled back after a success; when more than ``PREDICT_FIRST_ABOVE`` of them were
    pulled back at the last step, the step predicts first (a forward pass without gradients) and
    linearises once after the pull-back, as the reference always does. Both orders compute the
    same iterates.
    """
    threat = STEPS[norm](eps)
    b_size = len(x)
    x0 = x.flatten(1)
    best = x.clone()
    best_norm = torch.full((b_size,), FAR, device=x.device, dtype=x.dtype)
    if gen is None:
        x1 = x.clone()
    else:
        noise = (2 * torch.rand(x.shape, generator=gen) - 1) if norm == "linf" else torch.randn(x.shape, generator=gen)
        noise = noise.to(x.device, x.dtype)
        x1 = (x + 0.5 * eps * noise / _norms(noise, norm).view(-1, 1, 1, 1)).clamp(0.0, 1.0)
    rows = torch.arange(b_size, device=x.device)

    def boundary(z, idx=None):
        """``(f, g, logits)`` at ``z`` for all examples, or for rows ``idx``."""
        yy = y if idx is None else y[idx]
        if t is None:
            return _boundary_untargeted(fwd, z, yy)
        return _boundary_targeted(fwd, z, yy, t if idx is None else t[idx])

    f, g, _ = boundary(x1)
    pulled_share = 0.0  # share of the examples pulled back at the last step
    for i in range(steps):
        if tick is not None:
            tick(i)
        last = i == steps - 1
        with torch.no_grad():
            dual = threat.dual_norm(g.flatten(0, 1)).view(b_size, -1)  # (B, K') ℓ1 (ℓ∞) or ℓ₂ (ℓ₂)
            nearest = (f.abs() / (dual + 1e-12)).argmin(dim=1)
            w = g[rows, nearest].flatten(1)  # (B, D)
            b = (w * x1.flatten(1)).sum(dim=1) - f[rows, nearest]
            d = project_to_hyperplane(torch.cat((x1.flatten(1), x0)), torch.cat((w, w)), torch.cat((b, b)), norm)
            d1, d0 = d[:b_size].view_as(x), d[b_size:].view_as(x)
            size = _norms(d, norm).clamp_min(1e-8)
            a1, a0 = size[:b_size], size[b_size:]
            alpha = (a1 / (a1 + a0)).clamp(0.0, alpha_max).view(-1, 1, 1, 1)
            x1 = ((x1 + eta * d1) * (1 - alpha) + (x + eta * d0) * alpha).clamp(0.0, 1.0)
        # Either linearise at the new iterate (its forward pass also says which are adversarial) and
        # again at the few pulled back, or, when many were pulled back last time, predict first
        # and linearise once after the pull-back (the reference's order): whichever costs less.
        predict_first = last or pulled_share > PREDICT_FIRST_ABOVE
        if predict_first:
            with torch.no_grad():
                logits = fwd(x1)
        else:
            f, g, logits = boundary(x1)
        with torch.no_grad():
            adversarial = logits.argmax(dim=1) != y
            pulled_share = float(adversarial.float().mean())
            if bool(adversarial.any()):
                dist = _norms(x1 - x, norm)
                closer = adversarial & (dist < best_norm)
                best = torch.where(closer.view(-1, 1, 1, 1), x1, best)
                best_norm = torch.where(closer, dist, best_norm)
                x1 = torch.where(adversarial.view(-1, 1, 1, 1), x + beta * (x1 - x), x1)
        if last:
            break
        if predict_first:  # the next step's linearisation, after the pull-back
            f, g, _ = boundary(x1)
        elif bool(adversarial.any()):  # pulled back: linearise again there
            idx = adversarial.nonzero().flatten()
            f_a, g_a, _ = boundary(x1[idx], idx)
            f, g = f.clone(), g.clone()
            f[idx], g[idx] = f_a, g_a
    return best, best_norm


@dataclass
class FAB(Attack):
    """FAB (Croce & Hein 2020), untargeted: the minimal perturbation towards the nearest linearised
    boundary among all classes (one gradient per class per step). Counts an example broken when
    the closest adversarial found is within ``eps``.

    Args:
        eps: the radius an adversarial must fall within (ℓ∞ in [0, 1]; ℓ₂ <= sqrt(C·H·W)); also
            the scale of the random restarts (distance ε/2).
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per run, 1 to 10,000 (AutoAttack: 100).
        restarts: runs, 1 to 100 (the first from x, the others from random points).
        alpha_max, eta, beta: the bias towards x (0 <= α_max < 1), overshoot (>= 1) and the
            pull-back after success (0 < β < 1); AutoAttack's 0.1, 1.05, 0.9.
        seed: seeds the random restarts.
        amp, channels_last: bf16 autocast / channels-last memory format (CUDA only).
    """

    eps: float = 8 / 255
    norm: str = "linf"
    steps: int = 100
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    seed: int = 0
    amp: bool = False
    channels_last: bool = False

    name = "fab"
    title = "FAB (Croce & Hein 2020)"

    def __post_init__(self):
        check_norm(self.norm)
        self.eps = check_eps(self.eps, self.norm)
        check_positive_int("steps", self.steps, MAX_STEPS)
        check_positive_int("restarts", self.restarts, MAX_RESTARTS)
        self.alpha_max = check_positive("alpha_max", self.alpha_max, allow_zero=True)
        self.eta = check_positive("eta (overshoot)", self.eta)
        self.beta = check_positive("beta", self.beta)
        if self.alpha_max >= 1 or self.eta < 1 or self.beta >= 1:
            raise InvalidParameterError("FAB needs 0 <= alpha_max < 1, eta >= 1 and 0 < beta < 1, got "
                                        f"{self.alpha_max}, {self.eta}, {self.beta}")
        self.seed = _check_seed(self.seed)

    def _plan(self, targets, logits_clean):
        """The target of each pass: [None] (untargeted)."""
        return [None]

    def _craft(self, fwd, x, y, targets, logits_clean):
        gen = torch.Generator().manual_seed(self.seed)
        adv, broken = x.clone(), logits_clean.argmax(dim=1) != y
        plan = self._plan(targets, logits_clean)
        total = self.steps * self.restarts * len(plan)
        for j, target in enumerate(plan):
            for r in range(self.restarts):
                todo = (~broken).nonzero().flatten()
                if len(todo) == 0:
                    return adv, None
                done = (j * self.restarts + r) * self.steps
                found, dist = fab_run(fwd, x[todo], y[todo], None if target is None else target[todo], self.norm,
                                      self.eps, self.steps, gen if r > 0 else None, self.alpha_max, self.eta,
                                      self.beta, tick=lambda i, d=done: fwd.tick(d + i, total))
                with torch.no_grad():
                    wrong = fwd(found).argmax(dim=1) != y[todo]
                ok = wrong & (dist <= self.eps)
                adv[todo[ok]] = found[ok]
                broken[todo[ok]] = True
        return adv, None


@dataclass
class FABT(FAB):
    """FAB-T (Croce & Hein 2020), AutoAttack's targeted FAB: one run per target class, the
    ``n_target_classes`` most likely wrong classes of the clean image (capped at classes − 1), on
    the examples not broken yet; an example is broken when misclassified within ``eps``. With
    explicit ``targets`` it runs once towards them. Other args as :class:`FAB`.
    """

    n_target_classes: int = 9

    name = "fab-t"
    title = "FAB-T, targeted FAB (Croce & Hein 2020)"

    def __post_init__(self):
        super().__post_init__()
        check_positive_int("n_target_classes", self.n_target_classes, MAX_TARGETS)

    def _plan(self, targets, logits_clean):
        if targets is not None:
            return [targets]
        ranked = logits_clean.sort(dim=1).indices
        n = min(self.n_target_classes, logits_clean.shape[1] - 1)
        return [ranked[:, -(j + 2)] for j in range(n)]
