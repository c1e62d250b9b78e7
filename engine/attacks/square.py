"""Square Attack (Andriushchenko, Croce, Flammarion & Hein 2020, "Square Attack: a query-efficient
black-box adversarial attack via random search"), ℓ∞ and ℓ₂: score-based, no gradients.

A random search on the loss (by default the margin z_y − max_{i≠y} zᵢ, to minimise): starting
from vertical stripes of ±ε (ℓ∞) or a grid of ±"meta-patterns" scaled to norm ε (ℓ₂), each query
proposes a change inside one random square window and keeps it when the loss goes down (or the
image becomes misclassified). The window's side shrinks on a fixed schedule: it covers a share p
of the image, p = p_init halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000 and 8000 queries.

- ℓ∞: the window is set to x_best ± 2ε per channel (then clipped to the ε-ball and the box).
- ℓ₂: the perturbation's mass in two random windows is moved into the first one, as a fresh
  meta-pattern (nested squares of weights 1/(k+1)², positive on one half and negative on the
  other) plus the window's old content, rescaled so the whole perturbation keeps norm ε.

As in AutoAttack's implementation, one window position and one sign per channel are drawn per
query for the whole batch (each image's own search is still the paper's), from a generator seeded
with ``seed`` at every call (CPU draws, so CPU and CUDA runs match). Every example reports the
queries it used: 1 for the starting point plus 1 per accepted-or-rejected proposal until it is
misclassified or the budget ``queries`` is spent. Progress is ``progress(query, queries × restarts)``:
the proposals made so far (polled before each one, with the stop), ending at the whole budget.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.attacks.apgd import _check_seed
from engine.attacks.base import (
    MAX_RESTARTS, Attack, check_eps, check_loss, check_norm, check_positive, check_positive_int, margin,
)
from engine.attacks.losses import Loss, get_loss
from engine.errors import InvalidParameterError

#: most queries per restart (5,000 is AutoAttack's budget)
MAX_QUERIES = 100_000
#: (queries after which p halves again): p = p_init / 2^(number of thresholds passed)
P_THRESHOLDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_share(i: int, p_init: float, budget: int, rescale: bool) -> float:
    """The share p of the image the window covers at query ``i`` (``rescale`` stretches the
    10,000-query schedule over ``budget`` queries)."""
    if rescale:
        i = int(i / budget * 10_000)
    return p_init / 2 ** sum(i > t for t in P_THRESHOLDS)


def _rand_int(high: int, gen: torch.Generator) -> int:
    """An integer in [0, high) (0 when high is 0), drawn as the reference does: floor(U·high)."""
    return int((high * torch.rand(1, generator=gen)).long())


def _signs(shape, gen: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """Random ±1 of ``shape`` on ``like``'s device."""
    return torch.sign(2 * torch.rand(shape, generator=gen) - 1).to(like.device, like.dtype)


def _nested_squares(rows: int, cols: int) -> torch.Tensor:
    """(rows, cols) weights Σ_{k >= d} 1/(k+1)² over concentric squares around the centre
    (d: the cell's Chebyshev distance to it), scaled to unit ℓ₂ norm."""
    if rows == 0:
        return torch.zeros(0, cols)
    ci, cj = rows // 2, cols // 2
    rings = max(ci + 1, cj + 1)
    weights = 1.0 / torch.arange(1, rings + 1, dtype=torch.float32) ** 2
    tail = weights.flip(0).cumsum(0).flip(0)  # tail[d] = Σ_{k >= d} 1/(k+1)²
    di = (torch.arange(rows) - ci).abs()[:, None]
    dj = (torch.arange(cols) - cj).abs()[None, :]
    pattern = tail[torch.maximum(di, dj)]
    return pattern / pattern.norm()


def meta_pattern(s: int, gen: torch.Generator) -> torch.Tensor:
    """(s, s) the ℓ₂ Square Attack's window pattern: nested squares, + on the top half and − on the
    bottom, unit norm, transposed with probability 1/2."""
    pattern = torch.cat((_nested_squares(s // 2, s), -_nested_squares(s - s // 2, s)))
    pattern = pattern / pattern.norm()
    if float(torch.rand(1, generator=gen)) > 0.5:
        pattern = pattern.t()
    return pattern


def _l2(t: torch.Tensor, dims) -> torch.Tensor:
    return (t * t).sum(dim=dims, keepdim=True).sqrt()


def square_run(model_fn, x, y, norm: str, eps: float, budget: int, p_init: float, objective, gen,
               rescale: bool = False, tick=None):
    """One Square Attack run on ``x`` (B,C,H,W) with labels ``y``.

    Args:
        model_fn: images -> logits (no gradient needed).
        objective: ``objective(logits, y) -> (B,)`` to *minimise*; None: the margin itself.
        tick: ``tick(i)`` before proposal ``i`` (i proposals made so far: progress and stop).
    Returns:
        ``(adv (B,C,H,W), fooled (B,) bool, queries (B,) long)``.
    """
    b_size, c, h, w = x.shape
    features = c * h * w
    out = x.clone()
    fooled = torch.zeros(b_size, dtype=torch.bool, device=x.device)
    queries = torch.ones(b_size, dtype=torch.long, device=x.device)
    if norm == "linf":
        start = (x + eps * _signs((b_size, c, 1, w), gen, x)).clamp(0.0, 1.0)
    else:
        s = max(min(h, w) // 5, 1)
        top, left = (h - 5 * s) // 2, (w - 5 * s) // 2
        delta = torch.zeros_like(x)
        for i in range(max(min(h // s, (h - max(top, 0)) // s), 0)):
            for j in range(max(min(w // s, (w - max(left, 0)) // s), 0)):
                r0, c0 = max(top, 0) + i * s, max(left, 0) + j * s
                pattern = meta_pattern(s, gen).to(x.device, x.dtype)
                delta[:, :, r0:r0 + s, c0:c0 + s] += pattern * _signs((b_size, c, 1, 1), gen, x)
        start = (x + eps * delta / (_l2(delta, (1, 2, 3)) + 1e-12)).clamp(0.0, 1.0)
    with torch.no_grad():
        logits = model_fn(start)
    first = margin(logits, y)
    st = {"x": x, "y": y, "best": start, "margin": first, "loss": first if objective is None else objective(logits, y)}
    rows = torch.arange(b_size, device=x.device)

    def retire(mask):
        nonlocal rows
        out[rows[mask]] = st["best"][mask]
        fooled[rows[mask]] = True
        keep = ~mask
        rows = rows[keep]
        for key in st:
            st[key] = st[key][keep]

    done = st["margin"] <= 0
    if bool(done.any()):
        retire(done)
    for i in range(budget):
        if len(rows) == 0:
            break
        if tick is not None:
            tick(i)
        p = square_share(i, p_init, budget, rescale)
        side = round(math.sqrt(p * features / c))
        if norm == "linf":
            side = min(max(side, 1), h, w)
            vh, vw = _rand_int(h - side, gen), _rand_int(w - side, gen)
            candidate = st["best"].clone()
            candidate[:, :, vh:vh + side, vw:vw + side] += 2 * eps * _signs((c, 1, 1), gen, x)
            candidate = torch.minimum(torch.maximum(candidate, st["x"] - eps), st["x"] + eps).clamp_(0.0, 1.0)
        else:
            side = max(side, 3)
            side = min(side + 1 if side % 2 == 0 else side, h, w)
            vh, vw = _rand_int(h - side, gen), _rand_int(w - side, gen)
            vh2, vw2 = _rand_int(h - side, gen), _rand_int(w - side, gen)
            delta = st["best"] - st["x"]
            win1 = (slice(None), slice(None), slice(vh, vh + side), slice(vw, vw + side))
            win2 = (slice(None), slice(None), slice(vh2, vh2 + side), slice(vw2, vw2 + side))
            both = torch.zeros_like(delta)
            both[win1] = 1.0
            both[win2] = 1.0
            total = _l2(delta, (1, 2, 3))  # (B', 1, 1, 1)
            inside = _l2(delta * both, (2, 3))  # (B', C, 1, 1)
            old = delta[win1] / (1e-12 + _l2(delta[win1], (2, 3)))
            new = meta_pattern(side, gen).to(x.device, x.dtype) * _signs((len(rows), c, 1, 1), gen, x) + old
            budget_sq = (eps ** 2 - total ** 2).clamp_min(0.0) / c + inside ** 2
            new = new / (1e-12 + _l2(new, (2, 3))) * budget_sq.sqrt()
            delta[win2] = 0.0
            delta[win1] = new
            candidate = (st["x"] + eps * delta / (_l2(delta, (1, 2, 3)) + 1e-12)).clamp(0.0, 1.0)
        with torch.no_grad():
            logits = model_fn(candidate)
        new_margin = margin(logits, st["y"])
        new_loss = new_margin if objective is None else objective(logits, st["y"])
        better = new_loss < st["loss"]
        st["loss"] = torch.where(better, new_loss, st["loss"])
        accept = better | (new_margin <= 0)
        st["margin"] = torch.where(accept, new_margin, st["margin"])
        st["best"] = torch.where(accept.view(-1, 1, 1, 1), candidate, st["best"])
        queries[rows] += 1
        done = st["margin"] <= 0
        if bool(done.any()):
            retire(done)
    if len(rows):
        out[rows] = st["best"]
    return out, fooled, queries


@dataclass
class Square(Attack):
    """Square Attack (Andriushchenko et al. 2020): a score-based black-box attack that needs only
    the model's outputs, so gradient masking cannot stop it.

    Args:
        eps: radius (ℓ∞ in [0, 1]; ℓ₂ in [0, sqrt(C·H·W)], checked against the images).
        norm: ``"linf"`` or ``"l2"``.
        queries: proposals per restart, 1 to 100,000 (AutoAttack: 5,000).
        p_init: the share of the image the first windows cover, in (0, 1] (AutoAttack: 0.8).
        restarts: runs, 1 to 100, each on the examples not broken yet.
        loss: what the search lowers: ``"margin"`` (z_y − max_{i≠y} zᵢ; AutoAttack), ``"ce"``
            (minus the cross-entropy), any other name of :data:`engine.attacks.losses.LOSSES` or a
            callable ``loss(logits, labels, None) -> (B,)`` to maximise (the search lowers −loss).
        rescale_schedule: stretch the p schedule (written for 10,000 queries) over ``queries``.
        seed: seeds the random search.
        amp, channels_last: bf16 autocast / channels-last memory format (CUDA only).
    The result's ``queries`` holds each example's query count.
    """

    eps: float = 8 / 255
    norm: str = "linf"
    queries: int = 5000
    p_init: float = 0.8
    restarts: int = 1
    loss: str | Loss = "margin"
    rescale_schedule: bool = False
    seed: int = 0
    amp: bool = False
    channels_last: bool = False

    name = "square"
    title = "Square Attack, black-box (Andriushchenko et al. 2020)"

    def __post_init__(self):
        check_norm(self.norm)
        self.eps = check_eps(self.eps, self.norm)
        check_positive_int("queries", self.queries, MAX_QUERIES)
        check_positive_int("restarts", self.restarts, MAX_RESTARTS)
        self.p_init = check_positive("p_init", self.p_init)
        if self.p_init > 1:
            raise InvalidParameterError(f"p_init is a share of the image, in (0, 1]; got {self.p_init!r}")
        check_loss(self.loss)
        self.seed = _check_seed(self.seed)

    def _objective(self):
        """(logits, y) -> (B,) to minimise; None for the margin z_y − max others (the reference's)."""
        if self.loss == "margin":
            return None
        fn = get_loss(self.loss)
        return lambda logits, y: -fn(logits, y, None)

    def _craft(self, fwd, x, y, targets, logits_clean):
        if targets is not None:
            raise InvalidParameterError("Square is untargeted here; run it without targets")
        gen = torch.Generator().manual_seed(self.seed)
        objective = self._objective()
        adv, broken = x.clone(), logits_clean.argmax(dim=1) != y
        used = torch.zeros(len(x), dtype=torch.long, device=x.device)
        total = self.queries * self.restarts
        for r in range(self.restarts):
            todo = (~broken).nonzero().flatten()
            if len(todo) == 0:
                break
            run_adv, run_fooled, run_queries = square_run(
                fwd, x[todo], y[todo], self.norm, self.eps, self.queries, self.p_init, objective, gen,
                self.rescale_schedule, tick=lambda i, r=r: fwd.tick(r * self.queries + i, total))
            used[todo] += run_queries
            if r == 0:
                adv[todo] = run_adv
            else:
                adv[todo[run_fooled]] = run_adv[run_fooled]
            broken[todo[run_fooled]] = True
        if fwd.progress is not None:  # the whole budget is spent or every example broken: done
            fwd.progress(total, total)
        return adv, None, {"queries": used}
