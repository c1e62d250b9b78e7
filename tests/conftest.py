"""Shared test fixtures: isolated folders, seeding and the offline data root."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread for the whole run, module-scoped fixtures included: tiny CPU workloads
    run many times faster without thread contention on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


@pytest.fixture
def tiny_checkpoints(tmp_path):
    """Two tiny seeded ``small_cnn`` checkpoints on ``shapes`` in ``$ROBUSTSCOPE_CHECKPOINTS``.

    Returns ``{"standard": path, "robust": path}`` (weights files). The "robust" card records a
    PGD recipe; the weights are only seeded (pages are tested for behaviour, not for accuracy).
    """
    from engine.checkpoints import make_card, save_checkpoint
    from engine.data import get_spec
    from engine.models import build_model

    spec = get_spec("shapes")
    root = Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"])
    recipes = {
        # like real cards, the standard recipe carries the config's unused default threat model
        "standard": {"method": "standard", "norm": "linf", "eps": 8 / 255, "epochs": 1, "seed": 0},
        "robust": {"method": "pgd", "norm": "linf", "eps": 8 / 255, "steps": 3, "epochs": 1, "seed": 1},
    }
    paths = {}
    for seed, (kind, training) in enumerate(recipes.items()):
        torch.manual_seed(seed)
        model = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=4, hidden=16)
        card = make_card(model, "shapes", name=f"tiny_{kind}", training=training, metrics={"clean_acc": 0.5})
        paths[kind] = save_checkpoint(model.eval(), card, root / f"tiny_{kind}")
    return paths


@pytest.fixture
def no_autostart(monkeypatch):
    """Tests that run workers themselves (``pytestmark = pytest.mark.usefixtures("no_autostart")``):
    a submit must not start a detached one."""
    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")
