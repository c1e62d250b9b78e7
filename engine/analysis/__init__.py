"""Every long analysis as one typed request -> one engine call -> one stored, serialisable result.

    from engine.analysis import CKARequest, ModelRef, run_analysis
    request = CKARequest(a=ModelRef.of("checkpoints/std"), b=ModelRef.of("checkpoints/rob"), dataset="cifar10")
    result = run_analysis(request, progress=lambda done, total: ...)
    result.cached, result.key, result.value()   # value(): the CKAComparison the page plots

Public API:
- requests (frozen dataclasses, ``to_json``/``from_json``, validated): :class:`CKARequest`,
  :class:`OODRequest`, :class:`TopKRequest` (feature top-k), :class:`FeatVisRequest` (lucent feature
  visualisation), :class:`EvaluateRequest` (robust accuracy / AutoAttack),
  :class:`ReportRequest` (the robustness report), :class:`UnitsRequest` (unit statistics); models as :class:`ModelRef` (path, sha256, BN branch);
- :class:`AdvPropRequest` (AdvProp's BN branches vs standard and robust models) and :class:`CKARunRequest`
  (CKA across a training run's epoch snapshots);
- the Attack Lab's :class:`CraftRequest` (craft and compare), :class:`EpsSweepRequest` (ε-sweep) and
  :class:`TransferRequest` (transfer matrix), their parameters from :func:`attack_params`;
- the Saliency page's :class:`SaliencyCurvesRequest` (keep/remove curves, KAR/ROAR) and
  :class:`TradeoffRequest` (ε vs interpretability);
- :data:`ANALYSES` (kind -> request type, run, decode, report), :func:`get_analysis`;
- :func:`run_analysis` (stored result, else compute + store), :func:`submit_analysis` (a background
  job), :func:`load_result`, :class:`AnalysisResult`, :class:`AnalysisCancelled`;
- :class:`ResultStore` (``<runs>/results/<key>/``), :class:`CorruptResult`.

This package and its requests, keys and store import no torch; the run functions do, when called.
"""
from engine.analysis.base import (  # noqa: F401
    AnalysisCancelled,
    AnalysisResult,
    ModelRef,
    Payload,
    Progress,
    Request,
    ShouldStop,
)
from engine.analysis.registry import ANALYSES, Analysis, get_analysis, request_from_dict  # noqa: F401
from engine.analysis.requests import (  # noqa: F401
    AdvPropRequest,
    CKARequest,
    CKARunRequest,
    CraftRequest,
    EpsSweepRequest,
    TransferRequest,
    attack_params,
    EvaluateRequest,
    FeatVisRequest,
    OODRequest,
    ReportRequest,
    SaliencyCurvesRequest,
    TopKRequest,
    TradeoffRequest,
    UnitsRequest,
)
from engine.analysis.runner import (  # noqa: F401
    RunContext,
    cached_result,
    load_result,
    preflight,
    run_analysis,
    submit_analysis,
)
from engine.analysis.store import CorruptResult, ResultInfo, ResultStore  # noqa: F401
