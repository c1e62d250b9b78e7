"""Shared test fixtures: isolated folders, seeding and the offline data root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed_and_isolate(tmp_path, monkeypatch):
    """Seed torch and point checkpoints/runs at a temp folder so no test touches real files."""
    torch.manual_seed(0)
    monkeypatch.setenv("ROBUSTSCOPE_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("ROBUSTSCOPE_RUNS", str(tmp_path / "runs"))
    yield


@pytest.fixture
def real_data_root() -> Path:
    """The real MNIST/Fashion-MNIST root (``$ROBUSTSCOPE_DATA`` or ``../shared/data``), else skip."""
    env = os.environ.get("ROBUSTSCOPE_DATA")
    for root in ([Path(env)] if env else []) + [SHARED_DATA]:
        if (root / "MNIST" / "raw").is_dir():
            return root
    pytest.skip("no offline MNIST copy (set ROBUSTSCOPE_DATA or provide ../shared/data)")
