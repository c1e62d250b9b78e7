"""Robustness measurements built on the attacks: robust accuracy, ε-sweeps, transfer matrices and
minimal-perturbation distributions. Every function batches, reports ``progress(done, total)`` and
polls ``should_stop()``; a stopped run returns what it finished with ``stopped=True``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engine.attacks.base import AttackCancelled, AttackResult, Forward, frozen_eval
from engine.models.state import batched_logits, moved_to, predict_labels
from engine.attacks.base import Attack, check_eps, check_norm, check_positive_int
from engine.attacks.pgd import PGD, pgd_loop
from engine.attacks.registry import get_attack_class, make_attack
from engine.attacks.steps import STEPS
from engine.errors import InvalidParameterError
from engine.runtime import Progress, ShouldStop



@dataclass(frozen=True)
class RobustAccuracy:
    """Clean and robust top-1 accuracy (in [0, 1]) over ``n`` images for one attack config."""

    clean_acc: float
    robust_acc: float
    n: int
    seconds: float
    config: dict
    stopped: bool = False

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SweepResult:
    """Robust accuracy per model (rows) and ε (columns): ``accuracy[model][i]`` at ``eps[i]``."""

    attack: str
    eps: list[float]
    accuracy: dict[str, list[float]]
    n: int
    config: dict
    stopped: bool = False

    def rows(self) -> list[dict]:
        """Long-format rows ``{"model", "eps", "robust_acc"}`` (for tables, CSV and plots)."""
        return [{"model": m, "eps": e, "robust_acc": a}
                for m, accs in self.accuracy.items() for e, a in zip(self.eps, accs)]


@dataclass(frozen=True)
class TransferResult:
    """Cross-model transfer (Szegedy et al. 2013): examples crafted on ``names[i]`` (row),
    evaluated on ``names[j]`` (column). ``accuracy[i][j]``: top-1 accuracy of model j on them;
    ``fooling[i][j]``: fraction of the images model j classified correctly that it now gets wrong."""

    names: list[str]
    accuracy: list[list[float]]
    fooling: list[list[float]]
    n: int
    config: dict


@dataclass(frozen=True)
class CraftComparison:
    """Adversarial examples crafted on one model and scored by every model (craft-and-compare).

    Attributes:
        x: the clean images (N, C, H, W) in [0, 1] (CPU).
        result: the attack's :class:`AttackResult` on ``source`` (CPU): ``adv``, norms, success ...
        source: the name (a key of ``logits``) of the model the examples were crafted on.
        logits: name -> ``(clean (N, K), adversarial (N, K))`` float32 logits of every model (CPU).
    """

    x: torch.Tensor
    result: AttackResult
    source: str
    logits: dict[str, tuple[torch.Tensor, torch.Tensor]]

    def probabilities(self, index: int = 0) -> dict[str, dict[str, "np.ndarray"]]:
        """name -> ``{"clean": (K,), "adversarial": (K,)}`` float64 softmax of image ``index``."""
        return {name: {image: torch.softmax(z[index].double(), dim=0).numpy()
                       for image, z in zip(("clean", "adversarial"), pair)}
                for name, pair in self.logits.items()}

    def accuracy(self) -> dict[str, dict[str, float]]:
        """name -> ``{"clean": acc, "adversarial": acc}``: top-1 accuracy against ``result.labels``."""
        labels = self.result.labels
        return {name: {image: float((z.argmax(dim=1) == labels).float().mean())
                       for image, z in zip(("clean", "adversarial"), pair)}
                for name, pair in self.logits.items()}


@dataclass(frozen=True)
class MinimalPerturbation:
    """Per-example smallest adversarial perturbation norm (``inf`` where none was found)."""

    norms: torch.Tensor
    norm: str
    method: str
    n: int

    @property
    def found(self) -> torch.Tensor:
        return torch.isfinite(self.norms)

    def median(self) -> float:
        """Median over all examples (``inf`` counts as larger than everything)."""
        return float(self.norms.sort().values[(len(self.norms) - 1) // 2]) if len(self.norms) else math.nan


def _batches(images, labels, batch_size):
    check_positive_int("batch_size", batch_size)
    if len(images) != len(labels):
        raise InvalidParameterError(f"{len(images)} images but {len(labels)} labels")
    for i in range(0, len(images), batch_size):
        yield images[i:i + batch_size], labels[i:i + batch_size]


def run_attack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    targets: torch.Tensor | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> AttackResult:
    """Run ``attack`` over ``images`` (N,C,H,W) in batches; return one concatenated result (on CPU).

    ``device``: where to run (the model is moved there and back); default the model's device.
    ``progress(done_images, N)``. Raises :class:`AttackCancelled` when ``should_stop()`` is True.
    """
    results = []
    with moved_to(model, device) as target:
        done = 0
        for i, (xb, yb) in enumerate(_batches(images, labels, batch_size)):
            tb = None if targets is None else targets[i * batch_size:i * batch_size + len(xb)]
            res = attack(model, xb.to(target), yb.to(target), tb, should_stop=should_stop)
            results.append(AttackResult(**{
                f.name: (v.cpu() if isinstance(v, torch.Tensor) else v)
                for f in dataclasses.fields(res) for v in [getattr(res, f.name)]
            }))
            done += len(xb)
            if progress is not None:
                progress(done, len(images))
    return AttackResult.cat(results)


def robust_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> RobustAccuracy:
    """Clean and robust accuracy of ``model`` on ``images`` (N,C,H,W) in [0,1] / ``labels`` (N,).

    Robust accuracy = top-1 accuracy on the attack's final adversarial images (Madry et al. 2018).
    Stopped early: the accuracies over the batches finished so far, with ``stopped=True``.
    """
    start = time.perf_counter()
    clean = robust = n = 0
    stopped = False
    for xb, yb in _batches(images, labels, batch_size):
        try:
            res = run_attack(model, xb, yb, attack, batch_size, device, should_stop=should_stop)
        except AttackCancelled:
            stopped = True
            break
        clean += int((res.preds_clean == res.labels).sum())
        robust += int((res.preds_adv == res.labels).sum())
        n += len(xb)
        if progress is not None:
            progress(n, len(images))
    return RobustAccuracy(clean / max(n, 1), robust / max(n, 1), n, time.perf_counter() - start,
                          attack.config(), stopped)


def _attack_norm(attack: Attack) -> str:
    """The norm a minimal-perturbation attack minimises (CW and L-BFGS: ℓ₂)."""
    return getattr(attack, "norm", "l2")


def eps_sweep(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: str,
    eps: Sequence[float],
    dataset: str | None = None,
    params: dict | None = None,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> SweepResult:
    """Robust accuracy of each model at each ε (one call; e.g. standard vs robust).

    Bounded attacks (FGSM, PGD) are rerun at every ε. Minimal-norm attacks (L-BFGS, CW, DeepFool)
    run once per model; an image counts as robust at ε when it is classified correctly and the
    attack found no adversarial within norm ε. ``progress(done, total)`` counts (model, ε) runs.
    """
    eps = [check_eps(e) for e in eps]
    if not eps:
        raise InvalidParameterError("give at least one epsilon for the sweep")
    params = dict(params or {})
    params.pop("eps", None)
    bounded = get_attack_class(attack).bounded
    total = len(models) * (len(eps) if bounded else 1)
    done, stopped = 0, False
    accuracy: dict[str, list[float]] = {}
    config = make_attack(attack, dataset, **params).config()
    for name, model in models.items():
        try:
            if bounded:
                accs = []
                for e in eps:
                    res = robust_accuracy(model, images, labels, make_attack(attack, dataset, eps=e, **params),
                                          batch_size, device, should_stop=should_stop)
                    if res.stopped:
                        raise AttackCancelled("stopped")
                    accs.append(res.robust_acc)
                    done += 1
                    if progress is not None:
                        progress(done, total)
            else:
                att = make_attack(attack, dataset, **params)
                res = run_attack(model, images, labels, att, batch_size, device, should_stop=should_stop)
                norms = res.linf_norm if _attack_norm(att) == "linf" else res.l2_norm
                correct = res.preds_clean == res.labels
                accs = [float((correct & ~(res.success & (norms <= e + 1e-6))).float().mean()) for e in eps]
                done += 1
                if progress is not None:
                    progress(done, total)
        except AttackCancelled:
            stopped = True
            break
        accuracy[name] = accs
    config.pop("eps", None)
    return SweepResult(attack, eps, accuracy, len(images), config, stopped)


def transfer_matrix(
    models: dict[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> TransferResult:
    """Craft ``attack`` on every model (rows) and evaluate the examples on every model (columns).

    The diagonal is the white-box result. Raises :class:`AttackCancelled` when stopped.
    """
    names = list(models)
    if not names:
        raise InvalidParameterError("give at least one model for the transfer matrix")
    clean_correct = {}
    for name in names:
        clean_correct[name] = predict_labels(models[name], images, batch_size, device) == labels
    accuracy, fooling = [], []
    for i, src in enumerate(names):
        adv = run_attack(models[src], images, labels, attack, batch_size, device, should_stop=should_stop).adv
        acc_row, fool_row = [], []
        for dst in names:
            correct = predict_labels(models[dst], adv, batch_size, device) == labels
            acc_row.append(float(correct.float().mean()))
            was = clean_correct[dst]
            fool_row.append(float((was & ~correct).sum()) / max(int(was.sum()), 1))
        accuracy.append(acc_row)
        fooling.append(fool_row)
        if progress is not None:
            progress(i + 1, len(names))
    return TransferResult(names, accuracy, fooling, len(images), attack.config())


def craft_and_compare(
    models: dict[str, nn.Module],
    source: str,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    attack: Attack,
    targets: torch.Tensor | Sequence[int] | None = None,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> CraftComparison:
    """Craft ``attack`` on ``models[source]`` and score the clean and adversarial images on every
    model (does an example crafted on A fool B too? Szegedy et al. 2013).

    Args:
        models: name -> model (e.g. ``{"A": standard, "B": robust}``); ``source`` is one of the names.
        images: (N, C, H, W) in [0, 1]; labels: (N,), or None to use the source model's clean
            predictions (an uploaded image has no label).
        targets: (N,) target classes of a targeted attack (None: the attack's own choice).
        progress: ``progress(done_images, N)`` while crafting. Raises :class:`AttackCancelled`
            when ``should_stop()`` is True.

    Returns:
        :class:`CraftComparison` (everything on CPU).
    """
    if source not in models:
        raise InvalidParameterError(f"source must be one of {', '.join(models)}, got {source!r}")
    if labels is None:
        labels = batched_logits(models[source], images, batch_size, device).argmax(dim=1)
    if targets is not None:
        targets = torch.as_tensor(targets, dtype=torch.long)
    result = run_attack(models[source], images, labels, attack, batch_size, device, targets, progress, should_stop)
    logits = {name: (batched_logits(model, images, batch_size, device), batched_logits(model, result.adv, batch_size, device))
              for name, model in models.items()}
    return CraftComparison(images.detach().cpu(), result, source, logits)


def minimal_perturbation(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    method: str = "deepfool",
    norm: str = "l2",
    eps_max: float = 1.0,
    bisection_steps: int = 8,
    steps: int = 20,
    batch_size: int = 128,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> MinimalPerturbation:
    """Per-example smallest adversarial perturbation (its ``norm``), as a distribution.

    ``method="pgd"``: per-example bisection on ε in [0, ``eps_max``] with ``steps``-step PGD
    (``bisection_steps`` halvings; the upper end of the final bracket is reported, ``inf`` if PGD
    fails at ``eps_max``). ``"deepfool"``, ``"cw"``, ``"lbfgs"`` (untargeted): the norms of the
    adversarials these attacks find (CW/L-BFGS measure ℓ₂). Misclassified clean images count 0.
    """
    check_norm(norm)
    check_positive_int("bisection_steps", bisection_steps)
    eps_max = check_eps(eps_max)
    if method == "pgd":
        norms = _bisect_pgd(model, images, labels, norm, eps_max, bisection_steps, steps, batch_size,
                            device, progress, should_stop)
    elif method in ("deepfool", "cw", "lbfgs"):
        params = {"norm": norm} if method == "deepfool" else {"targeted": False}
        att = make_attack(method, **params)
        res = run_attack(model, images, labels, att, batch_size, device, progress=progress,
                         should_stop=should_stop)
        measured = res.linf_norm if norm == "linf" else res.l2_norm
        norms = torch.where(res.success, measured, torch.full_like(measured, math.inf))
        norms = torch.where(res.preds_clean != res.labels, torch.zeros_like(norms), norms)
    else:
        raise InvalidParameterError(f"unknown method {method!r}; choose pgd, deepfool, cw or lbfgs")
    return MinimalPerturbation(norms, norm, method, len(images))


def _bisect_pgd(model, images, labels, norm, eps_max, rounds, steps, batch_size, device, progress,
                should_stop) -> torch.Tensor:
    """Per-example bisection on ε with the PGD loop (per-example ε tensors)."""
    out = []
    with moved_to(model, device) as target:
        with frozen_eval(model):
            fwd = Forward(model, target, should_stop=should_stop)
            for xb, yb in _batches(images, labels, batch_size):
                xb, yb = xb.to(target).float(), yb.to(target).long()
                with torch.no_grad():
                    wrong = fwd(xb).argmax(dim=1) != yb
                lo = torch.zeros(len(xb), device=target)
                hi = torch.full((len(xb),), eps_max, device=target)
                found = torch.zeros(len(xb), dtype=torch.bool, device=target)
                for r in range(rounds + 1):
                    eps = hi if r == 0 else (lo + hi) / 2
                    threat = STEPS[norm](eps, 2.5 * eps / steps)
                    adv = pgd_loop(fwd, xb, yb, None, threat, steps, random_start=False)
                    with torch.no_grad():
                        ok = fwd(adv).argmax(dim=1) != yb
                    if r == 0:
                        found = ok
                        continue
                    hi = torch.where(ok, eps, hi)
                    lo = torch.where(ok, lo, eps)
                res = torch.where(found, hi, torch.full_like(hi, math.inf))
                out.append(torch.where(wrong, torch.zeros_like(res), res).cpu())
                if progress is not None:
                    progress(sum(len(o) for o in out), len(images))
    return torch.cat(out)
