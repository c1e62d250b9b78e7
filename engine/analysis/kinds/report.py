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

from dataclasses import dataclass

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite
from engine.analysis.fields import (
    AUTOATTACK_VERSIONS,
    MAX_BATCH,
    MAX_IMAGES,
    MAX_SEED,
    MAX_SWEEP,
    NORMS,
    check_bool,
    check_choice,
    check_dataset,
    check_float,
    check_int,
)
from engine.analysis.registry import register
from engine.catalogue import norm_symbol
from engine.errors import InvalidParameterError


@register(title="Robustness report", page="models")
@dataclass(frozen=True)
class ReportRequest(Request):
    """A checkpoint's robustness report (``engine.attacks.report.robustness_report``,
    ``python -m engine report``): clean, PGD, AutoAttack attack by attack, the gradient-masking
    checks and an ε-sweep on the first ``n`` test images.

    Attributes:
        model: the model; dataset: its test split.
        eps, norm: the threat model (resolved from the card by the caller, so it is in the key).
        n: images (>= 1); batch_size: images per pass (the attacks' draws are per batch).
        version: AutoAttack's version; seed: seeds every attack (and torch's RNG, for PGD).
        pgd_steps: PGD's steps; square_queries: AutoAttack's Square budget.
        sweep: the ε-sweep's points (None: ``engine.attacks.report.SWEEP_FACTORS`` × ε).
        masking: run the gradient-masking checks; source: () or one standard model to transfer
            from (the white-box ≥ transfer check).
    """

    kind = "robustness_report"
    MODEL_FIELDS = ("model", "source")

    model: ModelRef
    dataset: str
    eps: float
    norm: str = "linf"
    n: int = 500
    batch_size: int = 256
    version: str = "standard"
    seed: int = 0
    pgd_steps: int = 40
    square_queries: int = 5000
    sweep: tuple[float, ...] | None = None
    masking: bool = True
    source: tuple[ModelRef, ...] = ()

    def _check(self) -> None:
        check_dataset(self.dataset)
        check_float("eps", self.eps, 0.0, 1e4, optional=False)
        check_choice("norm", self.norm, NORMS)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)
        check_choice("version", self.version, AUTOATTACK_VERSIONS[:-1])
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("pgd_steps", self.pgd_steps, 1, 10_000)
        check_int("square_queries", self.square_queries, 1, 10_000_000)
        if self.sweep is not None:
            if not isinstance(self.sweep, tuple) or not 1 <= len(self.sweep) <= MAX_SWEEP:
                raise InvalidParameterError(f"sweep takes 1 to {MAX_SWEEP} ε values, got {self.sweep!r}")
            for value in self.sweep:
                check_float("sweep ε", value, 0.0, 1e4, optional=False)
        check_bool("masking", self.masking, optional=False)
        if not isinstance(self.source, tuple) or len(self.source) > 1:
            raise InvalidParameterError(f"source is () or one model to transfer from, got {self.source!r}")

    def describe(self) -> str:
        threat = f"{norm_symbol(self.norm)} ε={self.eps:.4g}"
        return f"{self.kind}: {self.model.name} · {self.dataset} · {self.n} images · {threat}"


def default_threat(card, dataset: str, norm: str | None = None, eps: float | None = None) -> tuple[str, float]:
    """``(norm, ε)`` of a robustness report, decided once for the CLI and the Models page: as given,
    else the card's training threat (its ε only under its own norm), else ℓ∞ at the dataset's
    usual ε (``engine.attacks.default_eps``; torch is imported only then)."""
    card_norm, card_eps = card.training.threat()
    card_norm = card_norm if card_norm in NORMS else None
    norm = norm or card_norm or "linf"
    if eps is None and card_eps and norm == card_norm:
        eps = card_eps
    elif eps is None:
        from engine.attacks import default_eps

        eps = default_eps(dataset, norm)
    return norm, float(eps)


def run(request, ctx) -> Payload:
    """Measure the robustness report of ``request`` (see the module docstring)."""
    from engine import data as edata
    from engine.attacks.report import robustness_report

    dataset = ctx.images(request.dataset, n=request.n)
    (loaded, *sources), notes = ctx.models([request.model, *request.source], dataset)
    images, labels = edata.take(dataset, request.n)
    ctx.check_stop()
    with ctx.seeded(request.seed):
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


def passes(request, _per, _loaded) -> tuple[float, int]:
    """Cost model per image: clean, PGD, AutoAttack, the masking checks (about two more APGD-CE runs
    and a short Square) and the ε-sweep (APGD-CE per ε)."""
    from engine.analysis.cost import GRADIENT_STEP, attack_passes

    apgd = attack_passes("apgd-ce", {})
    autoattack = attack_passes("autoattack", {"version": request.version, "queries": request.square_queries})
    masking = 2 * apgd + 1000 if request.masking else 0.0
    sweep = apgd * (len(request.sweep) if request.sweep is not None else 8)
    return 1.0 + GRADIENT_STEP * request.pgd_steps + autoattack + masking + sweep, request.n
