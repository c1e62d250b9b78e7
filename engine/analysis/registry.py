"""The analysis registry: kind -> (request type, run function, decoder), a plain dict.

Each entry names the module of its run/decode/report functions, imported on first use, so the
registry (and with it request parsing, result keys and the result store) stays torch-free.

Adding a capability (e.g. the saliency grid, robust accuracy or AutoAttack) is one entry here:
a frozen request dataclass (``engine.analysis.requests``) and a module with ``run(request, ctx) ->
Payload``, ``decode(result, **options)`` (the capability's own typed object) and ``report(result)``
(optionally ``rows(result)`` and ``check(request)``). The CLI (``--background``, ``--no-cache``),
the job worker, the result store and the Results page then handle it as they handle the others.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from engine.analysis.requests import (
    AdvPropRequest,
    CKARequest,
    CKARunRequest,
    CraftRequest,
    EpsSweepRequest,
    TransferRequest,
    EvaluateRequest,
    FeatVisRequest,
    OODRequest,
    ReportRequest,
    SaliencyCurvesRequest,
    SaliencyGridRequest,
    TopKRequest,
    TradeoffRequest,
    UnitsRequest,
)
from engine.errors import InvalidParameterError


@dataclass(frozen=True)
class Analysis:
    """One registered capability.

    Attributes:
        request: the request dataclass (``kind`` is its ``kind``).
        module: the module holding ``run(request, ctx: RunContext) -> Payload``,
            ``decode(result, **options)`` (the capability's typed object) and ``report(result) ->
            dict`` (the CLI's JSON, torch-free so a stored result prints fast); optionally
            ``rows(result) -> list[dict]`` (CSV) and ``check(request)`` (torch-side checks of the
            request's names before a job is queued, e.g. the attack's parameters). Imported on
            first use.
        title: a human name (Results page).
        page: the dashboard page that renders it (its ``st.navigation`` URL path, for permalinks).
    """

    request: type
    module: str
    title: str
    page: str

    def _get(self, name: str):
        return getattr(importlib.import_module(self.module), name)

    @property
    def run(self) -> Callable:
        return self._get("run")

    @property
    def decode(self) -> Callable:
        return self._get("decode")

    @property
    def report(self) -> Callable:
        return self._get("report")

    @property
    def rows(self) -> Callable | None:
        module = importlib.import_module(self.module)
        return getattr(module, "rows", None)

    @property
    def check(self) -> Callable | None:
        return getattr(importlib.import_module(self.module), "check", None)

    def __iter__(self):
        """``request_type, run = ANALYSES[kind]`` works (the two parts every caller needs)."""
        return iter((self.request, self.run))


ANALYSES: dict[str, Analysis] = {
    "cka": Analysis(CKARequest, "engine.analysis.cka", "CKA maps", "representations"),
    "ood": Analysis(OODRequest, "engine.analysis.ood", "OOD accuracy and shape bias", "generalisation"),
    "featvis_topk": Analysis(TopKRequest, "engine.analysis.topk", "Feature top-k images", "features"),
    "featvis": Analysis(FeatVisRequest, "engine.analysis.featvis", "Feature visualisations (lucent)", "features"),
    "saliency_grid": Analysis(SaliencyGridRequest, "engine.analysis.saliency", "Saliency maps", "saliency"),
    "saliency_curves": Analysis(SaliencyCurvesRequest, "engine.analysis.curves", "Keep/remove curves", "saliency"),
    "tradeoff": Analysis(TradeoffRequest, "engine.analysis.tradeoff", "ε vs interpretability", "saliency"),
    "robust_accuracy": Analysis(EvaluateRequest, "engine.analysis.evaluate", "Robust accuracy", "models"),
    "robustness_report": Analysis(ReportRequest, "engine.analysis.report", "Robustness report", "models"),
    "craft": Analysis(CraftRequest, "engine.analysis.craft", "Adversarial examples (craft and compare)", "attack_lab"),
    "eps_sweep": Analysis(EpsSweepRequest, "engine.analysis.sweep", "ε-sweep", "attack_lab"),
    "transfer": Analysis(TransferRequest, "engine.analysis.transfer", "Transfer matrix", "attack_lab"),
    "units": Analysis(UnitsRequest, "engine.analysis.units", "Unit statistics", "generalisation"),
    "advprop": Analysis(AdvPropRequest, "engine.analysis.advprop", "AdvProp branches vs standard and robust", "models"),
    "cka_epochs": Analysis(CKARunRequest, "engine.analysis.cka_epochs", "CKA across epochs", "representations"),
}


def get_analysis(kind: str) -> Analysis:
    """The registered analysis ``kind`` (InvalidParameterError naming the known kinds)."""
    try:
        return ANALYSES[kind]
    except (KeyError, TypeError):
        raise InvalidParameterError(f"unknown analysis {kind!r}; known: {', '.join(ANALYSES)}") from None


def request_from_dict(kind: str, data) -> object:
    """The validated request of analysis ``kind`` from a JSON-style dict."""
    return get_analysis(kind).request.from_dict(data)
