"""AutoAttack (Croce & Hein 2020): a fixed ensemble of parameter-free attacks whose per-point worst
case is the field's standard robust-accuracy figure.

Versions (ℓ∞ and ℓ₂), with the reference implementation's settings:

- ``standard``: APGD-CE (100 steps) → APGD-T (targeted DLR, 9 targets, 100 steps) → FAB-T
  (9 targets, 100 steps) → Square (5,000 queries, p_init 0.8).
- ``plus``: APGD-CE and APGD-DLR (5 restarts each) → FAB (5 restarts) → Square → APGD-T → FAB-T.
- ``rand`` (randomised defences): APGD-CE and APGD-DLR with Expectation over Transformation
  (20 gradient samples per step).
- ``custom``: the names given in ``attacks``, each with the standard settings.

Each attack runs only on the points every earlier attack left robust, and a point's adversarial
example is the first one found, so the robust accuracy is the per-point worst case over the
sequence. Target counts are capped at the number of classes − 1.

Two ways in: ``AutoAttack(eps=0.3)(model, x, y)`` is an attack like any other (one batch, one
:class:`AttackResult` whose ``found_by`` names the attack that broke each point);
:func:`evaluate_autoattack` runs a sequence over a whole test set in batches, as the reference does
(attack by attack, each over all still-robust points), and returns the accuracy after each
attack, the points each broke and the time each took.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from engine.attacks.apgd import APGD, APGDDLR, APGDT, _check_seed
from engine.attacks.base import (
    MAX_STEPS, Attack, AttackCancelled, AttackResult, check_eps, check_norm, check_positive_int, frozen_eval,
)
from engine.attacks.fab import FAB, FABT
from engine.attacks.square import MAX_QUERIES, Square
from engine.errors import InvalidParameterError
from engine.models.state import moved_to
from engine.version import __version__
from engine.runtime import Progress, ShouldStop


#: version -> the attacks it runs, in order
VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "plus": ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
#: the attacks a ``custom`` sequence may name
MEMBERS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")


def build_member(name: str, version: str, eps: float, norm: str, seed: int = 0, steps: int = 100,
                 queries: int = 5000, n_target_classes: int = 9, amp: bool = False,
                 channels_last: bool = False) -> Attack:
    """Attack ``name`` with the settings AutoAttack's ``version`` gives it."""
    common = dict(eps=eps, norm=norm, seed=seed, amp=amp, channels_last=channels_last)
    restarts = 5 if version == "plus" else 1
    eot = 20 if version == "rand" else 1
    if name == "apgd-ce":
        return APGD(steps=steps, restarts=restarts, eot_iter=eot, **common)
    if name == "apgd-dlr":
        return APGDDLR(steps=steps, restarts=restarts, eot_iter=eot, **common)
    if name == "apgd-t":
        return APGDT(steps=steps, restarts=1, n_target_classes=n_target_classes, **common)
    if name == "fab":
        return FAB(steps=steps, restarts=restarts, **common)
    if name == "fab-t":
        return FABT(steps=steps, restarts=1, n_target_classes=n_target_classes, **common)
    if name == "square":
        return Square(queries=queries, p_init=0.8, restarts=1, **common)
    raise InvalidParameterError(f"AutoAttack has no attack {name!r}; choose from {', '.join(MEMBERS)}")


@dataclass
class AutoAttack(Attack):
    """AutoAttack (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble
    of diverse parameter-free attacks").

    Args:
        eps: radius (ℓ∞ in [0, 1]; ℓ₂ in [0, sqrt(C·H·W)], checked against the images).
        norm: ``"linf"`` or ``"l2"``.
        version: ``"standard"``, ``"plus"``, ``"rand"`` or ``"custom"`` (see the module docstring).
        attacks: the sequence for ``version="custom"`` (names from :data:`MEMBERS`), else empty.
        seed: seeds every member's random starts / search (the same seed, the same figure).
        steps: APGD/FAB iterations (AutoAttack: 100); queries: Square's budget (5,000);
            n_target_classes: APGD-T/FAB-T targets (9). Changing them leaves the standard.
        amp, channels_last: bf16 autocast / channels-last memory format (CUDA only).
    Call: ``AutoAttack(eps=0.3)(model, x, y) -> AttackResult`` (``found_by``: the index in
    ``config["attacks"]`` of the attack that broke each point, -1 if none did).
    """

    eps: float = 8 / 255
    norm: str = "linf"
    version: str = "standard"
    attacks: tuple = ()
    seed: int = 0
    steps: int = 100
    queries: int = 5000
    n_target_classes: int = 9
    amp: bool = False
    channels_last: bool = False

    name = "autoattack"
    title = "AutoAttack (Croce & Hein 2020)"

    def __post_init__(self):
        check_norm(self.norm)
        self.eps = check_eps(self.eps, self.norm)
        if self.version not in (*VERSIONS, "custom"):
            raise InvalidParameterError(f"unknown AutoAttack version {self.version!r}; choose "
                                        f"{', '.join(VERSIONS)} or custom")
        if isinstance(self.attacks, str):
            self.attacks = tuple(a.strip() for a in self.attacks.split(",") if a.strip())
        self.attacks = tuple(self.attacks or ())
        if self.version == "custom":
            if not self.attacks:
                raise InvalidParameterError("version 'custom' needs a list of attacks, e.g. apgd-ce,square")
            unknown = [a for a in self.attacks if a not in MEMBERS]
            if unknown:
                raise InvalidParameterError(f"AutoAttack has no attack {', '.join(map(repr, unknown))}; "
                                            f"choose from {', '.join(MEMBERS)}")
        elif self.attacks:
            raise InvalidParameterError(f"version {self.version!r} fixes its attacks; use version='custom' "
                                        "to choose them")
        self.seed = _check_seed(self.seed)
        check_positive_int("steps", self.steps, MAX_STEPS)
        check_positive_int("queries", self.queries, MAX_QUERIES)
        check_positive_int("n_target_classes", self.n_target_classes, 999)

    @property
    def sequence(self) -> tuple[str, ...]:
        """The attacks this version runs, in order."""
        return self.attacks if self.version == "custom" else VERSIONS[self.version]

    def members(self) -> list[Attack]:
        """The member attacks, configured, in order."""
        return [build_member(n, self.version, self.eps, self.norm, self.seed, self.steps, self.queries,
                             self.n_target_classes, self.amp, self.channels_last) for n in self.sequence]

    def config(self) -> dict:
        config = super().config()
        config["attacks"] = list(self.sequence)
        return config

    def _craft(self, fwd, x, y, targets, logits_clean):
        if targets is not None:
            raise InvalidParameterError("AutoAttack is untargeted (APGD-T and FAB-T choose their own targets)")
        members = self.members()

        def run_one(stage: int, attack: Attack, idx: torch.Tensor):
            staged = copy.copy(fwd)  # the member's progress as a share of the whole sequence
            staged.progress = None if fwd.progress is None else (
                lambda d, t: fwd.progress(stage * 1000 + (1000 * d) // max(t, 1), 1000 * len(members)))
            crafted = attack._craft(staged, x[idx], y[idx], None, logits_clean[idx])
            adv, logits = crafted[0], crafted[1]
            if logits is None:
                with torch.no_grad():
                    logits = fwd(adv)
            extras = crafted[2] if len(crafted) > 2 else {}
            return adv, logits.argmax(dim=1), extras.get("queries")

        outcome = run_sequence(members, y, logits_clean.argmax(dim=1), run_one, batch_size=len(x), x=x)
        if outcome.stopped:
            raise AttackCancelled("attack stopped by the user")
        return outcome.adv, None, {"found_by": outcome.found_by}


# ---------------------------------------------------------------------------------- the sequence


@dataclass
class _Outcome:
    adv: torch.Tensor
    robust: torch.Tensor
    found_by: torch.Tensor
    stages: list
    queries: torch.Tensor | None
    stopped: bool = False


def run_sequence(members: Sequence[Attack], y: torch.Tensor, pred_clean: torch.Tensor, run_one, batch_size: int,
                 x: torch.Tensor, on_batch=None, before_batch=None) -> _Outcome:
    """Run ``members`` in order, each on the points still robust, in chunks of ``batch_size``.

    ``run_one(stage, attack, idx) -> (adv (b,C,H,W), pred (b,), queries (b,) or None)`` attacks
    the points ``idx``; ``before_batch(stage, n_done_in_stage, n_in_stage)`` and
    ``on_batch(stage, n_done_in_stage, n_in_stage)`` follow the work (before and after each chunk).
    A cancelled member (AttackCancelled) ends the sequence with ``stopped=True``; the stages
    finished before it are complete. A member bounded by ε = 0 cannot change any image: it is not
    run, and its stage says so (``"skipped"``).
    """
    robust = pred_clean == y
    adv = x.clone()
    found_by = torch.full(y.shape, -1, dtype=torch.long, device=y.device)
    queries = None
    stages = []
    stopped = False
    for stage, attack in enumerate(members):
        start = time.perf_counter()
        todo = robust.nonzero().flatten()
        broken = 0
        if getattr(attack, "eps", None) == 0:
            stages.append({"attack": attack.name, "attacked": len(todo), "broken": 0,
                           "robust_acc_after": float(robust.float().mean()) if len(y) else 0.0, "seconds": 0.0,
                           "config": attack.config(), "skipped": "ε = 0: no perturbation is allowed"})
            continue
        try:
            for first in range(0, len(todo), batch_size):
                idx = todo[first:first + batch_size]
                if before_batch is not None:
                    before_batch(stage, first, len(todo))
                adv_b, pred_b, queries_b = run_one(stage, attack, idx)
                fooled = pred_b.to(y.device) != y[idx]
                hit = idx[fooled]
                robust[hit] = False
                adv[hit] = adv_b[fooled].to(adv.device, adv.dtype)
                found_by[hit] = stage
                broken += len(hit)
                if queries_b is not None:
                    if queries is None:
                        queries = torch.zeros(len(y), dtype=torch.long, device=y.device)
                    queries[idx] += queries_b.to(queries.device)
                if on_batch is not None:
                    on_batch(stage, first + len(idx), len(todo))
        except AttackCancelled:
            stopped = True
            break
        stages.append({
            "attack": attack.name, "attacked": len(todo), "broken": broken,
            "robust_acc_after": float(robust.float().mean()) if len(y) else 0.0,
            "seconds": round(time.perf_counter() - start, 3), "config": attack.config(),
        })
    return _Outcome(adv, robust, found_by, stages, queries, stopped)


# ---------------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class AutoAttackResult:
    """A robustness evaluation by a sequence of attacks (AutoAttack or one attack alone).

    Attributes:
        clean_acc, robust_acc: accuracies in [0, 1] over ``n`` images (robust: the per-point worst
            case over the attacks that ran).
        per_attack: one dict per attack run, in order: ``attack``, ``attacked`` (points it ran
            on), ``broken`` (points it broke), ``robust_acc_after``, ``seconds``, ``config`` (and
            ``queries_mean``/``queries_median`` over the points it attacked, for Square).
        seconds: total wall time; seed, version, norm, eps: the evaluation's settings.
        config: the attack's (or AutoAttack's) config; notes: warnings computed from the numbers
            (e.g. Square breaking points the gradient attacks did not).
        stopped: True when cancelled: ``robust_acc`` is then the accuracy after the attacks that
            finished (an upper bound).
        adv, found_by, robust: (n, C, H, W) adversarial images (the clean image where none was
            found), (n,) index into ``per_attack`` of the attack that broke each point (-1: none),
            (n,) bool still robust; on the CPU. Not part of :meth:`as_dict`.
    """

    clean_acc: float
    robust_acc: float
    n: int
    per_attack: list
    seconds: float
    seed: int | None
    version: str
    norm: str
    eps: float
    config: dict
    notes: list = field(default_factory=list)
    stopped: bool = False
    adv: torch.Tensor | None = field(default=None, repr=False, compare=False)
    found_by: torch.Tensor | None = field(default=None, repr=False, compare=False)
    robust: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        """JSON-friendly summary (no tensors), with the RobustScope version."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("adv", "found_by", "robust")}
        out["robustscope_version"] = __version__
        return out

    def rows(self) -> list[dict]:
        """One row per attack (CSV/table): attack, attacked, broken, robust_acc_after, seconds."""
        return [{k: v for k, v in stage.items() if k != "config"} for stage in self.per_attack]


def evaluate_autoattack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack | Sequence[Attack] | None = None,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> AutoAttackResult:
    """Robust accuracy of ``model`` on ``images`` (N,C,H,W) in [0, 1] / ``labels`` (N,) under
    AutoAttack (default: standard, ℓ∞, ε 8/255), another attack alone, or a list run in sequence.

    Attack by attack (as the reference implementation does), each over every point still robust in
    batches of ``batch_size``; ``progress(done, total)`` counts (attack, image) pairs, a point
    broken earlier counting as done for later attacks, and moves inside a batch with the attack's
    own progress (its iterations; Square's queries). ``should_stop()`` is polled every
    iteration; a stopped run returns what finished with ``stopped=True``.
    """
    if attack is None:
        attack = AutoAttack()
    members = attack.members() if isinstance(attack, AutoAttack) else (
        list(attack) if isinstance(attack, (list, tuple)) else [attack])
    if not members or not all(isinstance(m, Attack) for m in members):
        raise InvalidParameterError("give an attack, a list of attacks or an AutoAttack")
    check_positive_int("batch_size", batch_size)
    if len(images) != len(labels):
        raise InvalidParameterError(f"{len(images)} images but {len(labels)} labels")
    if len(images) == 0:
        raise InvalidParameterError("no images to evaluate")
    head = attack if isinstance(attack, Attack) else members[0]
    start = time.perf_counter()
    images, labels = images.detach().cpu().float(), torch.as_tensor(labels).cpu().long()
    n = len(images)
    with moved_to(model, device) as target:
        with torch.no_grad(), frozen_eval(model):
            pred_clean = torch.cat([model(images[i:i + batch_size].to(target)).argmax(dim=1).cpu()
                                    for i in range(0, n, batch_size)])
        work_total = n * len(members)
        # the chunk being attacked: where it starts on the bar and its width (images); the last
        # value reported, so a member's thousands of iterations report only what moves the bar
        chunk = {"base": 0, "width": 0, "last": -1}

        def report(value: int) -> None:
            value = min(value, work_total)
            if progress is not None and value != chunk["last"]:
                chunk["last"] = value
                progress(value, work_total)

        def within(done: int, total: int) -> None:  # a member's own progress inside the chunk
            report(chunk["base"] + (chunk["width"] * min(done, total)) // max(total, 1))

        def run_one(stage, member, idx):
            res: AttackResult = member(model, images[idx].to(target), labels[idx].to(target),
                                       progress=None if progress is None else within, should_stop=should_stop)
            queries = None if res.queries is None else res.queries.cpu()
            return res.adv.cpu(), res.preds_adv.cpu(), queries

        def before_batch(stage, first, todo):
            chunk["base"] = stage * n + (n - todo) + first
            chunk["width"] = min(batch_size, todo - first)

        def on_batch(stage, done, todo):
            report(stage * n + (n - todo) + done)

        outcome = run_sequence(members, labels, pred_clean, run_one, batch_size, images, on_batch, before_batch)
    for stage in outcome.stages:
        if stage["attack"] == "square" and outcome.queries is not None:
            attacked = outcome.queries[outcome.queries > 0].float()
            if len(attacked):
                stage["queries_mean"] = round(float(attacked.mean()), 1)
                stage["queries_median"] = float(attacked.median())
    notes = _notes(outcome.stages, n)
    config = head.config() if isinstance(attack, Attack) else {"attacks": [m.config() for m in members]}
    return AutoAttackResult(
        clean_acc=float((pred_clean == labels).float().mean()),
        robust_acc=float(outcome.robust.float().mean()),
        n=n, per_attack=outcome.stages, seconds=round(time.perf_counter() - start, 3),
        seed=getattr(head, "seed", None), version=getattr(head, "version", head.name),
        norm=getattr(head, "norm", "linf"), eps=float(getattr(head, "eps", 0.0)), config=config,
        notes=notes, stopped=outcome.stopped, adv=outcome.adv, found_by=outcome.found_by, robust=outcome.robust,
    )


def _notes(stages: list, n: int) -> list[str]:
    """Warnings read off the per-attack numbers (the reference's Square check: a black-box attack
    should not break what white-box attacks left; 0.2% of the points is its threshold)."""
    notes = []
    whitebox = [s for s in stages if s["attack"] != "square"]
    square = [s for s in stages if s["attack"] == "square"]
    if whitebox and square and square[0]["broken"] > 0.002 * n:
        notes.append(f"Square, a black-box attack, broke {square[0]['broken']} of the {square[0]['attacked']} "
                     "points the gradient-based attacks left robust: the gradients may be masked; "
                     "run the gradient-masking checks (engine.attacks.masking) or an adaptive attack")
    return notes
