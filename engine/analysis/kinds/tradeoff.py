"""The ε-vs-interpretability trade-off as an analysis (Kim & Seo 2019): per checkpoint, clean
accuracy and the share of attribution mass inside the object mask.

``run`` is ``engine.attribution.epsilon_tradeoff`` on ``engine.attribution.evaluation_set``'s held-out
images (generated at the first model's input size on ``shapes``). The stored result keeps the
points (``TradeoffPoint.to_dict()``) in the metadata. ``decode`` rebuilds the ``TradeoffPoint`` list
the Saliency page plots; ``report`` gives the JSON ``python -m engine tradeoff --json`` prints and
``rows`` the CSV, both without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite
from engine.analysis.fields import MAX_BATCH, check_choice, check_int, check_model_list
from engine.analysis.registry import register
from engine.analysis.schema import Schema
from engine.catalogue import ALIGNMENT_DATASETS
from engine.errors import InvalidParameterError

#: most held-out images one ε-vs-interpretability measurement uses (every model attributes each)
MAX_ALIGNMENT_IMAGES = 10_000


@register(title="ε vs interpretability", page="saliency")
@dataclass(frozen=True)
class TradeoffRequest(Request):
    """The ε-vs-interpretability trade-off (Kim & Seo 2019, ``engine.attribution.epsilon_tradeoff``):
    clean accuracy and the share of attribution mass inside the object mask, per checkpoint.

    Attributes:
        models: one to 64 checkpoints whose cards record a training ε, all trained on ``dataset``
            and of one input shape.
        dataset: "shapes" (exact masks), "mnist" or "fashion-mnist" (the non-zero pixels);
            its ``n`` held-out images (``engine.attribution.evaluation_set``).
        method: the attribution method; batch_size: images per pass.
    """

    kind = "tradeoff"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    n: int = 256
    method: str = "saliency"
    batch_size: int = 64

    def _check(self) -> None:
        check_model_list(self.models, limit=64)
        check_choice("dataset", self.dataset, ALIGNMENT_DATASETS)
        check_int("n", self.n, 1, MAX_ALIGNMENT_IMAGES)
        if not isinstance(self.method, str) or not self.method:
            raise InvalidParameterError(f"method must be an attribution method name, got {self.method!r}")
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        return f"{self.kind}: {len(self.models)} checkpoint(s) · {self.dataset} · {self.n} images · {self.method}"


def refuse_other_datasets(request, datasets) -> None:
    """Refuse checkpoints trained on another dataset than the request's (``datasets``: theirs, in order)."""
    others = [ref.path for ref, name in zip(request.models, datasets) if name != request.dataset]
    if others:
        raise InvalidParameterError(f"all checkpoints must be trained on `{request.dataset}`; not: {', '.join(others)}")


def check(request) -> None:
    """Torch-side checks before a job is queued: the method exists and the cards name the dataset."""
    from engine.attribution.methods import get_method

    get_method(request.method)
    refuse_other_datasets(request, [ref.card().dataset for ref in request.models])


def run(request, ctx) -> Payload:
    """Measure every checkpoint (see the module docstring)."""
    from dataclasses import replace

    from engine.attribution import epsilon_tradeoff, evaluation_set
    from engine.attribution.methods import get_method
    from engine.data import get_spec
    from engine.selection import check_compatible

    get_method(request.method)
    loaded = [ctx.load(ref) for ref in request.models]
    refuse_other_datasets(request, [c.card.dataset for c in loaded])
    data = evaluation_set(request.dataset, request.n, image_size=tuple(loaded[0].card.input_shape)[-1])
    spec = replace(get_spec(request.dataset), input_shape=tuple(data.images.shape[1:]))  # shapes: the model's size
    notes = check_compatible(loaded, spec)
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


def passes(request, _per, _loaded) -> tuple[float, int]:
    """Cost model: one attribution map and one clean pass per image."""
    from engine.analysis.cost import method_passes

    return method_passes(request.method, {}) + 1.0, request.n


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(meta={"points": [dict], "notes": [str], "device": str})
