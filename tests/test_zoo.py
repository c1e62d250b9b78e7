"""The shipped model zoo (checkpoints/): every card is honest and its clean figure reproduces.

Each shipped checkpoint must have its recipe in checkpoints/recipes/, a card whose training config
is that recipe, weights matching the card's hash, and headline figures recorded by
``python -m engine evaluate ... --record`` on the whole test split (robust ones under PGD with at
least 20 steps and a random start). The clean accuracy is re-measured here on the full test set
(exactly: evaluation is deterministic); robust figures are re-measured by the README's commands.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "checkpoints"
CARDS = sorted(ZOO.glob("*.json"))
REAL = ("mnist", "fashion-mnist")


def _card(path: Path) -> dict:
    return json.loads(path.read_text())


def test_zoo_is_small_and_complete():
    total = sum(p.stat().st_size for p in ZOO.rglob("*") if p.is_file())
    assert total < 50 * 2**20, f"checkpoints/ holds {total / 2**20:.1f} MB (limit 50 MB)"
    names = {p.stem for p in CARDS}
    assert {"shapes_standard", "shapes_pgd", "mnist_standard", "mnist_pgd", "mnist_advprop",
            "fashion_standard", "fashion_pgd_linf_0p1", "fashion_pgd_l2_1p0"} <= names
    assert sum(n.startswith("fashion_pgd_linf_") for n in names) >= 3


@pytest.mark.parametrize("card_path", CARDS, ids=lambda p: p.stem)
def test_card_matches_recipe_and_weights(card_path):
    from engine.training.config import TrainConfig

    card = _card(card_path)
    weights = card_path.with_suffix(".safetensors")
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == card["weights_sha256"]
    recipe = json.loads((ZOO / "recipes" / f"{card_path.stem}.json").read_text())
    assert TrainConfig.from_dict(recipe).to_dict() == TrainConfig.from_dict(card["training"]["config"]).to_dict()
    assert card["training"]["status"] == "done"


@pytest.mark.parametrize("card_path", CARDS, ids=lambda p: p.stem)
def test_card_figures_were_measured_on_the_full_test_set(card_path):
    metrics = _card(card_path)["metrics"]
    argv = shlex.split(metrics["measured_with"])
    assert argv[:4] == ["python", "-m", "engine", "evaluate"]
    assert Path(argv[argv.index("--checkpoint") + 1]).stem == card_path.stem
    assert "--n" not in argv and metrics["split"] == "test"
    attack = metrics.get("attack")
    if attack is not None:
        assert attack["attack"] == "pgd" and attack["steps"] >= 20 and attack["random_start"]
        assert 0.0 <= metrics["robust_acc"] <= metrics["clean_acc"] <= 1.0


@pytest.mark.parametrize("card_path", CARDS, ids=lambda p: p.stem)
def test_clean_accuracy_reproduces(card_path, request, monkeypatch):
    import engine
    from engine.data import load_dataset
    from engine.evaluation import accuracy

    card = _card(card_path)
    dataset = card["metrics"]["dataset"]
    if dataset in REAL:
        monkeypatch.setenv("ROBUSTSCOPE_DATA", str(request.getfixturevalue("real_data_root")))
    loaded = engine.load(card_path)
    test_set = load_dataset(dataset, split="test")
    result = accuracy(loaded.model, test_set, batch_size=500)
    assert result.total == card["metrics"]["n_test"] == len(test_set)
    assert result.accuracy == pytest.approx(card["metrics"]["clean_acc"], abs=1e-9)
