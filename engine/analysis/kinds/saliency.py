"""The saliency grid as an analysis: attribution maps of one test image, every method x model.

``run`` is ``engine.attribution.attribution_grid`` on the request's image; the stored result keeps
each cell's attribution (C, H, W) and heatmap (H, W) as arrays and its prediction, target,
parameters and any refusal in the metadata. ``decode`` rebuilds the ``GridCell`` list the
Saliency page and ``python -m engine saliency`` render.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite, unique_names
from engine.analysis.fields import (
    PARAM_TYPES,
    check_dataset,
    check_float,
    check_int,
    check_model_list,
    check_names,
    grouped_params,
)
from engine.analysis.registry import register
from engine.analysis.schema import Array, Schema
from engine.errors import InvalidParameterError


@register(title="Saliency maps", page="saliency")
@dataclass(frozen=True)
class SaliencyGridRequest(Request):
    """Attribution maps of one test image, every method for every model (``attribution_grid``).

    Attributes:
        models: one to eight models; dataset, index: the image (test split).
        target: the class attributed (None: each model's own prediction).
        methods: ``engine.attribution.METHODS`` names, in display order.
        params: ``((method, name, value), ...)`` overriding a method's defaults.
        reduce, percentile: the heatmap's channel reduction and clipping percentile.
    """

    kind = "saliency_grid"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    index: int = 0
    target: int | None = None
    methods: tuple[str, ...] = ("saliency",)
    params: tuple[tuple[str, str, object], ...] = ()
    reduce: str = "abs_sum"
    percentile: float = 99.0

    def _check(self) -> None:
        check_model_list(self.models)
        check_dataset(self.dataset)
        check_int("index", self.index, 0, 100_000_000)
        if self.target is not None:
            check_int("target", self.target, 0, 1_000_000)
        check_names("methods", self.methods, optional=False, limit=32)
        if not isinstance(self.params, tuple) or len(self.params) > 256:
            raise InvalidParameterError("params must be a list of (method, name, value) triples")
        for item in self.params:
            if not (isinstance(item, tuple) and len(item) == 3 and all(isinstance(v, str) for v in item[:2])
                    and isinstance(item[2], PARAM_TYPES)):
                raise InvalidParameterError(f"a parameter is (method, name, value), got {item!r}")
            if item[0] not in self.methods:
                raise InvalidParameterError(f"parameter {item[0]}.{item[1]} is for a method not chosen")
        if not isinstance(self.reduce, str) or not self.reduce:
            raise InvalidParameterError(f"reduce must be a reduction name, got {self.reduce!r}")
        check_float("percentile", self.percentile, 50.0, 100.0, optional=False)

    def method_params(self) -> dict[str, dict]:
        """``{method: {name: value}}`` in method order."""
        return grouped_params(self.methods, self.params)

    def describe(self) -> str:
        return f"{super().describe()} · {self.dataset} #{self.index} · {', '.join(self.methods)}"


def run(request, ctx) -> Payload:
    """Attribute the request's image with every method for every model."""
    from engine.attribution import attribution_grid
    from engine.attribution.methods import get_method

    for method in request.methods:
        get_method(method)
    names = unique_names(request.models, file_safe=True)
    dataset = ctx.images(request.dataset)
    loaded, notes = ctx.models(request.models, dataset)
    if request.index >= len(dataset):
        raise InvalidParameterError(f"index must be in [0, {len(dataset) - 1}] for {request.dataset}, "
                                    f"got {request.index}")
    image, label = dataset[request.index]
    ctx.check_stop()
    cells = attribution_grid({n: m.model for n, m in zip(names, loaded)}, image, request.method_params(),
                             target=request.target, reduce=request.reduce, percentile=request.percentile,
                             progress=ctx.report)
    if ctx.stopped():
        raise AnalysisCancelled("saliency grid stopped before it finished; nothing was stored")
    arrays, meta_cells = {}, []
    for i, cell in enumerate(cells):
        entry = {"model": cell.model, "method": cell.method, "target": int(cell.target),
                 "predicted": int(cell.predicted), "probability": float(cell.probability), "error": cell.error}
        if cell.attribution is not None:
            arrays[f"attribution_{i}"] = np.asarray(cell.attribution.maps[0], dtype=np.float32)
            arrays[f"heatmap_{i}"] = np.asarray(cell.heatmap, dtype=np.float32)
            entry["params"] = cell.attribution.params
            entry["delta"] = None if cell.attribution.delta is None else float(cell.attribution.delta[0])
        meta_cells.append(entry)
    meta = finite({"names": names, "label": int(label), "cells": meta_cells, "notes": notes, "device": ctx.device})
    return Payload(arrays, meta)


def decode(result, names: dict | None = None, **_options) -> list:
    """The ``engine.attribution.GridCell`` list (methods outer, models inner); ``names`` renames
    models (stored name -> shown name)."""
    from engine.attribution.grid import GridCell
    from engine.attribution.methods import Attribution

    rename = names or {}
    out = []
    for i, entry in enumerate(result.meta["cells"]):
        attribution = heatmap = None
        if f"attribution_{i}" in result.arrays:
            maps = np.asarray(result.arrays[f"attribution_{i}"])[None]
            delta = None if entry.get("delta") is None else np.asarray([entry["delta"]], dtype=np.float32)
            attribution = Attribution(maps, entry["method"], dict(entry.get("params") or {}), delta,
                                      np.asarray([entry["target"]], dtype=np.int64))
            heatmap = np.asarray(result.arrays[f"heatmap_{i}"])
        out.append(GridCell(rename.get(entry["model"], entry["model"]), entry["method"], attribution, heatmap,
                            entry["target"], entry["predicted"], entry["probability"], entry.get("error")))
    return out


def report(result) -> dict:
    """The CLI's JSON of a saliency grid (torch-free; the maps themselves via ``--out F.npz``)."""
    request, meta = result.request, result.meta
    return {"dataset": request.dataset, "index": request.index, "label": meta["label"],
            "checkpoints": {n: r.path for n, r in zip(meta["names"], request.models)},
            "methods": list(request.methods), "maps": meta["cells"], "seconds": round(result.seconds, 3),
            "warnings": list(meta.get("notes", []))}


def passes(request, _per, _loaded) -> tuple[float, int]:
    """Cost model: on its one image, a forward and a backward pass per gradient each method takes
    (SmoothGrad's noisy copies, Integrated Gradients' steps)."""
    from engine.analysis.cost import method_passes

    return sum(method_passes(method, params) for method, params in request.method_params().items()), 1


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"names": [str], "label": int, "cells": [dict], "notes": [str], "device": str},
    arrays={"attribution_*": Array("f", 3), "heatmap_*": Array("f", 2)},
)
