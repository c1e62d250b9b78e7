"""A robustness report per checkpoint, RobustBench-style: clean accuracy, PGD, AutoAttack (the
accuracy after each of its attacks), the gradient-masking checks and an ε-sweep, with the
leaderboard's figures beside ours for imported RobustBench models.

Two presets (:data:`PRESETS`):

- ``"full"``: standard AutoAttack (APGD-CE → APGD-T → FAB-T → Square), every gradient-masking
  check (:func:`engine.attacks.masking.masking_checks`) and the 8-point ε-sweep.
- ``"quick"`` (a demo on a CPU in about a minute): :data:`QUICK_ATTACKS`, AutoAttack's first two
  attacks with its own settings (100 steps, 9 targets, the same seed, so the figure equals the full
  report's "after apgd-t" row), which is an **upper bound** on robust accuracy, not AutoAttack;
  the masking checks that need no Square and no extra effort (:func:`~engine.attacks.masking.masking_checks` with ``quick=True``: the
  ε ladder, unbounded, iterative ≥ single step and, with a standard model, transfer), the other two
  listed as skipped; and a 4-point ε-sweep (:data:`QUICK_SWEEP_FACTORS`) read off the ladder.

Either way the sweep reuses the masking ladder's APGD-CE figures at the ε both measure (the same
attack, seed and batches, so the same numbers) instead of running them twice.

One call, one typed result: :func:`robustness_report` -> :class:`RobustnessReport`, which the CLI
(``python -m engine report``), the Models page and a notebook all use. The result exports itself:
:meth:`RobustnessReport.as_dict` (JSON), :meth:`RobustnessReport.tables` (CSV-ready rows),
:meth:`RobustnessReport.figure` (plotly) and :meth:`RobustnessReport.save` (a folder of JSON, CSV
and, when kaleido is installed, PNG files).
"""
from __future__ import annotations

import csv
import dataclasses
import importlib.util
import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from engine.attacks.apgd import APGD
from engine.attacks.autoattack import AutoAttack, evaluate_autoattack
from engine.attacks.base import AttackCancelled, check_eps, check_norm, check_positive_int
from engine.attacks.evaluate import robust_accuracy
from engine.models.state import predict_labels
from engine.attacks.masking import eps_ladder, masking_checks
from engine.attacks.pgd import PGD
from engine.errors import InvalidParameterError
from engine.fileio import atomic_write_text
from engine.version import __version__
from engine.runtime import Progress, ShouldStop


#: the ε-sweep's default points, as multiples of the report's ε
SWEEP_FACTORS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
#: the quick report's ε-sweep, as multiples of ε (all on the masking ladder: no extra attack)
QUICK_SWEEP_FACTORS = (0.0, 0.25, 0.5, 1.0)
#: "full": standard AutoAttack and every masking check; "quick": APGD-CE + APGD-T and the cheap checks
PRESETS = ("full", "quick")
#: the quick report's attack sequence: AutoAttack's first two members, with AutoAttack's settings
QUICK_ATTACKS = ("apgd-ce", "apgd-t")
#: the headline of a quick report (it is not AutoAttack: FAB-T and Square did not run)
QUICK_LABEL = "quick: APGD-CE + APGD-T"
#: masking checks the quick report leaves out, and why
#: relative work of the full report's stages (for one progress bar)
_WEIGHTS = {"clean": 1, "pgd": 4, "autoattack": 40, "masking": 30, "sweep": 25}


@dataclass(frozen=True)
class RobustnessReport:
    """Everything measured for one model on ``n`` images at radius ``eps`` (``norm``).

    Attributes:
        model: name (card name or file stem); checkpoint: its path (or None); dataset.
        clean_acc: accuracy on the clean images.
        pgd: ``{"robust_acc", "config", "seconds"}`` for PGD-``steps``.
        autoattack: :meth:`engine.attacks.AutoAttackResult.as_dict` (robust_acc, per_attack, ...).
        masking: :meth:`engine.attacks.masking.MaskingReport.as_dict`, or None when skipped.
        sweep: ``[{"eps", "robust_acc"}]``: APGD-CE accuracy at each ε.
        leaderboard: the card's ``source.leaderboard`` (reported clean / AutoAttack accuracy of an
            imported RobustBench model), or None; card_metrics: the card's recorded figures.
        seconds, created, version, stopped: total time, when, RobustScope version, and whether it
            was stopped (the sections finished are complete; the others are missing).
        preset: ``"full"`` (``autoattack`` is standard AutoAttack) or ``"quick"`` (``autoattack``
            holds the :data:`QUICK_ATTACKS` sequence: an upper bound on robust accuracy).
    """

    model: str
    checkpoint: str | None
    dataset: str | None
    n: int
    eps: float
    norm: str
    seed: int
    clean_acc: float | None = None
    pgd: dict | None = None
    autoattack: dict | None = None
    masking: dict | None = None
    sweep: list = field(default_factory=list)
    leaderboard: dict | None = None
    card_metrics: dict | None = None
    seconds: float = 0.0
    created: str = ""
    version: str = __version__
    stopped: bool = False
    preset: str = "full"

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def quick(self) -> bool:
        return self.preset == "quick"

    @property
    def headline(self) -> str:
        """The measure name of the attack sequence's figure: ``AutoAttack (standard)`` or
        :data:`QUICK_LABEL` ``(upper bound)``."""
        if self.quick:
            return f"{QUICK_LABEL} (upper bound)"
        return f"AutoAttack ({(self.autoattack or {}).get('version', 'standard')})"

    @property
    def caveat(self) -> str:
        """One sentence saying what the attack figure is (shown beside it by the page and the CLI)."""
        if self.quick:
            skipped = ", ".join(c["name"] for c in (self.masking or {}).get("checks", []) if c["status"] == "skipped")
            return ("Quick report (quick: APGD-CE + APGD-T): AutoAttack's first two attacks with its settings. "
                    "Its figure is an upper bound on robust accuracy, not AutoAttack: FAB-T and Square did not "
                    "run" + (f"; masking checks skipped: {skipped}" if skipped else "")
                    + ". The full report is the standard AutoAttack.")
        version = (self.autoattack or {}).get("version", "standard")
        what = ("the standard AutoAttack (APGD-CE → APGD-T → FAB-T → Square)" if version == "standard"
                else f"AutoAttack, version {version}")
        return f"Full report: {what} and every masking check."

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=str)

    # ------------------------------------------------------------------ tables
    def summary_rows(self) -> list[dict]:
        """The headline table: one row per figure (ours and, for zoo models, the leaderboard's)."""
        rows = []
        threat = f"{'ℓ∞' if self.norm == 'linf' else 'ℓ₂'} ε={self.eps:.4g}"
        if self.clean_acc is not None:
            rows.append({"measure": "clean", "accuracy": self.clean_acc, "threat": "", "source": "measured", "n": self.n})
        if self.pgd:
            steps = self.pgd["config"].get("steps")
            rows.append({"measure": f"PGD-{steps}", "accuracy": self.pgd["robust_acc"], "threat": threat,
                         "source": "measured", "n": self.n})
        if self.autoattack:
            what = "quick" if self.quick else "AutoAttack"
            for stage in self.autoattack["per_attack"]:
                rows.append({"measure": f"{what}, after {stage['attack']}", "accuracy": stage["robust_acc_after"],
                             "threat": threat, "source": "measured", "n": self.n})
            rows.append({"measure": self.headline, "accuracy": self.autoattack["robust_acc"], "threat": threat,
                         "source": "measured", "n": self.n})
        board = self.leaderboard or {}
        where = board.get("from", "leaderboard")
        board_threat = f"{board.get('norm', '')} ε={board.get('eps_text', board.get('eps', ''))}"
        for key, label in (("clean_acc", "clean (leaderboard)"), ("autoattack_acc", "AutoAttack (leaderboard)")):
            if isinstance(board.get(key), (int, float)):
                rows.append({"measure": label, "accuracy": float(board[key]),
                             "threat": board_threat if key == "autoattack_acc" else "", "source": where,
                             "n": board.get("n", 10_000)})
        return rows

    def tables(self) -> dict[str, list[dict]]:
        """Name -> rows: ``summary``, ``autoattack`` (per attack), ``checks``, ``sweep``."""
        checks = []
        for c in (self.masking or {}).get("checks", []):
            checks.append({"check": c["name"], "status": c["status"], "title": c["title"], "detail": c["detail"]})
        aa = [{k: v for k, v in s.items() if k != "config"} for s in (self.autoattack or {}).get("per_attack", [])]
        return {"summary": self.summary_rows(), "autoattack": aa, "checks": checks, "sweep": list(self.sweep)}

    def csv(self, table: str) -> str:
        """One of :meth:`tables` as CSV text."""
        rows = self.tables()[table]
        buf = io.StringIO()
        if rows:
            keys = list(dict.fromkeys(k for r in rows for k in r))
            writer = csv.DictWriter(buf, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        return buf.getvalue()

    # ------------------------------------------------------------------ figure and files
    def figure(self):
        """A plotly figure: robust accuracy vs ε (APGD-CE sweep), the PGD and AutoAttack points at
        ε and, for zoo models, the leaderboard's AutoAttack figure."""
        import plotly.graph_objects as go

        fig = go.Figure()
        if self.sweep:
            fig.add_trace(go.Scatter(x=[r["eps"] for r in self.sweep], y=[r["robust_acc"] for r in self.sweep],
                                     mode="lines+markers", name="APGD-CE"))
        if self.pgd:
            fig.add_trace(go.Scatter(x=[self.eps], y=[self.pgd["robust_acc"]], mode="markers", name="PGD",
                                     marker={"symbol": "circle-open", "size": 11}))
        if self.autoattack:
            fig.add_trace(go.Scatter(x=[self.eps], y=[self.autoattack["robust_acc"]], mode="markers",
                                     name=self.headline if self.quick else "AutoAttack",
                                     marker={"symbol": "x", "size": 11}))
        board = self.leaderboard or {}
        if isinstance(board.get("autoattack_acc"), (int, float)) and isinstance(board.get("eps"), (int, float)):
            fig.add_trace(go.Scatter(x=[board["eps"]], y=[board["autoattack_acc"]], mode="markers",
                                     name="AutoAttack (leaderboard)", marker={"symbol": "star", "size": 13}))
        fig.update_layout(xaxis_title=f"ε ({'ℓ∞' if self.norm == 'linf' else 'ℓ₂'})", yaxis_title="robust accuracy",
                          yaxis_range=[0, 1.02], title=f"{self.model}: robust accuracy ({self.n} images)", height=380)
        return fig

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``report.json``, ``summary.csv``, ``autoattack.csv``, ``checks.csv``, ``sweep.csv``
        and, if kaleido is installed, ``sweep.png`` into ``folder`` (created); returns the paths."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        written = [atomic_write_text(folder / "report.json", self.to_json())]
        for name in self.tables():
            written.append(atomic_write_text(folder / f"{name}.csv", self.csv(name)))
        if png_export_available():
            path = folder / "sweep.png"
            self.figure().write_image(str(path))
            written.append(path)
        return written


def png_export_available() -> bool:
    """True when plotly can write PNG files (kaleido installed)."""
    return importlib.util.find_spec("kaleido") is not None


def sweep_points(eps: float, norm: str, input_shape=None, factors: Sequence[float] = SWEEP_FACTORS) -> list[float]:
    """The default ε-sweep: ``factors`` × ε, kept within the norm's range."""
    return [check_eps(min(f * eps, 1.0) if norm == "linf" else f * eps, norm, input_shape) for f in factors]


class _Stages:
    """Maps each stage's own ``progress(done, total)`` onto one bar over all stages."""

    def __init__(self, progress: Progress | None, stages: Sequence[str], weights: dict | None = None):
        self.progress = progress
        self.weights = {s: (weights or _WEIGHTS)[s] for s in stages}
        self.total = sum(self.weights.values()) * 100
        self.before = 0

    def of(self, stage: str) -> Progress:
        base, weight = self.before, self.weights[stage]
        self.before += weight * 100

        def update(done: int, total: int) -> None:
            if self.progress is not None:
                self.progress(base + (weight * 100 * done) // max(total, 1), self.total)
        return update


def _recorded(card) -> dict | None:
    """The figures the card records (clean, robust, the attack, n, AutoAttack), as its JSON has
    them; None when it records none."""
    if card is None:
        return None
    metrics = card.metrics.to_dict()
    return {k: metrics[k] for k in ("clean_acc", "robust_acc", "attack", "n_test", "autoattack_acc")
            if k in metrics} or None


def _quick_weights(pgd_steps: int, ladder: int, source: bool, sweep_runs: int) -> dict:
    """Relative work of the quick report's stages, in tenths of an APGD-CE run over the images."""
    return {"clean": 1, "pgd": max(1, pgd_steps // 10), "autoattack": 80, "masking": 10 * ladder + 1 + 10 * source,
            "sweep": max(1, 10 * sweep_runs)}


def robustness_report(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    norm: str = "linf",
    *,
    name: str = "model",
    checkpoint: str | None = None,
    dataset: str | None = None,
    card=None,
    pgd_steps: int = 40,
    preset: str = "full",
    version: str = "standard",
    seed: int = 0,
    source_model: nn.Module | None = None,
    masking: bool = True,
    sweep_eps: Sequence[float] | None = None,
    square_queries: int = 5000,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> RobustnessReport:
    """Measure the robustness report of ``model`` on ``images`` (N,C,H,W) in [0, 1] / ``labels``.

    Args:
        eps, norm: the threat model of the PGD, AutoAttack and masking figures.
        name, checkpoint, dataset, card: how the report names the model; the card's (a
            ``ModelCard``) ``source.leaderboard`` (RobustBench imports) and recorded metrics are shown
            beside ours.
        pgd_steps: PGD's steps (α = 2.5·ε/steps, random start).
        preset: ``"full"`` (standard AutoAttack, every masking check, :data:`SWEEP_FACTORS`) or
            ``"quick"`` (:data:`QUICK_ATTACKS`, :func:`~engine.attacks.masking.masking_checks` with ``quick=True``,
            :data:`QUICK_SWEEP_FACTORS`; ``version`` and ``square_queries`` do not apply).
        version: AutoAttack's version (full); seed: seeds every attack; square_queries:
            AutoAttack's Square budget (5,000 standard; full).
        source_model: a standard model for the masking checks' transfer comparison.
        masking: run the gradient-masking checks; sweep_eps: the ε-sweep's points (default
            the preset's factors × ε); a point the masking ladder measured is read from it.
        progress, should_stop: one ``progress(done, total)`` over all stages; ``should_stop()``
            polled every iteration — a stopped report keeps the sections it finished
            (``stopped=True``).
    """
    check_norm(norm)
    shape = tuple(images.shape[1:])
    eps = check_eps(eps, norm, shape)
    check_positive_int("pgd_steps", pgd_steps, 10_000)
    if preset not in PRESETS:
        raise InvalidParameterError(f"unknown report preset {preset!r}; choose {' or '.join(PRESETS)}")
    quick = preset == "quick"
    if len(images) == 0 or len(images) != len(labels):
        raise InvalidParameterError(f"need as many labels as images (> 0), got {len(images)} and {len(labels)}")
    factors = QUICK_SWEEP_FACTORS if quick else SWEEP_FACTORS
    points = ([check_eps(e, norm, shape) for e in sweep_eps] if sweep_eps is not None
              else sweep_points(eps, norm, shape, factors))
    board = ((card.source or {}) if card is not None else {}).get("leaderboard")
    if quick:
        aa = AutoAttack(eps=eps, norm=norm, version="custom", attacks=QUICK_ATTACKS, seed=seed)
    else:
        aa = AutoAttack(eps=eps, norm=norm, version=version, seed=seed, queries=square_queries)
    # the masking ladder measures APGD-CE (100 steps, this seed) at these ε: the sweep reads them
    ladder_eps = eps_ladder(eps, norm, shape) if masking and eps > 0 else []
    measured_by_ladder = lambda e: any(math.isclose(e, r, rel_tol=1e-9) for r in ladder_eps)  # noqa: E731
    stage_names = ["clean", "pgd", "autoattack"] + (["masking"] if masking and eps > 0 else []) + ["sweep"]
    weights = _quick_weights(pgd_steps, len(ladder_eps), source_model is not None,
                             sum(1 for e in points if e != 0 and not measured_by_ladder(e))) if quick else None
    stages = _Stages(progress, stage_names, weights)
    start = time.perf_counter()
    fields: dict = {}
    stopped = False
    try:
        clean_progress = stages.of("clean")
        fields["clean_acc"] = float((predict_labels(model, images, batch_size, device) == labels.cpu()).float().mean())
        clean_progress(1, 1)
        pgd = PGD(eps=eps, norm=norm, steps=pgd_steps)
        res = robust_accuracy(model, images, labels, pgd, batch_size, device, stages.of("pgd"), should_stop)
        if res.stopped:
            raise AttackCancelled("stopped")
        fields["pgd"] = {"robust_acc": res.robust_acc, "config": res.config, "seconds": round(res.seconds, 3)}
        auto = evaluate_autoattack(model, images, labels, aa, batch_size=batch_size, device=device,
                                   progress=stages.of("autoattack"), should_stop=should_stop)
        fields["autoattack"] = auto.as_dict()
        if auto.stopped:
            raise AttackCancelled("stopped")
        ladder = []
        if masking and eps > 0:  # at ε = 0 there is nothing to check (and nothing was broken)
            checks = masking_checks(model, images, labels, eps, norm, source_model=source_model, seed=seed,
                                    batch_size=batch_size, device=device, progress=stages.of("masking"),
                                    should_stop=should_stop, quick=quick)
            fields["masking"] = checks.as_dict()
            if checks.stopped:
                raise AttackCancelled("stopped")
            ladder = checks.ladder
        sweep_progress = stages.of("sweep")
        sweep = []
        for i, e in enumerate(points):
            rung = next((r for r in ladder if math.isclose(r["eps"], e, rel_tol=1e-9)), None)
            if e == 0:
                acc = fields["clean_acc"]
            elif rung is not None:  # the same APGD-CE run (ε, 100 steps, seed, batches) as the ladder's
                acc = rung["robust_acc"]
            else:
                r = robust_accuracy(model, images, labels, APGD(eps=e, norm=norm, seed=seed), batch_size, device,
                                    should_stop=should_stop)
                if r.stopped:
                    raise AttackCancelled("stopped")
                acc = r.robust_acc
            sweep.append({"eps": e, "robust_acc": acc})
            sweep_progress(i + 1, len(points))
        fields["sweep"] = sweep
    except AttackCancelled:
        stopped = True
    card_metrics = _recorded(card)
    return RobustnessReport(
        model=name, checkpoint=checkpoint, dataset=dataset, n=len(images), eps=eps, norm=norm, seed=seed,
        leaderboard=dict(board) if isinstance(board, dict) else None, card_metrics=card_metrics,
        seconds=round(time.perf_counter() - start, 3),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), stopped=stopped, preset=preset, **fields,
    )
