"""A robustness report per checkpoint, RobustBench-style: clean accuracy, PGD, AutoAttack (the
accuracy after each of its attacks), the gradient-masking checks and an ε-sweep, with the
leaderboard's figures beside ours for imported RobustBench models.

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
from engine.attacks.masking import masking_checks
from engine.attacks.pgd import PGD
from engine.errors import InvalidParameterError
from engine.fileio import atomic_write_text
from engine.version import __version__
from engine.runtime import Progress, ShouldStop


#: the ε-sweep's default points, as multiples of the report's ε
SWEEP_FACTORS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
#: relative work of the report's stages (for one progress bar)
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

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

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
            for stage in self.autoattack["per_attack"]:
                rows.append({"measure": f"AutoAttack, after {stage['attack']}", "accuracy": stage["robust_acc_after"],
                             "threat": threat, "source": "measured", "n": self.n})
            rows.append({"measure": f"AutoAttack ({self.autoattack['version']})",
                         "accuracy": self.autoattack["robust_acc"], "threat": threat, "source": "measured",
                         "n": self.n})
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
                                     name="AutoAttack", marker={"symbol": "x", "size": 11}))
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

    def __init__(self, progress: Progress | None, stages: Sequence[str]):
        self.progress = progress
        self.weights = {s: _WEIGHTS[s] for s in stages}
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
        pgd_steps: PGD's steps (α = 2.5·ε/steps, random start); version: AutoAttack's version;
            seed: seeds every attack; square_queries: AutoAttack's Square budget (5,000 standard).
        source_model: a standard model for the masking checks' transfer comparison.
        masking: run the gradient-masking checks; sweep_eps: the ε-sweep's points (default
            :data:`SWEEP_FACTORS` × ε).
        progress, should_stop: one ``progress(done, total)`` over all stages; ``should_stop()``
            polled every iteration — a stopped report keeps the sections it finished
            (``stopped=True``).
    """
    check_norm(norm)
    shape = tuple(images.shape[1:])
    eps = check_eps(eps, norm, shape)
    check_positive_int("pgd_steps", pgd_steps, 10_000)
    if len(images) == 0 or len(images) != len(labels):
        raise InvalidParameterError(f"need as many labels as images (> 0), got {len(images)} and {len(labels)}")
    points = [check_eps(e, norm, shape) for e in sweep_eps] if sweep_eps is not None else sweep_points(eps, norm, shape)
    board = ((card.source or {}) if card is not None else {}).get("leaderboard")
    aa = AutoAttack(eps=eps, norm=norm, version=version, seed=seed, queries=square_queries)
    stage_names = ["clean", "pgd", "autoattack"] + (["masking"] if masking else []) + ["sweep"]
    stages = _Stages(progress, stage_names)
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
        if masking:
            checks = masking_checks(model, images, labels, eps, norm, source_model=source_model, seed=seed,
                                    batch_size=batch_size, device=device, progress=stages.of("masking"),
                                    should_stop=should_stop)
            fields["masking"] = checks.as_dict()
            if checks.stopped:
                raise AttackCancelled("stopped")
        sweep_progress = stages.of("sweep")
        sweep = []
        for i, e in enumerate(points):
            if e == 0:
                acc = fields["clean_acc"]
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
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), stopped=stopped, **fields,
    )
