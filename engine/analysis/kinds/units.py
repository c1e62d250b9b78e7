"""Unit statistics as an analysis: per-unit roughness, high-frequency share and label complexity
of chosen layers, for one to eight models on the same test images (Agarwal & Chen 2020).

``run`` is ``engine.generalisation.compare_units`` over the first ``n`` test images, streamed
batch by batch (memory independent of ``n``). The stored result keeps every statistic of every
unit as arrays named ``"<model #>/<layer>/<statistic>"``; the metadata keeps the model names, each
model's layers and the paper's findings for a pair. ``decode`` rebuilds the
``{model: UnitReport}`` the Generalisation page and ``python -m engine units`` render.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite
from engine.analysis.fields import MAX_BATCH, MAX_IMAGES, check_dataset, check_int, check_model_list, check_names
from engine.analysis.registry import register
from engine.analysis.schema import Array, Schema


@register(title="Unit statistics", page="generalisation", permalink=False)
@dataclass(frozen=True)
class UnitsRequest(Request):
    """Unit statistics (Agarwal & Chen 2020): per-unit roughness, high-frequency share and label
    complexity of layers, for several models on the same first ``n`` test images
    (``engine.generalisation.compare_units``, streamed).

    Attributes:
        models: one to eight models; dataset: the test split's first ``n`` images.
        layers: dotted layer names every model has (None: each model's default layers).
        top_k: images per unit for the label-complexity statistics (1 <= top_k <= n).
        batch_size: images per forward pass (memory only; the statistics do not depend on it
            beyond float32 rounding).
    """

    kind = "units"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    n: int = 500
    layers: tuple[str, ...] | None = None
    top_k: int = 10
    batch_size: int = 128

    def _check(self) -> None:
        check_model_list(self.models)
        check_dataset(self.dataset)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_names("layers", self.layers)
        check_int("top_k", self.top_k, 1, self.n)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        return f"{super().describe()} · {self.dataset} · {self.n} images · top-{self.top_k}"

#: the arrays of one layer's ``UnitStats`` (its ``layer`` field is the key itself)
FIELDS = ("roughness", "high_freq_share", "label_entropy", "distinct_labels", "mean_activation", "top_indices",
          "active")


def _key(i: int, layer: str, field: str) -> str:
    return f"{i}/{layer}/{field}"


def run(request, ctx) -> Payload:
    """Unit statistics of the request's models and layers (see the module docstring)."""
    from engine.analysis.kinds.ood import test_sample
    from engine.generalisation import compare_units
    from engine.models import default_layers

    loaded, names, sample, notes = test_sample(request, ctx)
    models = {name: m.model for name, m in zip(names, loaded)}
    layers = {name: list(request.layers) if request.layers else default_layers(m) for name, m in models.items()}
    reports = compare_units(models, sample, None, layers, top_k=request.top_k,
                            batch_size=request.batch_size, progress=ctx.report, should_stop=ctx.stopped)
    if any(r.stopped for r in reports.values()):
        raise AnalysisCancelled("unit statistics stopped before they finished; nothing was stored")
    arrays = {_key(i, layer, field): np.asarray(getattr(stats, field))
              for i, report in enumerate(reports.values()) for layer, stats in report.layers.items()
              for field in FIELDS}
    meta = {"names": names, "layers": layers, "notes": notes, "device": ctx.device,
            "findings": _pair_findings(loaded, names, reports)}
    return Payload(arrays, finite(meta))


def _pair_findings(loaded, names, reports) -> dict:
    """The paper's unit findings for a robust/standard pair (else ``{}``)."""
    if len(loaded) != 2:
        return {}
    from engine.generalisation import findings_line, paper_findings, robust_and_standard, units_frame

    robust, standard, note = robust_and_standard(dict(zip(names, (m.card for m in loaded))))
    found = paper_findings(robust, standard, units=units_frame(reports))
    return {"robust": robust, "standard": standard, "note": note, "summary": findings_line(found),
            "findings": [f._asdict() for f in found]}


def decode(result, names: dict | None = None, **_options) -> dict:
    """``{model name: engine.generalisation.UnitReport}``; ``names`` renames models (stored name ->
    shown name, e.g. the page's "A: ..." labels)."""
    from engine.generalisation.units import UnitReport, UnitStats

    rename = names or {}
    out = {}
    for i, name in enumerate(result.meta["names"]):
        layers = {layer: UnitStats(layer, *(np.asarray(result.arrays[_key(i, layer, f)]) for f in FIELDS))
                  for layer in result.meta["layers"][name]}
        out[rename.get(name, name)] = UnitReport(layers, result.request.n, result.request.top_k)
    return out


def _medians(result) -> list[dict]:
    """Median of each statistic over the active units, per model and layer (torch-free)."""
    rows = []
    for i, name in enumerate(result.meta["names"]):
        for layer in result.meta["layers"][name]:
            active = np.asarray(result.arrays[_key(i, layer, "active")], dtype=bool)
            row = {"model": name, "layer": layer}
            for field in ("roughness", "high_freq_share", "label_entropy", "distinct_labels"):
                values = np.asarray(result.arrays[_key(i, layer, field)], dtype=float)[active]
                row[field] = float(np.median(values)) if len(values) else None
            rows.append(row)
    return rows


def report(result) -> dict:
    """The CLI's JSON: every unit's statistics per model and layer, the medians and findings."""
    request, meta = result.request, result.meta
    layers = {name: {layer: {f: np.asarray(result.arrays[_key(i, layer, f)]).tolist() for f in FIELDS}
                     for layer in meta["layers"][name]} for i, name in enumerate(meta["names"])}
    return finite({"dataset": request.dataset, "n": request.n, "top_k": request.top_k,
                   "seconds": round(result.seconds, 3), "layers": layers, "medians": _medians(result),
                   **(meta.get("findings") or {}), "warnings": list(meta.get("notes", []))})


def rows(result) -> list[dict]:
    """One row per unit (CSV): model, layer, unit and its statistics."""
    out = []
    for i, name in enumerate(result.meta["names"]):
        for layer in result.meta["layers"][name]:
            columns = {f: np.asarray(result.arrays[_key(i, layer, f)]) for f in FIELDS if f != "top_indices"}
            for u in range(len(columns["roughness"])):
                out.append({"model": name, "layer": layer, "unit": u,
                            **{f: columns[f][u].item() for f in columns}})
    return out


#: forward-equivalent passes per image of the unit statistics besides the forward pass (each
#: unit's Fourier roughness and its top-k bookkeeping; measured with ``bench/estimates.py``)
STATISTICS_PASSES = 1.2


def passes(request, _per, _loaded) -> tuple[float, int]:
    """Cost model: one forward pass per model and image, plus the statistics' own work."""
    return 1.0 + STATISTICS_PASSES, request.n


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"names": [str], "layers": dict, "notes": [str], "device": str, "findings": (dict, None)},
    arrays={"*/roughness": Array("f", 1), "*/high_freq_share": Array("f", 1), "*/label_entropy": Array("f", 1),
            "*/distinct_labels": Array("iu", 1), "*/mean_activation": Array("f", 1), "*/top_indices": Array("iu", 2),
            "*/active": Array("b", 1)},
)
