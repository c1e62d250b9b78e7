"""The ε-sweep as an analysis: :class:`~engine.analysis.requests.EpsSweepRequest` -> stored curves.

``run`` is one call of ``engine.attacks.eps_sweep`` on the first ``n`` test images (torch's RNG
seeded with the request's seed, one progress step per model and ε, a stop that stores nothing).
``decode`` rebuilds the :class:`~engine.attacks.SweepResult` (keyed by slot: A, B, ...) the Attack
Lab plots; ``report`` gives ``python -m engine sweep --json`` without importing torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from engine.analysis.base import AnalysisCancelled, Payload, Request, finite
from engine.analysis.fields import MAX_BATCH, MAX_IMAGES, MAX_SWEEP, check_float, check_int
from engine.analysis.kinds._attacklab import (  # noqa: F401
    AttackChoice,
    attacking,
    check,
    first_images,
    load_models,
    models_json,
)
from engine.analysis.registry import register
from engine.analysis.schema import Schema
from engine.errors import InvalidParameterError


@register(title="ε-sweep", page="attack_lab")
@dataclass(frozen=True)
class EpsSweepRequest(AttackChoice, Request):
    """Robust accuracy of each model at each ε (``engine.attacks.eps_sweep``) on the first ``n``
    test images: the Attack Lab's ε-sweep, ``python -m engine sweep``.

    Attributes:
        models: one to eight models (slots A, B, ...); dataset: its test split.
        eps: the ε values, 1 to :data:`MAX_SWEEP` (bounded attacks rerun at each; minimal-norm
            ones run once and count an image robust at ε when nothing was found within ε).
        attack, params: the attack and its :func:`attack_params` (no ``eps``).
        batch_size: images per pass (the attacks' draws are per batch); seed: torch's RNG.
    """

    kind = "eps_sweep"

    eps: tuple[float, ...] = field(kw_only=True)  # required: keyword-only, as it follows defaults
    n: int = 64
    batch_size: int = 128
    seed: int = 0

    def _check(self) -> None:
        self._check_models_and_attack(refused=("eps",))
        if not isinstance(self.eps, tuple) or not 1 <= len(self.eps) <= MAX_SWEEP:
            raise InvalidParameterError(f"eps takes 1 to {MAX_SWEEP} values, got {self.eps!r}")
        for value in self.eps:
            check_float("ε", value, 0.0, 1e4, optional=False)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        return f"{super().describe()} · {self.attack} at {len(self.eps)} ε · {self.dataset} · {self.n} images"


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


def passes(request, _per, _loaded) -> tuple[float, int]:
    """Cost model: the attack and its clean and adversarial passes on every model at every ε of a
    bounded attack, once for a minimal-norm one."""
    from engine.analysis.cost import attack_passes
    from engine.attacks import get_attack_class

    points = len(request.eps) if get_attack_class(request.attack).bounded else 1
    return (attack_passes(request.attack, request.attack_kwargs()) + 2.0) * points, request.n


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"sweep": {"attack": str, "eps": [float], "accuracy": dict, "n": int, "config": dict, "stopped": bool},
          "notes": [str], "device": str},
    rule=lambda meta, _arrays: None if all(
        isinstance(accs, list) and len(accs) == len(meta["sweep"]["eps"]) for accs in meta["sweep"]["accuracy"].values()
    ) else "a model's accuracies differ in number from the ε values",
)
