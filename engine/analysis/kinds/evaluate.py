"""Robust accuracy as an analysis: :class:`~engine.analysis.requests.EvaluateRequest` -> stored figures.

``run`` measures clean accuracy (``engine.evaluation.accuracy``) and then the attack on the same
first ``n`` images: the AutoAttack family attack by attack (``engine.attacks.evaluate_autoattack``),
any other attack with ``engine.attacks.robust_accuracy``; torch's RNG is seeded with the request's
seed around the attack (PGD's random starts), so a request always gives the figure it stored. The stored result keeps the figures in the metadata and, for the family, which attack broke
each point (``found_by``) and which stayed robust (``robust``) as arrays. ``decode`` rebuilds an
:class:`Evaluation`; ``report`` gives the JSON ``python -m engine evaluate --json`` prints, without
importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite
from engine.analysis.fields import (
    AUTOATTACK_FAMILY,
    AUTOATTACK_VERSIONS,
    MAX_BATCH,
    MAX_IMAGES,
    MAX_SEED,
    NORMS,
    SPLITS,
    check_bool,
    check_choice,
    check_dataset,
    check_float,
    check_int,
    check_names,
)
from engine.analysis.registry import register
from engine.analysis.runner import BAR
from engine.analysis.schema import Array, Schema
from engine.errors import InvalidParameterError

#: evaluate's attack parameters: those of every attack, of the AutoAttack family only, of the others only
_ATTACK_PARAMS = ("norm", "eps", "steps", "restarts")


_FAMILY_PARAMS = ("version", "attacks", "queries", "n_target_classes")


_OTHER_PARAMS = ("alpha", "random_start", "targeted")


@register(title="Robust accuracy", page="models", permalink=False)
@dataclass(frozen=True)
class EvaluateRequest(Request):
    """Clean accuracy of one model on a split, and robust accuracy under one attack
    (``python -m engine evaluate``).

    Clean accuracy is ``engine.evaluation.accuracy`` over the first ``n`` images; the attack runs
    on the same images: ``engine.attacks.evaluate_autoattack`` (attack by attack) for the AutoAttack
    family, ``engine.attacks.robust_accuracy`` for the others. Torch's RNG is seeded with ``seed``
    around the attack, so random starts (PGD) repeat and the stored figure is the request's.

    Attributes:
        model: the model (BN branch included); dataset, split: the images.
        n: the first ``n`` images (None: the whole split).
        batch_size: images per pass (the attacks' random draws are per batch, so it is part of
            the request).
        attack: an ``engine.attacks.ATTACKS`` name, or None for clean accuracy only.
        norm, eps, steps, restarts: the attack's threat model and effort (None: the attack's
            per-dataset default, ``engine.attacks.make_attack``).
        alpha, random_start, targeted: PGD-style options (not for the AutoAttack family).
        version, attacks, queries, n_target_classes: AutoAttack's version, a ``custom`` sequence,
            Square's query budget and APGD-T/FAB-T's target count (AutoAttack family only).
        seed: seeds the attack (the family's own seed) and torch's RNG around it.
    """

    kind = "robust_accuracy"
    MODEL_FIELDS = ("model",)

    model: ModelRef
    dataset: str
    split: str = "test"
    n: int | None = None
    batch_size: int = 256
    attack: str | None = None
    norm: str | None = None
    eps: float | None = None
    steps: int | None = None
    restarts: int | None = None
    alpha: float | None = None
    random_start: bool | None = None
    targeted: bool | None = None
    version: str | None = None
    attacks: tuple[str, ...] | None = None
    queries: int | None = None
    n_target_classes: int | None = None
    seed: int = 0

    def _check(self) -> None:
        check_dataset(self.dataset)
        check_choice("split", self.split, SPLITS)
        if self.n is not None:
            check_int("n", self.n, 1, MAX_IMAGES)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)
        if self.attack is not None and (not isinstance(self.attack, str) or not self.attack):
            raise InvalidParameterError(f"attack must be an attack name, got {self.attack!r}")
        if self.norm is not None:
            check_choice("norm", self.norm, NORMS)
        check_float("eps", self.eps, 0.0, 1e4)
        check_float("alpha", self.alpha, 0.0, 1e4)
        for name, high in (("steps", 10_000), ("restarts", 1000), ("queries", 10_000_000), ("n_target_classes", 999)):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1, high)
        check_bool("random_start", self.random_start)
        check_bool("targeted", self.targeted)
        if self.version is not None:
            check_choice("version", self.version, AUTOATTACK_VERSIONS)
        check_names("attacks", self.attacks, limit=16)
        check_int("seed", self.seed, 0, MAX_SEED)
        self._check_params_fit_the_attack()

    def _check_params_fit_the_attack(self) -> None:
        """Refuse parameters the chosen attack does not take (they would split the result key)."""
        given = [p for p in (*_ATTACK_PARAMS, *_FAMILY_PARAMS, *_OTHER_PARAMS) if getattr(self, p) is not None]
        if self.attack is None and given:
            raise InvalidParameterError(f"attack parameters ({', '.join(given)}) need an attack")
        foreign = _OTHER_PARAMS if self.family else _FAMILY_PARAMS
        wrong = [p for p in given if p in foreign]
        if self.attack is not None and wrong:
            what = ("its step size is automatic and APGD-T/FAB-T choose their own targets" if self.family
                    else "they are the AutoAttack family's")
            raise InvalidParameterError(f"{self.attack} takes no {', '.join(wrong)}: {what}")

    @property
    def family(self) -> bool:
        """True for the AutoAttack family (evaluated attack by attack)."""
        return self.attack in AUTOATTACK_FAMILY

    def attack_params(self) -> dict:
        """The attack parameters given (``engine.attacks.make_attack`` keywords); the family's seed too."""
        names = _ATTACK_PARAMS + (_FAMILY_PARAMS if self.family else _OTHER_PARAMS)
        params = {p: getattr(self, p) for p in names if getattr(self, p) is not None}
        if self.family:
            params["seed"] = self.seed
        return params

    def describe(self) -> str:
        images = "all" if self.n is None else self.n
        what = f"under {self.attack}" if self.attack else "clean"
        return f"{super().describe()} · {self.dataset} {self.split} · {images} images · {what}"

#: share of the progress bar the clean pass takes when an attack follows (the attack: the rest)
CLEAN_SHARE = 10


class Evaluation(NamedTuple):
    """What ``evaluate`` measured.

    Attributes:
        clean: ``engine.evaluation.AccuracyResult`` over the request's images.
        attack: ``engine.attacks.AutoAttackResult`` (AutoAttack family; ``found_by`` and ``robust``
            restored, ``adv`` not stored), ``engine.attacks.RobustAccuracy`` (other attacks), or
            None (clean accuracy only).
        device: where it was computed.
    """

    clean: object
    attack: object | None
    device: str


def build_attack(request):
    """The request's attack (``engine.attacks.make_attack``; InvalidParameterError for a parameter
    it does not take or out of range)."""
    from engine.attacks import make_attack

    return make_attack(request.attack, request.dataset, **request.attack_params())


def check(request) -> None:
    """Torch-side checks before a job is queued: the attack and its parameters exist."""
    if request.attack is not None:
        build_attack(request)


def device_name(device: str) -> str:
    """The accelerator's name for a CUDA ``device`` (what measured a figure), else ``device``."""
    import torch

    where = torch.device(device)
    return torch.cuda.get_device_name(where) if where.type == "cuda" else where.type


def torch_version() -> str:
    """The torch version that measured a figure."""
    import torch

    return torch.__version__


def run(request, ctx) -> Payload:
    """Clean accuracy, then the attack (see the module docstring)."""
    from engine import data as edata
    from engine.evaluation import accuracy

    attack = build_attack(request) if request.attack is not None else None
    dataset = ctx.images(request.dataset, request.split, request.n)
    (loaded,), notes = ctx.models([request.model], dataset)
    ctx.check_stop()
    clean_width = CLEAN_SHARE if attack is not None else BAR
    clean = accuracy(loaded.model, dataset, n=request.n, batch_size=request.batch_size, device=ctx.device,
                     progress=ctx.stage(0, clean_width), should_stop=ctx.stopped)
    if clean.stopped:
        raise AnalysisCancelled("evaluation stopped before it finished; nothing was stored")
    meta = {"clean": {"accuracy": clean.accuracy, "correct": clean.correct, "total": clean.total,
                      "seconds": clean.seconds},
            "attack": None, "family": request.family, "notes": notes, "device": ctx.device,
            "device_name": device_name(ctx.device), "torch": torch_version(), "split_size": len(dataset)}
    arrays = {}
    if attack is not None:
        images, labels = edata.take(dataset, clean.total)
        measure = _family if request.family else _other
        with ctx.seeded(request.seed):
            measured, arrays = measure(request, ctx, loaded.model, attack, images, labels,
                                       ctx.stage(clean_width, BAR - clean_width))
        meta["attack"] = measured
    return Payload(arrays, finite(meta))


def _family(request, ctx, model, attack, images, labels, progress) -> tuple[dict, dict]:
    """An AutoAttack-family attack, attack by attack: its summary and per-point arrays."""
    from engine.attacks import evaluate_autoattack

    res = evaluate_autoattack(model, images, labels, attack, batch_size=request.batch_size, device=ctx.device,
                              progress=progress, should_stop=ctx.stopped)
    if res.stopped:
        raise AnalysisCancelled(f"{attack.name} stopped before it finished; nothing was stored")
    arrays = {"found_by": res.found_by.numpy().astype(np.int16), "robust": res.robust.numpy().astype(bool)}
    return res.as_dict(), arrays


def _other(request, ctx, model, attack, images, labels, progress) -> tuple[dict, dict]:
    """Any other attack (``robust_accuracy``): its summary, no arrays."""
    from engine.attacks import robust_accuracy

    res = robust_accuracy(model, images, labels, attack, batch_size=request.batch_size, device=ctx.device,
                          progress=progress, should_stop=ctx.stopped)
    if res.stopped:
        raise AnalysisCancelled(f"{attack.name} stopped before it finished; nothing was stored")
    return res.as_dict(), {}


def decode(result, **_options) -> Evaluation:
    """The :class:`Evaluation` of a stored result."""
    from engine.evaluation import AccuracyResult

    meta = result.meta
    clean = meta["clean"]
    clean_result = AccuracyResult(clean["accuracy"], clean["correct"], clean["total"], clean["seconds"])
    attack = meta.get("attack")
    if attack is None:
        return Evaluation(clean_result, None, meta.get("device", ""))
    if meta.get("family"):
        import torch

        from engine.attacks import AutoAttackResult

        fields = {k: v for k, v in attack.items() if k != "robustscope_version"}
        tensors = {name: torch.from_numpy(np.asarray(result.arrays[name])) for name in ("found_by", "robust")
                   if name in result.arrays}
        if "found_by" in tensors:
            tensors["found_by"] = tensors["found_by"].long()
        return Evaluation(clean_result, AutoAttackResult(**fields, **tensors), meta.get("device", ""))
    from engine.attacks import RobustAccuracy

    return Evaluation(clean_result, RobustAccuracy(**attack), meta.get("device", ""))


def report(result) -> dict:
    """The JSON of ``python -m engine evaluate --json`` (torch-free)."""
    request, meta = result.request, result.meta
    clean = meta["clean"]
    out = {"checkpoint": request.model.path, "dataset": request.dataset, "split": request.split,
           "n": clean["total"], "clean_acc": clean["accuracy"], "seconds": round(clean["seconds"], 3),
           "device": meta.get("device", ""), "bn_branch": request.model.branch,
           **{k: meta[k] for k in ("device_name", "torch", "split_size") if k in meta}}
    attack = meta.get("attack")
    if attack is None:
        return out
    out.update(robust_acc=attack["robust_acc"], attack_clean_acc=attack["clean_acc"], attack=attack["config"])
    if meta.get("family"):
        out.update(attack_n=attack["n"], per_attack=attack["per_attack"], attack_seconds=attack["seconds"],
                   seed=attack["seed"], version=attack["version"], norm=attack["norm"], eps=attack["eps"],
                   notes=attack["notes"], stopped=attack["stopped"],
                   robustscope_version=attack.get("robustscope_version", result.version))
    else:
        out["attack_seconds"] = round(attack["seconds"], 3)
    return out


def rows(result) -> list[dict]:
    """CSV rows: clean accuracy, then the robust figure (for the family: after each attack)."""
    body = report(result)
    out = [{"measure": "clean", "accuracy": body["clean_acc"], "n": body["n"]}]
    for stage in body.get("per_attack", []):
        out.append({"measure": f"after {stage['attack']}", "accuracy": stage["robust_acc_after"], "n": body["attack_n"]})
    if "robust_acc" in body:
        out.append({"measure": body["attack"].get("attack", "attack"), "accuracy": body["robust_acc"], "n": body["n"]})
    return out


def passes(request, _per, _loaded) -> tuple[float, int]:
    """Cost model: one clean pass plus the attack's (an upper bound: points broken early skip the
    later attacks of the AutoAttack family), over ``n`` images or the whole split."""
    from engine.analysis.cost import attack_passes

    attack = attack_passes(request.attack, request.attack_params()) if request.attack else 0.0
    if request.n is not None:
        return 1.0 + attack, request.n
    from engine import data as edata

    return 1.0 + attack, len(edata.load_dataset(request.dataset, split=request.split))


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"clean": {"accuracy": float, "correct": int, "total": int, "seconds": float},
          "attack": (None, {"clean_acc": float, "robust_acc": float, "n": int, "seconds": float}),
          "family": bool, "notes": [str], "device": str},
    arrays={"found_by": Array("i", 1, required=False), "robust": Array("b", 1, required=False)},
)
