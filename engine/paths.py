"""Where RobustScope keeps its files, in one torch-free module (cheap to import from the CLI).

- :func:`runs_dir`: ``$ROBUSTSCOPE_RUNS``, else ``./runs`` (job store, training runs, results);
- :func:`results_dir`: ``<runs>/results`` (stored analysis results, ``engine.analysis``).
"""
from __future__ import annotations

import os
from pathlib import Path

RUNS_ENV = "ROBUSTSCOPE_RUNS"


def runs_dir() -> Path:
    """The runs folder: ``$ROBUSTSCOPE_RUNS``, else ``./runs`` (not created here)."""
    return Path(os.environ.get(RUNS_ENV) or "runs")


def results_dir(runs: str | os.PathLike | None = None) -> Path:
    """The stored analysis results: ``<runs>/results`` (not created here)."""
    return (Path(runs) if runs is not None else runs_dir()) / "results"
