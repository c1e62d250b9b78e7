"""What the Attack Lab's analyses (``craft``, ``eps_sweep``, ``transfer``) share: their models by
slot, their images, their attack, the seeded RNG around it, and the models' part of their JSON.

Each of the three is one engine call (``engine.attacks.craft_and_compare`` / ``eps_sweep`` /
``transfer_matrix``) on models named by slot (A, B, ... in request order,
``engine.analysis.requests.SLOTS``).
"""
from __future__ import annotations

from contextlib import contextmanager

from engine.analysis.base import AnalysisCancelled
from engine.errors import InvalidParameterError


def build_attack(request, **override):
    """The request's attack (``engine.attacks.make_attack`` with its parameters and ``override``;
    InvalidParameterError for an unknown attack or a parameter it does not take)."""
    from engine.attacks import make_attack

    return make_attack(request.attack, request.dataset, **{**request.attack_kwargs(), **override})


def check(request) -> None:
    """Torch-side checks before a job is queued: the attack and its parameters exist."""
    build_attack(request)


def load_models(request, ctx, split: str = "test"):
    """``(slot -> model, the dataset's split, notes)``: every model loaded (``ctx.load``) and
    checked against the dataset (input shape and class count; notes when its classes differ)."""
    from engine import data as edata
    from engine.analysis.cka import check_models

    loaded = [ctx.load(ref) for ref in request.models]
    dataset = edata.load_dataset(request.dataset, split=split)
    notes = check_models(loaded, dataset, request.dataset, classes=True)
    return {slot: m.model for slot, m in zip(request.slots(), loaded)}, dataset, notes


def first_images(request, dataset):
    """The first ``request.n`` images of ``dataset`` (InvalidParameterError when it has fewer)."""
    from engine import data as edata

    if request.n > len(dataset):
        raise InvalidParameterError(f"n must be an integer in [1, {len(dataset)}] (the {request.dataset} "
                                    f"split's size), got {request.n}")
    return edata.take(dataset, request.n)


@contextmanager
def attacking(request, ctx):
    """The block that runs the attack: torch's RNG seeded with ``request.seed``, and a stop
    (``AttackCancelled``) turned into :class:`AnalysisCancelled` (nothing stored)."""
    from engine.analysis.evaluate import seeded
    from engine.attacks import AttackCancelled

    try:
        with seeded(request.seed, ctx.device):
            yield
    except AttackCancelled:
        raise AnalysisCancelled(f"{request.kind} stopped before it finished; nothing was stored") from None


def models_json(request) -> list[dict]:
    """``[{"slot", "checkpoint", "bn_branch"}, ...]``: which model each slot is (torch-free)."""
    return [{"slot": slot, "checkpoint": ref.path, "bn_branch": ref.branch}
            for slot, ref in zip(request.slots(), request.models)]
