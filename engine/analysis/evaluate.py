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

from contextlib import contextmanager
from typing import NamedTuple

import numpy as np

from engine.analysis.base import AnalysisCancelled, Payload, finite
from engine.errors import InvalidParameterError

#: share of the progress bar the clean pass takes when an attack follows (the attack: the rest)
CLEAN_SHARE = 10
BAR = 100


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


def stage_progress(ctx, start: int, width: int):
    """``progress(done, total)`` of one stage drawn on ``[start, start + width)`` of one bar of :data:`BAR`."""
    def update(done: int, total: int) -> None:
        ctx.report(start + width * done // max(total, 1), BAR)
    return update


@contextmanager
def seeded(seed: int, device: str):
    """Torch's RNG (CPU and ``device``'s GPU) seeded with ``seed`` inside the block, restored after."""
    import torch

    where = torch.device(device)
    devices = [where.index if where.index is not None else torch.cuda.current_device()] if where.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


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
    from engine.analysis.cka import check_models
    from engine.evaluation import accuracy

    attack = build_attack(request) if request.attack is not None else None
    loaded = ctx.load(request.model)
    dataset = edata.load_dataset(request.dataset, split=request.split)
    notes = check_models([loaded], dataset, request.dataset, classes=True)
    if request.n is not None and request.n > len(dataset):
        raise InvalidParameterError(f"n must be an integer in [1, {len(dataset)}] (the {request.dataset} "
                                    f"{request.split} split's size), got {request.n}")
    ctx.check_stop()
    clean_width = CLEAN_SHARE if attack is not None else BAR
    clean = accuracy(loaded.model, dataset, n=request.n, batch_size=request.batch_size, device=ctx.device,
                     progress=stage_progress(ctx, 0, clean_width), should_stop=ctx.stopped)
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
        with seeded(request.seed, ctx.device):
            measured, arrays = measure(request, ctx, loaded.model, attack, images, labels,
                                       stage_progress(ctx, clean_width, BAR - clean_width))
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
