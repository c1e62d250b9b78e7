"""The robustness report as an analysis: :class:`~engine.analysis.requests.ReportRequest` -> stored report.

``run`` is ``engine.attacks.report.robustness_report`` (clean, PGD, AutoAttack attack by attack,
the gradient-masking checks, an ε-sweep) on the first ``n`` test images, with torch's RNG seeded
with the request's seed (PGD's random start), one progress bar over its stages and a stop that
stores nothing. The stored result is the report's JSON; ``decode`` rebuilds the
:class:`~engine.attacks.report.RobustnessReport` the Models page and ``python -m engine report``
render and save, and ``report`` gives its JSON without importing torch.

The model card's recorded figures (``card_metrics``) and a RobustBench import's leaderboard figures
are copied into the report when it is measured: a later ``evaluate --record`` changes the card,
not a stored report (the key names the weights, not the card).
"""
from __future__ import annotations

from engine.analysis.base import AnalysisCancelled, Payload, finite
from engine.analysis.evaluate import seeded
from engine.errors import InvalidParameterError


def run(request, ctx) -> Payload:
    """Measure the robustness report of ``request`` (see the module docstring)."""
    from engine import data as edata
    from engine.analysis.cka import check_models
    from engine.attacks.report import robustness_report

    loaded = ctx.load(request.model)
    sources = [ctx.load(ref) for ref in request.source]
    dataset = edata.load_dataset(request.dataset, split="test")
    notes = check_models([loaded, *sources], dataset, request.dataset, classes=True)
    if request.n > len(dataset):
        raise InvalidParameterError(f"n must be an integer in [1, {len(dataset)}] (the {request.dataset} test "
                                    f"split's size), got {request.n}")
    images, labels = edata.take(dataset, request.n)
    ctx.check_stop()
    with seeded(request.seed, ctx.device):
        measured = robustness_report(
            loaded.model, images, labels, request.eps, request.norm, name=loaded.name, checkpoint=str(loaded.path),
            dataset=request.dataset, card=loaded.card, pgd_steps=request.pgd_steps, version=request.version,
            seed=request.seed, source_model=sources[0].model if sources else None, masking=request.masking,
            sweep_eps=None if request.sweep is None else list(request.sweep), square_queries=request.square_queries,
            batch_size=request.batch_size, device=ctx.device, progress=ctx.report, should_stop=ctx.stopped,
        )
    if measured.stopped:
        raise AnalysisCancelled("robustness report stopped before it finished; nothing was stored")
    return Payload({}, finite({"report": measured.as_dict(), "notes": notes, "device": ctx.device}))


def decode(result, **_options):
    """The :class:`~engine.attacks.report.RobustnessReport` of a stored result (NaN stored as None)."""
    from engine.attacks.report import RobustnessReport

    return RobustnessReport(**result.meta["report"])


def report(result) -> dict:
    """The JSON of ``python -m engine report --json`` (``RobustnessReport.as_dict``; torch-free)."""
    return dict(result.meta["report"])


def rows(result) -> list[dict]:
    """The report's headline table (measure, accuracy, threat, source, n) for CSV."""
    return decode(result).summary_rows()
