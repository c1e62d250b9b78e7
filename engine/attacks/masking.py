"""Gradient-masking checks (Athalye, Carlini & Wagner 2018, "Obfuscated gradients give a false
sense of security"; Carlini et al. 2019, "On evaluating adversarial robustness"), computed from
attacks run here, not asserted.

A defence that only *hides* its gradients (a non-differentiable or saturating layer, a shattered
or randomised forward pass) defeats gradient attacks without being robust. Such a model breaks
the sanity rules every honest evaluation obeys; each check measures one rule on the given images:

``eps_growth``            robust accuracy does not rise with ε and falls to ~0 at the largest ε;
``unbounded``             with no real bound (ℓ∞ ε = 1, ℓ₂ ε = the image cube's diameter) the
                          white-box attack breaks every correctly classified image;
``iterative_vs_single``   the iterative attack is at least as strong as one step (FGSM / FGM);
``whitebox_vs_blackbox``  the white-box attack is at least as strong as Square, a black-box one;
``whitebox_vs_transfer``  ... and as transfer from a standard model's adversarials (when given);
``more_effort``           more steps and restarts lower robust accuracy only a little more.

The white-box attack is APGD-CE (no step size to get wrong). A check *passes* when its rule holds
within ``tol`` (accuracies in [0, 1]); otherwise it is *flagged*, with the numbers that broke it.
A flag is a reason to distrust the robust figure and attack adaptively, not a proof of masking.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from engine.attacks.apgd import APGD
from engine.attacks.base import AttackCancelled, check_eps, check_norm, check_positive, check_positive_int, max_eps
from engine.attacks.evaluate import robust_accuracy, run_attack
from engine.attacks.pgd import FGSM, PGD
from engine.attacks.square import Square
from engine.errors import InvalidParameterError
from engine.models.state import predict_labels
from engine.runtime import Progress, ShouldStop

#: check name -> what it verifies (for tables)
CHECKS = {
    "eps_growth": "robust accuracy falls to ~0 as ε grows",
    "unbounded": "an unbounded attack reaches 100% success",
    "iterative_vs_single": "iterative attack ≥ single step",
    "whitebox_vs_blackbox": "white-box ≥ black-box (Square)",
    "whitebox_vs_transfer": "white-box ≥ transfer from a standard model",
    "more_effort": "more steps/restarts lower accuracy little further",
}


@dataclass(frozen=True)
class Check:
    """One check: ``status`` is "pass", "flag" or "skipped"; ``numbers`` holds what it measured."""

    name: str
    title: str
    status: str
    numbers: dict
    detail: str

    @property
    def passed(self) -> bool | None:
        """True (pass), False (flag) or None (skipped)."""
        return None if self.status == "skipped" else self.status == "pass"


@dataclass(frozen=True)
class MaskingReport:
    """The checks run on ``n`` images at radius ``eps`` (``norm``), with the ε ladder they used."""

    checks: list
    eps: float
    norm: str
    n: int
    clean_acc: float
    ladder: list = field(default_factory=list)  # [{"eps", "robust_acc"}] of the white-box attack
    seconds: float = 0.0
    stopped: bool = False

    @property
    def flagged(self) -> list[str]:
        """Names of the checks that flagged."""
        return [c.name for c in self.checks if c.status == "flag"]

    def rows(self) -> list[dict]:
        """One row per check (tables/CSV): name, title, status, detail, numbers as JSON-able values."""
        return [{"check": c.name, "title": c.title, "status": c.status, "detail": c.detail, **c.numbers}
                for c in self.checks]

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["flagged"] = self.flagged
        return out


def eps_ladder(eps: float, norm: str, input_shape) -> list[float]:
    """ε/4, ε/2, ε, then ×4 steps up to the norm's largest ε (ℓ∞ 1, ℓ₂ sqrt(C·H·W)), which ends it."""
    top = max_eps(norm, input_shape)
    rungs = [eps / 4, eps / 2, eps]
    e = eps * 4
    while e < top and len(rungs) < 12:
        rungs.append(e)
        e *= 4
    rungs.append(top)
    return [float(r) for r in dict.fromkeys(round(r, 10) for r in rungs if r > 0)]


def masking_checks(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    norm: str = "linf",
    *,
    source_model: nn.Module | None = None,
    steps: int = 100,
    queries: int = 1000,
    more_steps: int = 4,
    more_restarts: int = 3,
    seed: int = 0,
    tol: float = 0.02,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
    quick: bool = False,
) -> MaskingReport:
    """Run the gradient-masking checks on ``model`` with ``images`` (N,C,H,W) in [0, 1] / ``labels``.

    Args:
        eps: the radius whose robust figure is being checked; norm: ``"linf"`` or ``"l2"``.
        source_model: a standard (non-robust) model with the same inputs and classes, for the
            transfer check (skipped without one).
        steps: APGD-CE iterations of the white-box attack; queries: Square's budget (5,000 in
            AutoAttack; 1,000 by default here); more_steps, more_restarts: the extra effort of
            ``more_effort`` (steps × more_steps, more_restarts restarts).
        seed: seeds every attack; tol: the slack of every comparison (accuracy, in [0, 1]).
        progress: ``progress(done, total)`` over the attack runs; should_stop: polled every
            iteration; a stopped run returns the checks finished so far with ``stopped=True``.
        quick: only the checks that fit a quick report (the ε ladder, unbounded ε, iterative vs one
            step, transfer); Square's and the extra-effort check are listed as skipped
            (:data:`QUICK_SKIPPED` says why), in the same order.
    Returns:
        :class:`MaskingReport`.
    """
    check_norm(norm)
    shape = tuple(images.shape[1:])
    eps = check_eps(eps, norm, shape)
    if eps == 0:
        raise InvalidParameterError("the gradient-masking checks need an epsilon > 0")
    check_positive_int("steps", steps, 10_000)
    check_positive_int("more_steps", more_steps, 100)
    check_positive_int("more_restarts", more_restarts, 100)
    tol = check_positive("tol", tol, allow_zero=True)
    if len(images) == 0 or len(images) != len(labels):
        raise InvalidParameterError(f"need as many labels as images (> 0), got {len(images)} and {len(labels)}")
    start = time.perf_counter()
    ladder_eps = eps_ladder(eps, norm, shape)
    planned = len(ladder_eps) + (1 if quick else 3) + (1 if source_model is not None else 0)
    done = [0]
    checks: list[Check] = []
    ladder: list[dict] = []

    def acc(attack) -> float:
        res = robust_accuracy(model, images, labels, attack, batch_size, device, should_stop=should_stop)
        if res.stopped:
            raise AttackCancelled("stopped")
        done[0] += 1
        if progress is not None:
            progress(done[0], planned)
        return res.robust_acc

    whitebox = lambda e, **kw: APGD(eps=e, norm=norm, steps=steps, seed=seed, **kw)  # noqa: E731
    clean = float((predict_labels(model, images, batch_size, device) == labels.cpu()).float().mean())
    stopped = False
    try:
        for e in ladder_eps:
            ladder.append({"eps": e, "robust_acc": acc(whitebox(e))})
        at_eps = next(r["robust_acc"] for r in ladder if math.isclose(r["eps"], eps, rel_tol=1e-9))
        checks.append(_eps_growth(ladder, tol))
        checks.append(_unbounded(ladder[-1], clean, len(images), norm))
        single = FGSM(eps=eps) if norm == "linf" else PGD(eps=eps, norm="l2", steps=1, alpha=eps, random_start=False)
        checks.append(_compare("iterative_vs_single", at_eps, acc(single), tol, "APGD-CE", single.name.upper()
                               if norm == "linf" else "FGM (one ℓ₂ step)"))
        if quick:
            checks.append(_skipped("whitebox_vs_blackbox"))
        else:
            square = acc(Square(eps=eps, norm=norm, queries=queries, seed=seed))
            checks.append(_compare("whitebox_vs_blackbox", at_eps, square, tol, "APGD-CE",
                                   f"Square ({queries} queries)"))
        if source_model is None:
            checks.append(Check("whitebox_vs_transfer", CHECKS["whitebox_vs_transfer"], "skipped", {},
                                "no standard model given to transfer from"))
        else:
            transfer = _transfer_acc(source_model, model, images, labels, whitebox(eps), batch_size, device,
                                     should_stop)
            done[0] += 1
            if progress is not None:
                progress(done[0], planned)
            checks.append(_compare("whitebox_vs_transfer", at_eps, transfer, tol, "APGD-CE",
                                   "transfer from the standard model"))
        checks.append(_skipped("more_effort") if quick else
                      _more_effort(acc, eps, norm, steps, more_steps, more_restarts, seed, at_eps, tol))
    except AttackCancelled:
        stopped = True
    return MaskingReport(checks, eps, norm, len(images), clean, ladder, round(time.perf_counter() - start, 3), stopped)


def _more_effort(acc, eps, norm, steps, more_steps, more_restarts, seed, at_eps, tol) -> Check:
    """More steps and restarts must not lower the figure by more than ``tol``."""
    more = acc(APGD(eps=eps, norm=norm, steps=min(steps * more_steps, 10_000), restarts=more_restarts, seed=seed + 1))
    drop = at_eps - more
    return Check(
        "more_effort", CHECKS["more_effort"], "pass" if drop <= tol else "flag",
        {"robust_acc": at_eps, "robust_acc_more": more, "drop": drop},
        f"APGD-CE {steps} steps: {at_eps:.2%}; {min(steps * more_steps, 10_000)} steps × {more_restarts} "
        f"restarts: {more:.2%} (drop {drop:+.2%}, allowed {tol:.2%})")


#: why the quick checks skip the two costly ones
QUICK_SKIPPED = {
    "whitebox_vs_blackbox": "skipped in the quick report: Square (1,000 queries) costs more than the rest of it; "
                            "the full report runs it",
    "more_effort": "skipped in the quick report: APGD-CE with 4× the steps and 3 restarts costs 12 more runs; "
                   "the full report runs it",
}


def _skipped(name: str) -> Check:
    return Check(name, CHECKS[name], "skipped", {}, QUICK_SKIPPED[name])


def _eps_growth(ladder: list[dict], tol: float) -> Check:
    accs = [r["robust_acc"] for r in ladder]
    rises = [(ladder[i]["eps"], ladder[i + 1]["eps"]) for i in range(len(accs) - 1) if accs[i + 1] > accs[i] + tol]
    final = accs[-1]
    ok = not rises and final <= tol
    why = []
    if rises:
        why.append("accuracy rose from ε=" + ", ".join(f"{a:.4g} to {b:.4g}" for a, b in rises))
    if final > tol:
        why.append(f"{final:.2%} still robust at ε={ladder[-1]['eps']:.4g}")
    curve = ", ".join(f"{r['eps']:.4g}: {r['robust_acc']:.1%}" for r in ladder)
    return Check("eps_growth", CHECKS["eps_growth"], "pass" if ok else "flag",
                 {"eps": [r["eps"] for r in ladder], "robust_acc": accs},
                 f"APGD-CE accuracy by ε ({curve})" + (f"; {'; '.join(why)}" if why else ""))


def _unbounded(last: dict, clean: float, n: int, norm: str) -> Check:
    survivors = round(last["robust_acc"] * n)
    correct = round(clean * n)
    success = 1.0 - survivors / correct if correct else 1.0
    allowed = n // 100  # 1% of the images
    ok = survivors <= allowed
    bound = "ℓ∞ ε = 1 (any image)" if norm == "linf" else f"ℓ₂ ε = {last['eps']:.4g} (the image cube's diameter)"
    return Check("unbounded", CHECKS["unbounded"], "pass" if ok else "flag",
                 {"eps": last["eps"], "success_rate": success, "survivors": survivors},
                 f"at {bound} APGD-CE broke {success:.2%} of the correctly classified images; "
                 f"{survivors} survived (allowed: {allowed})")


def _compare(name: str, whitebox: float, other: float, tol: float, white_label: str, other_label: str) -> Check:
    """Flag when ``other`` (a weaker attack by design) leaves *lower* accuracy than the white-box one."""
    gap = whitebox - other
    ok = gap <= tol
    return Check(name, CHECKS[name], "pass" if ok else "flag",
                 {"whitebox_acc": whitebox, "other_acc": other, "gap": gap},
                 f"{white_label}: {whitebox:.2%}; {other_label}: {other:.2%}"
                 + ("" if ok else f" — the weaker attack is stronger by {gap:.2%} (allowed {tol:.2%})"))


def _transfer_acc(source, target, images, labels, attack, batch_size, device, should_stop) -> float:
    """Accuracy of ``target`` on examples crafted against ``source``."""
    adv = run_attack(source, images, labels, attack, batch_size, device, should_stop=should_stop).adv
    return float((predict_labels(target, adv, batch_size, device) == labels.cpu()).float().mean())
