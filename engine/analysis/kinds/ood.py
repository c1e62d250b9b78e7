"""The OOD suite as an analysis: accuracy under distortions (+ ``shapes`` sets) and shape bias.

``run`` is what ``python -m engine ood`` and the Generalisation page computed before, once:
``engine.generalisation.evaluate_ood`` over the first ``n`` test images, every model on the same
distorted batches, then the Geirhos shape bias on cue-conflict images where the dataset has them.
The table is stored as records (model names are the checkpoints' file stems, de-duplicated, in
request order; ``meta["names"]``); the paper's findings for a pair are stored with it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite, unique_names
from engine.analysis.fields import (
    MAX_BATCH,
    MAX_IMAGES,
    SEVERITY_LEVELS,
    check_dataset,
    check_int,
    check_model_list,
    check_names,
)
from engine.analysis.registry import register
from engine.analysis.schema import Schema
from engine.errors import InvalidParameterError


@register(title="OOD accuracy and shape bias", page="generalisation")
@dataclass(frozen=True)
class OODRequest(Request):
    """Accuracy under distortions x severities (+ ``shapes`` image sets) and shape bias.

    Attributes:
        models: one to eight models, evaluated on the same distorted images.
        dataset: test split, first ``n`` images; batch_size also sets the distortion seeds
            (batch b uses ``seed + b``), so it is part of the request.
        distortions: names (None: all of ``engine.data.distortions.DISTORTIONS``).
        severities: subset of 1..5.
        shape_bias: also score shape bias on cue-conflict images (``shapes`` only).
    """

    kind = "ood"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    n: int = 500
    batch_size: int = 128
    seed: int = 0
    distortions: tuple[str, ...] | None = None
    severities: tuple[int, ...] = SEVERITY_LEVELS
    shape_bias: bool = True

    def _check(self) -> None:
        check_model_list(self.models)
        check_dataset(self.dataset)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)
        check_int("seed", self.seed, 0, 2**31 - 1)
        check_names("distortions", self.distortions)
        if not isinstance(self.severities, tuple) or not self.severities or \
                any(s not in SEVERITY_LEVELS or isinstance(s, bool) for s in self.severities):
            raise InvalidParameterError(f"every severity must be one of 1..5 (at least one), got {self.severities!r}")
        if not isinstance(self.shape_bias, bool):
            raise InvalidParameterError(f"shape_bias must be true or false, got {self.shape_bias!r}")

    def describe(self) -> str:
        return f"{super().describe()} · {self.dataset} · {self.n} images"


class OODReport(NamedTuple):
    """The decoded result: the tidy accuracy table, shape bias per model, and the note shown when
    the dataset has no cue-conflict images."""

    table: object            # pandas.DataFrame with engine.generalisation.ood.COLUMNS
    shape_bias: dict         # model name -> ShapeBiasResult
    shape_bias_note: str
    names: list[str]
    seconds: float


def test_sample(request, ctx) -> tuple[list, list[str], object, list[str]]:
    """The request's models loaded and checked (``ctx.models``), their display names, its first
    ``n`` test images as an ``engine.data.Sample`` (read batch by batch: memory independent of
    ``n``) and the notes about models trained on other data (OOD and unit statistics share it)."""
    from engine import data as edata

    split = ctx.images(request.dataset, n=request.n)
    loaded, notes = ctx.models(request.models, split)
    return loaded, unique_names(request.models), edata.Sample(split, request.n), notes


def run(request, ctx) -> Payload:
    """Evaluate the request's models under its distortions (see the module docstring)."""
    from engine.generalisation import (
        CUE_CONFLICT_UNAVAILABLE,
        cue_conflict_set,
        evaluate_ood,
        robust_and_standard,
        shape_bias,
        shapes_image_sets,
    )

    loaded, names, sample, notes = test_sample(request, ctx)
    size = int(sample[0][0].shape[-1])
    sets = shapes_image_sets(request.n, seed=request.seed, image_size=size) if request.dataset == "shapes" else None
    models = {name: m.model for name, m in zip(names, loaded)}
    result = evaluate_ood(models, sample, None, None if request.distortions is None else list(request.distortions),
                          list(request.severities), image_sets=sets, batch_size=request.batch_size, seed=request.seed,
                          progress=ctx.report, should_stop=ctx.stopped)
    if result.stopped:
        raise AnalysisCancelled("OOD evaluation stopped before it finished; nothing was stored")
    conflict = cue_conflict_set(request.dataset, request.n, seed=request.seed, image_size=size) \
        if request.shape_bias else None
    bias = {} if conflict is None else {name: shape_bias(m, *conflict, batch_size=request.batch_size)
                                        for name, m in models.items()}
    note = "" if conflict is not None else CUE_CONFLICT_UNAVAILABLE.format(dataset=request.dataset)
    findings = {}
    if len(loaded) == 2:
        from engine.generalisation import findings_line, paper_findings

        cards = dict(zip(names, (m.card for m in loaded)))
        robust, standard, pair_note = robust_and_standard(cards)
        found = paper_findings(robust, standard, ood_table=result.table, shape_bias=bias)
        findings = {"robust": robust, "standard": standard, "note": pair_note, "summary": findings_line(found),
                    "findings": [f._asdict() for f in found]}
    meta = finite({
        "names": names, "rows": result.table.to_dict(orient="records"),
        "shape_bias": {name: r._asdict() for name, r in bias.items()}, "shape_bias_note": note,
        "findings": findings, "notes": notes, "device": ctx.device, "compute_seconds": result.seconds,
    })
    return Payload({}, meta)


def decode(result, names: dict | None = None, **_options) -> OODReport:
    """The table as a DataFrame and shape bias as ``ShapeBiasResult``s; ``names`` renames models
    (stored name -> shown name, e.g. the page's "A: ..." labels)."""
    import math

    import pandas as pd

    from engine.generalisation import ShapeBiasResult
    from engine.generalisation.ood import COLUMNS

    rename = names or {}
    table = pd.DataFrame(result.meta["rows"], columns=list(COLUMNS))
    table["model"] = table["model"].map(lambda m: rename.get(m, m))
    table["accuracy"] = table["accuracy"].astype(float)
    bias = {rename.get(k, k): ShapeBiasResult(**{f: (math.nan if v is None else v) for f, v in r.items()})
            for k, r in result.meta.get("shape_bias", {}).items()}
    return OODReport(table, bias, result.meta.get("shape_bias_note", ""),
                     [rename.get(n, n) for n in result.meta["names"]], float(result.seconds))


def report(result) -> dict:
    """The CLI's JSON of an OOD result (torch-free)."""
    request, meta = result.request, result.meta
    return {
        "dataset": request.dataset, "n": request.n, "seed": request.seed, "seconds": round(result.seconds, 3),
        "rows": meta["rows"], "shape_bias": meta.get("shape_bias") or None,
        "shape_bias_note": meta.get("shape_bias_note", ""), **(meta.get("findings") or {}),
        "warnings": list(meta.get("notes", [])),
    }


def rows(result) -> list[dict]:
    """The accuracy table's rows (CSV)."""
    return list(result.meta["rows"])


def passes(request, _per, _loaded) -> tuple[float, int]:
    """Cost model: one pass per model per cell (clean, distortion × severity, the shapes sets)."""
    from engine.data.distortions import DISTORTIONS

    cells = 1 + len(request.distortions or DISTORTIONS) * len(request.severities)
    cells += 4 if request.dataset == "shapes" else 0
    return float(cells), request.n


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(meta={"names": [str], "rows": [dict], "notes": [str], "device": str,
                      "shape_bias": (dict, None), "findings": (dict, None)})
