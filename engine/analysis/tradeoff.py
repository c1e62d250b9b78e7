"""The ε-vs-interpretability trade-off as an analysis (Kim & Seo 2019): per checkpoint, clean
accuracy and the share of attribution mass inside the object mask.

``run`` is ``engine.attribution.epsilon_tradeoff`` on ``engine.attribution.evaluation_set``'s held-out
images (generated at the first model's input size on ``shapes``). The stored result keeps the
points (``TradeoffPoint.to_dict()``) in the metadata. ``decode`` rebuilds the ``TradeoffPoint`` list
the Saliency page plots; ``report`` gives the JSON ``python -m engine tradeoff --json`` prints and
``rows`` the CSV, both without importing torch.
"""
from __future__ import annotations

from engine.analysis.base import AnalysisCancelled, Payload, card_json, finite
from engine.errors import InvalidParameterError


def refuse_other_datasets(request, datasets) -> None:
    """Refuse checkpoints trained on another dataset than the request's (``datasets``: theirs, in order)."""
    others = [ref.path for ref, name in zip(request.models, datasets) if name != request.dataset]
    if others:
        raise InvalidParameterError(f"all checkpoints must be trained on `{request.dataset}`; not: {', '.join(others)}")


def check(request) -> None:
    """Torch-side checks before a job is queued: the method exists and the cards name the dataset."""
    from engine.attribution.methods import get_method

    get_method(request.method)
    refuse_other_datasets(request, [card_json(ref.path).get("dataset") for ref in request.models])


def run(request, ctx) -> Payload:
    """Measure every checkpoint (see the module docstring)."""
    from dataclasses import replace
    from types import SimpleNamespace

    from engine.analysis.cka import check_models
    from engine.attribution import epsilon_tradeoff, evaluation_set
    from engine.attribution.methods import get_method
    from engine.data import get_spec

    get_method(request.method)
    loaded = [ctx.load(ref) for ref in request.models]
    refuse_other_datasets(request, [c.card.dataset for c in loaded])
    data = evaluation_set(request.dataset, request.n, image_size=tuple(loaded[0].card.input_shape)[-1])
    spec = replace(get_spec(request.dataset), input_shape=tuple(data.images.shape[1:]))  # shapes: the model's size
    notes = check_models(loaded, SimpleNamespace(spec=spec), request.dataset, classes=True)
    ctx.check_stop()
    points = epsilon_tradeoff(loaded, data.images, data.labels, data.masks, method=request.method,
                              batch_size=request.batch_size, progress=ctx.report, should_stop=ctx.stopped)
    if ctx.stopped() or len(points) < len(loaded):
        raise AnalysisCancelled("ε-vs-interpretability stopped before it finished; nothing was stored")
    return Payload({}, finite({"points": [p.to_dict() for p in points], "notes": notes, "device": ctx.device}))


def decode(result, **_options) -> list:
    """The ``engine.attribution.TradeoffPoint`` list, sorted by training ε (then name)."""
    from engine.attribution import TradeoffPoint

    return [TradeoffPoint(**point) for point in result.meta["points"]]


def report(result) -> dict:
    """The JSON of ``python -m engine tradeoff --json`` (torch-free)."""
    request = result.request
    return {"dataset": request.dataset, "method": request.method, "n": request.n,
            "points": list(result.meta["points"])}


def rows(result) -> list[dict]:
    """One row per checkpoint (the Saliency page's table and CSV)."""
    return [dict(point) for point in result.meta["points"]]
