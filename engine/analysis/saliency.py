"""The saliency grid as an analysis: attribution maps of one test image, every method x model.

``run`` is ``engine.attribution.attribution_grid`` on the request's image; the stored result keeps
each cell's attribution (C, H, W) and heatmap (H, W) as arrays and its prediction, target,
parameters and any refusal in the metadata. ``decode`` rebuilds the ``GridCell`` list the
Saliency page and ``python -m engine saliency`` render.
"""
from __future__ import annotations

import numpy as np

from pathlib import Path

from engine.analysis.base import AnalysisCancelled, Payload, finite
from engine.errors import InvalidParameterError


def model_names(refs) -> list[str]:
    """Unique display names of the models: file stems, ``stem-2``, ``stem-3`` ... for repeats
    (they name the CLI's PNG files)."""
    names: list[str] = []
    for ref in refs:
        stem, k = Path(ref.path).stem, 2
        name = stem
        while name in names:
            name, k = f"{stem}-{k}", k + 1
        names.append(name)
    return names


def run(request, ctx) -> Payload:
    """Attribute the request's image with every method for every model."""
    from engine import data as edata
    from engine.analysis.cka import check_models
    from engine.attribution import attribution_grid
    from engine.attribution.methods import get_method

    for method in request.methods:
        get_method(method)
    loaded = [ctx.load(ref) for ref in request.models]
    names = model_names(request.models)
    dataset = edata.load_dataset(request.dataset, split="test")
    notes = check_models(loaded, dataset, request.dataset, classes=True)
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
