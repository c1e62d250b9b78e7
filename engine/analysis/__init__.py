"""Every long analysis as one typed request -> one engine call -> one stored, serialisable result.

    from engine.analysis import get_analysis, run_analysis
    request = get_analysis("cka").request.make(a="checkpoints/std", b="checkpoints/rob", dataset="cifar10")
    result = run_analysis(request, progress=lambda done, total: ...)
    result.cached, result.key, result.value()   # value(): the CKAComparison the page plots

Public API:
- each kind's request lives in its own module, ``engine.analysis.kinds.<name>`` (``cka``, ``ood``,
  ``topk``, ``featvis``, ``saliency``, ``curves``, ``tradeoff``, ``evaluate``, ``report``,
  ``craft``, ``sweep``, ``transfer``, ``units``, ``advprop``, ``cka_epochs``), registered with
  :func:`~engine.analysis.registry.register`; models are named by :class:`ModelRef`;
- :data:`ANALYSES` (kind -> :class:`Analysis`), :func:`get_analysis`, :func:`request_from_dict`;
- :func:`run_analysis` (stored result, else compute + store), :func:`load_result`,
  :func:`cached_result`, :func:`preflight`, :class:`AnalysisResult`, :class:`AnalysisCancelled`,
  :class:`RunContext`; background jobs are ``engine.jobs.submit(request)``;
- :class:`ResultStore` (``<runs>/results/<key>/``), :class:`CorruptResult`.

docs/ENGINE_API.md shows how to add a kind. This package, its requests, keys and store import no
torch; the run functions do, when called.
"""
from engine.analysis.base import AnalysisCancelled, AnalysisResult, ModelRef, Payload, Request  # noqa: F401
from engine.analysis.registry import ANALYSES, Analysis, get_analysis, register, request_from_dict  # noqa: F401
from engine.analysis.runner import RunContext, cached_result, load_result, preflight, run_analysis  # noqa: F401
from engine.analysis.store import CorruptResult, ResultInfo, ResultStore  # noqa: F401
