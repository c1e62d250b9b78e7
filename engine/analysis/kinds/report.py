"""The robustness report as an analysis: :class:`~engine.analysis.requests.ReportRequest` -> stored report.

``run`` is ``engine.attacks.report.robustness_report`` (clean, PGD, AutoAttack attack by attack,
the gradient-masking checks, an ε-sweep — or, with ``preset="quick"``, APGD-CE + APGD-T, the
checks that need no Square and a 4-point sweep) on the first ``n`` test images, with torch's RNG seeded
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
from engine.analysis.schema import Schema
from engine.catalogue import norm_symbol
from engine.errors import InvalidParameterError

#: the report's presets (``engine.attacks.report.PRESETS``, repeated here: this module is torch-free)
PRESETS = ("full", "quick")


@register(title="Robustness report", page="models")
@dataclass(frozen=True)
class ReportRequest(Request):
    """A checkpoint's robustness report (``engine.attacks.report.robustness_report``,
    ``python -m engine report``): clean, PGD, AutoAttack attack by attack, the gradient-masking
    checks and an ε-sweep on the first ``n`` test images.

    ``preset``: ``"full"`` (the default, so requests stored before presets existed keep their
    meaning and their key) runs standard AutoAttack and every masking check; ``"quick"`` (the
    Models page's default, ``report --quick``) runs APGD-CE + APGD-T with AutoAttack's settings
    (an upper bound on robust accuracy, not AutoAttack), the masking checks without Square and
    extra effort, and a 4-point sweep. A quick request takes no AutoAttack ``version`` or
    ``square_queries`` other than the defaults (they do not apply to it), so one meaning has one key;
    ``to_dict`` leaves ``preset`` out when it is "full" (the keys of full reports are unchanged).

    Attributes:
        model: the model; dataset: its test split.
        eps, norm: the threat model (resolved from the card by the caller, so it is in the key).
        n: images (>= 1); batch_size: images per pass (the attacks' draws are per batch).
        version: AutoAttack's version; seed: seeds every attack (and torch's RNG, for PGD).
        pgd_steps: PGD's steps; square_queries: AutoAttack's Square budget.
        sweep: the ε-sweep's points (None: ``engine.attacks.report.SWEEP_FACTORS`` × ε).
        masking: run the gradient-masking checks; source: () or one standard model to transfer
            from (the white-box ≥ transfer check).
        preset: "full" or "quick" (``engine.attacks.report.PRESETS``).
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
    preset: str = "full"

    def to_dict(self) -> dict:
        body = super().to_dict()
        if body.get("preset") == "full":  # the reports stored before presets were full ones: same key
            del body["preset"]
        return body

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
        check_choice("preset", self.preset, PRESETS)
        if self.preset == "quick" and (self.version != "standard" or self.square_queries != 5000):
            raise InvalidParameterError("the quick report runs APGD-CE + APGD-T only: AutoAttack's version and "
                                        "square_queries apply to the full report (preset 'full')")

    def describe(self) -> str:
        threat = f"{norm_symbol(self.norm)} ε={self.eps:.4g}"
        what = "quick (APGD-CE + APGD-T)" if self.preset == "quick" else "full (AutoAttack)"
        return f"{self.kind}: {self.model.name} · {self.dataset} · {self.n} images · {threat} · {what}"


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
            preset=request.preset,
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
    """Cost model per image, by preset: clean, PGD, the attack sequence (full: AutoAttack;
    quick: APGD-CE + APGD-T), the masking checks (an APGD-CE run per rung of the ε ladder, one
    step, the transfer run with a source; full: also Square's 1,000 queries and 4× the steps × 3
    restarts) and the ε-sweep's APGD-CE runs at the ε the ladder did not measure."""
    import math

    from engine.analysis.cost import GRADIENT_STEP, attack_passes
    from engine.attacks.masking import eps_ladder
    from engine.attacks.report import QUICK_ATTACKS, QUICK_SWEEP_FACTORS, SWEEP_FACTORS, sweep_points
    from engine.data import get_spec

    quick = request.preset == "quick"
    apgd = attack_passes("apgd-ce", {})
    if quick:
        attacks = attack_passes("autoattack", {"version": "custom", "attacks": list(QUICK_ATTACKS)})
    else:
        attacks = attack_passes("autoattack", {"version": request.version, "queries": request.square_queries})
    shape = tuple(_loaded[0].card.input_shape) if _loaded else get_spec(request.dataset).input_shape
    ladder = eps_ladder(request.eps, request.norm, shape) if request.masking and request.eps > 0 else []
    masking = 0.0
    if request.masking:
        masking = apgd * len(ladder) + GRADIENT_STEP + (apgd if request.source else 0.0)
        if not quick:
            masking += 1000 + apgd * 4 * 3  # Square (1,000 queries); more_effort: 4× steps × 3 restarts
    if request.sweep is not None:
        points = list(request.sweep)
    else:
        points = sweep_points(request.eps, request.norm, shape, QUICK_SWEEP_FACTORS if quick else SWEEP_FACTORS)
    measured = sum(1 for e in points if e != 0 and not any(math.isclose(e, r, rel_tol=1e-9) for r in ladder))
    return 1.0 + GRADIENT_STEP * request.pgd_steps + attacks + masking + apgd * measured, request.n


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(meta={
    "report": {"model": str, "checkpoint": (str, None), "dataset": (str, None), "n": int, "eps": float, "norm": str,
               "seed": int, "clean_acc": float, "pgd": (dict, None), "autoattack": (dict, None),
               "masking": (dict, None), "sweep": [dict]},
    "notes": [str], "device": str,
})
