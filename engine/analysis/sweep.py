"""The ε-sweep as an analysis: :class:`~engine.analysis.requests.EpsSweepRequest` -> stored curves.

``run`` is one call of ``engine.attacks.eps_sweep`` on the first ``n`` test images (torch's RNG
seeded with the request's seed, one progress step per model and ε, a stop that stores nothing).
``decode`` rebuilds the :class:`~engine.attacks.SweepResult` (keyed by slot: A, B, ...) the Attack
Lab plots; ``report`` gives ``python -m engine sweep --json`` without importing torch.
"""
from __future__ import annotations

import dataclasses

from engine.analysis.attacklab import attacking, check, first_images, load_models, models_json  # noqa: F401
from engine.analysis.base import AnalysisCancelled, Payload, finite


def run(request, ctx) -> Payload:
    """Robust accuracy of every model at every ε (see the module docstring)."""
    from engine.attacks import eps_sweep

    check(request)
    models, dataset, notes = load_models(request, ctx)
    images, labels = first_images(request, dataset)
    ctx.check_stop()
    with attacking(request, ctx):
        swept = eps_sweep(models, images, labels, request.attack, list(request.eps), dataset=request.dataset,
                          params=request.attack_kwargs(), batch_size=request.batch_size, device=ctx.device,
                          progress=ctx.report, should_stop=ctx.stopped)
    if swept.stopped:
        raise AnalysisCancelled("ε-sweep stopped before it finished; nothing was stored")
    return Payload({}, finite({"sweep": dataclasses.asdict(swept), "notes": notes, "device": ctx.device}))


def decode(result, **_options):
    """The :class:`~engine.attacks.SweepResult` of a stored result."""
    from engine.attacks import SweepResult

    return SweepResult(**result.meta["sweep"])


def report(result) -> dict:
    """The JSON of ``python -m engine sweep --json``: the attack, ε values and, per model, its
    robust accuracy at each ε (torch-free)."""
    sweep = result.meta["sweep"]
    return {"attack": sweep["attack"], "config": sweep["config"], "dataset": result.request.dataset,
            "n": sweep["n"], "eps": sweep["eps"],
            "models": [{**model, "robust_acc": sweep["accuracy"][model["slot"]]} for model in models_json(result.request)],
            "device": result.meta.get("device", "")}


def rows(result) -> list[dict]:
    """Long-format CSV rows: slot, checkpoint, ε, robust accuracy."""
    body = report(result)
    return [{"slot": m["slot"], "checkpoint": m["checkpoint"], "eps": eps, "robust_acc": acc}
            for m in body["models"] for eps, acc in zip(body["eps"], m["robust_acc"])]
