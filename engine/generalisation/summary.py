"""Does a standard/robust pair reproduce Agarwal & Chen 2020? Findings computed from the numbers.

Each :class:`Finding` states one claim of the paper, whether this pair shows it (``holds``: True,
False, or None when the numbers needed are missing) and the numbers behind the verdict. The page
and the CLI show these lines verbatim, so a pair that does not reproduce the paper says so.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import numpy as np
import pandas as pd

from engine.errors import InvalidParameterError

#: Accuracy gap (absolute) within which two models count as "on par".
PAR_MARGIN = 0.02


class Finding(NamedTuple):
    """One claim, whether it holds for this pair (None = not measured), and the numbers."""

    claim: str
    holds: bool | None
    detail: str


def _mean_accuracy(table: pd.DataFrame, model: str, keeps: tuple[str, ...]) -> float:
    rows = table[(table["model"] == model) & table["keeps"].isin(keeps) & (table["distortion"] != "clean")]
    return float(rows["accuracy"].mean()) if len(rows) else math.nan


def _ood_findings(table: pd.DataFrame, robust: str, standard: str) -> list[Finding]:
    gap = {
        cue: _mean_accuracy(table, robust, keeps) - _mean_accuracy(table, standard, keeps)
        for cue, keeps in (("shape", ("shape",)), ("texture", ("texture", "both")))
    }
    texless, textured = gap["shape"], gap["texture"]
    ahead = None if math.isnan(texless) else texless > 0
    par = None if math.isnan(textured) else textured <= PAR_MARGIN
    relative = None if math.isnan(texless) or math.isnan(textured) else texless > textured
    return [
        Finding("robust model more accurate on texture-less images (edges, silhouettes, low-pass, "
                "cue-conflict)", ahead, f"mean accuracy gap robust − standard: {texless:+.3f}"),
        Finding("robust model on par or worse where texture survives (noise, blur, contrast, "
                "high-pass, patch shuffle)", par,
                f"mean gap {textured:+.3f} (on par = at most {PAR_MARGIN:+.2f})"),
        Finding("robust model's advantage larger without texture than with it", relative,
                f"{texless:+.3f} texture-less vs {textured:+.3f} texture kept"),
    ]


def _bias_finding(bias: Mapping[str, object], robust: str, standard: str) -> Finding:
    r, s = (getattr(bias.get(m), "shape_bias", math.nan) for m in (robust, standard))
    holds = None if math.isnan(r) or math.isnan(s) else r > s
    return Finding("robust model more shape-biased on cue-conflict images", holds,
                   f"shape bias robust {r:.3f} vs standard {s:.3f}")


def _median(units: pd.DataFrame, model: str, column: str) -> float:
    values = units[(units["model"] == model) & units["active"]][column].dropna()
    return float(np.median(values)) if len(values) else math.nan


def _unit_findings(units: pd.DataFrame, robust: str, standard: str) -> list[Finding]:
    found = []
    for claim, columns in (("robust units smoother", ("roughness", "high_freq_share")),
                           ("robust units simpler (fewer labels among top-k)",
                            ("distinct_labels", "label_entropy"))):
        pairs = [(c, _median(units, robust, c), _median(units, standard, c)) for c in columns]
        valid = [(c, r, s) for c, r, s in pairs if not (math.isnan(r) or math.isnan(s))]
        holds = None if not valid else all(r < s for _, r, s in valid)
        detail = "; ".join(f"median {c}: robust {r:.3f} vs standard {s:.3f}" for c, r, s in pairs)
        found.append(Finding(claim, holds, detail + " (lower = smoother/simpler)"))
    return found


def paper_findings(
    robust: str,
    standard: str,
    ood_table: pd.DataFrame | None = None,
    shape_bias: Mapping[str, object] | None = None,
    units: pd.DataFrame | None = None,
) -> list[Finding]:
    """The paper's claims checked on this pair's numbers.

    Args:
        robust, standard: the model names used in the tables.
        ood_table: :attr:`engine.generalisation.OODResult.table`.
        shape_bias: model name -> :class:`engine.generalisation.ShapeBiasResult`.
        units: :func:`engine.generalisation.units_frame` output (all layers pooled, active units).

    Returns:
        A list of :class:`Finding` for whatever inputs were given.
    """
    found = []
    if ood_table is not None and len(ood_table):
        found += _ood_findings(ood_table, robust, standard)
    if shape_bias:
        found.append(_bias_finding(shape_bias, robust, standard))
    if units is not None and len(units):
        found += _unit_findings(units, robust, standard)
    return found


def findings_line(findings: list[Finding]) -> str:
    """One sentence: how many of the measured claims this pair reproduces."""
    measured = [f for f in findings if f.holds is not None]
    if not measured:
        return "Nothing measured yet."
    held = [f for f in measured if f.holds]
    missed = [f.claim for f in measured if not f.holds]
    line = f"This pair reproduces {len(held)} of {len(measured)} measured claims of Agarwal & Chen 2020."
    return line + (" Not reproduced: " + "; ".join(missed) + "." if missed else "")


def robust_and_standard(cards: Mapping[str, Any]) -> tuple[str, str, str]:
    """Which of two models (name -> model card) is the robust one, and which the standard one.

    Uses the cards' training method (``engine.selection.is_robust``). When both or neither card
    records adversarial training, the second model is taken as the robust one and the returned
    note says so.

    Returns:
        (robust name, standard name, note — empty when the cards decided).
    """
    from engine.selection import is_robust

    names = list(cards)
    if len(names) != 2:
        raise InvalidParameterError("comparing robust and standard needs exactly two models")
    flags = [is_robust(cards[n]) for n in names]
    if flags == [True, False]:
        return names[0], names[1], ""
    if flags == [False, True]:
        return names[1], names[0], ""
    kind = "adversarially trained" if all(flags) else "standard"
    return names[1], names[0], (f"Both cards say {kind}; treating {names[1]} as the robust model "
                                f"and {names[0]} as the standard one.")
