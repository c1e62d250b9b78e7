"""engine.attribution.retrain: KAR/ROAR retraining through engine.training, on a tiny seeded task."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from engine.attribution import (
    RetrainRequest,
    RetrainStopped,
    engine_retrainer,
    keep_remove_curves,
    retrain_config,
    retrain_cost,
)
from engine.data import get_spec
from engine.errors import InvalidParameterError
from engine.models import build_model

SIZE, CLASSES = 16, 6  # shapes' 6 classes, 16x16 images


def patch_task(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, 16, 16) in [0, 1]: dim noise plus one bright 4x4 patch whose position is the class."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    x = torch.rand(n, 3, SIZE, SIZE, generator=g) * 0.3
    for k in range(CLASSES):
        r, c = divmod(k, 3)
        x[y == k, :, r * 8 + 2:r * 8 + 6, c * 5 + 1:c * 5 + 5] += 0.6
    return x.clamp(0, 1), y


def tiny_model(seed: int = 0, size: int = SIZE):
    spec = get_spec("shapes")
    torch.manual_seed(seed)
    return build_model("small_cnn", CLASSES, (3, size, size), spec.mean, spec.std, width=8, hidden=32).eval()


def config(**kw):
    return retrain_config("shapes", epochs=1, batch_size=32, device="cpu", **kw)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def request(model, perturb, mode="keep", fraction=1.0) -> RetrainRequest:
    return RetrainRequest("A", model, mode, fraction, "mean", perturb)


def folder_files(env: str) -> list:
    root = Path(os.environ[env])
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_retrainer_trains_a_fresh_model_on_the_perturbed_images():
    train_x, train_y = patch_task(384, seed=0)
    test_x, test_y = patch_task(200, seed=1)
    original = tiny_model(seed=3)
    before = {k: v.clone() for k, v in original.state_dict().items()}
    events, seen = [], []

    def identity(x, y):
        seen.append((len(x), y.clone()))
        return x

    retrain = engine_retrainer(train_x, train_y, config(), perturb_batch_size=100, progress=events.append)
    learned = retrain(request(original, identity))
    blind = retrain(request(original, lambda x, y: torch.zeros_like(x), "remove", 1.0))

    # a new model, in eval mode, trained on what perturb returned; the original is untouched
    assert learned is not original and not learned.training and not blind.training
    assert all(torch.equal(before[k], v) for k, v in original.state_dict().items())
    assert any(not torch.equal(before[k], v) for k, v in learned.state_dict().items())
    assert learned.arch == original.arch and learned.arch_kwargs == original.arch_kwargs
    assert accuracy(original, test_x, test_y) < 0.4  # the seeded original knows nothing
    assert accuracy(learned, test_x, test_y) > 0.9  # trained on the real images: learns the task
    # trained on all-zero images it can only guess one class: at most the largest class share
    largest_share = torch.bincount(test_y, minlength=CLASSES).max().item() / len(test_y)
    assert accuracy(blind, test_x, test_y) <= largest_share + 1e-6 < 0.35

    # perturb saw the whole training set in batches of at most 100, with the true labels
    assert [n for n, _ in seen] == [100, 100, 100, 84]
    assert torch.equal(torch.cat([y for _, y in seen]), train_y)
    first = [e for e in events if (e.mode, e.fraction) == ("keep", 1.0)]
    assert [e.stage for e in first[:4]] == ["perturb"] * 4 and first[3].done == first[3].total == 4
    assert first[-1].stage == "train" and first[-1].done == first[-1].total == 12  # 384 / 32 batches
    assert [(r.mode, r.fraction, r.n_train, r.epochs) for r in retrain.records] == [
        ("keep", 1.0, 384, 1), ("remove", 1.0, 384, 1)]
    assert retrain.records[0].train_acc > retrain.records[1].train_acc

    # nothing published to the user's checkpoints, temporary runs cleaned up
    assert folder_files("ROBUSTSCOPE_CHECKPOINTS") == []
    assert folder_files("ROBUSTSCOPE_RUNS") == []


def test_curve_with_the_engine_retrainer_is_kar():
    train_x, train_y = patch_task(384, seed=0)
    test_x, test_y = patch_task(120, seed=1)
    retrain = engine_retrainer(train_x, train_y, config())
    curve = keep_remove_curves({"A": tiny_model()}, test_x, test_y, "keep", fractions=(0.0, 1.0), retrain=retrain)["A"]
    assert curve.retrained and not curve.stopped and len(retrain.records) == 2
    keep_nothing, keep_all = curve.accuracy
    assert keep_all > 0.9  # keep 100 %: retrained on the real images
    assert keep_nothing < 0.35  # keep 0 %: every image is its mean colour, no class evidence left


def test_should_stop_ends_the_retraining_and_the_curve():
    train_x, train_y = patch_task(128, seed=0)
    test_x, test_y = patch_task(24, seed=1)
    polls = []

    def stop_during_training():
        polls.append(1)
        return len(polls) > 3  # 1 masking batch, then stop inside the first epoch

    retrain = engine_retrainer(train_x, train_y, config(), should_stop=stop_during_training)
    with pytest.raises(RetrainStopped):
        retrain(request(tiny_model(), lambda x, y: x))
    assert folder_files("ROBUSTSCOPE_RUNS") == [] and folder_files("ROBUSTSCOPE_CHECKPOINTS") == []

    polls.clear()
    curves = keep_remove_curves({"A": tiny_model(), "B": tiny_model(seed=1)}, test_x, test_y, "remove",
                                fractions=(0.0, 0.5, 1.0), retrain=retrain)
    assert all(c.stopped and c.accuracy == () and c.retrained for c in curves.values())
    assert retrain.records == [] and len(polls) == 4  # B's curve did not start another retraining


@pytest.mark.parametrize("kwargs, match", [
    (dict(train_images=torch.rand(4, 3, SIZE, SIZE) * 2), r"\[0, 1\]"),
    (dict(train_images=torch.rand(1, 3, SIZE, SIZE), train_labels=torch.tensor([0])), "at least 2"),
    (dict(train_labels=torch.tensor([0, 1, 2, 6])), "class indices"),
    (dict(train_labels=torch.tensor([0, 1])), "4 ints"),
    (dict(config={"epochs": 1}), "TrainConfig"),
    (dict(perturb_batch_size=0), "perturb_batch_size"),
    (dict(progress="yes"), "progress"),
])
def test_engine_retrainer_rejects_bad_arguments(kwargs, match):
    args = dict(train_images=torch.rand(4, 3, SIZE, SIZE), train_labels=torch.tensor([0, 1, 2, 3]), config=config())
    args.update(kwargs)
    with pytest.raises(InvalidParameterError, match=match):
        engine_retrainer(args.pop("train_images"), args.pop("train_labels"), args.pop("config"), **args)


def test_bad_recipes_and_mismatched_models_are_refused():
    with pytest.raises(InvalidParameterError, match="epochs"):
        retrain_config("shapes", epochs=0)
    with pytest.raises(InvalidParameterError, match="unknown training config key"):
        retrain_config("shapes", epoch=2)
    with pytest.raises(InvalidParameterError, match="retrainings"):
        retrain_cost(config(), 100, -1)
    retrain = engine_retrainer(*patch_task(8, seed=0), config())
    with pytest.raises(InvalidParameterError, match="takes"):
        retrain(request(tiny_model(size=32), lambda x, y: x))  # 32x32 model, 16x16 training images
    cost = retrain_cost(config(), 1000, 18, "cpu", "small_cnn")
    assert cost.image_passes == 18 * 1000 and cost.seconds_low < cost.seconds_high


def test_cli_prints_and_saves_retrained_curves(tiny_checkpoints, tmp_path, capsys):
    from engine.cli import main

    out = tmp_path / "out"
    argv = ["saliency", "--checkpoint", str(tiny_checkpoints["standard"]), "--curve", "remove",
            "--n", "8", "--fractions", "0,1", "--out", str(out), "--device", "cpu"]
    assert main(argv + ["--retrain", "--retrain-epochs", "1", "--retrain-n", "64"]) == 0
    stdout = capsys.readouterr().out
    assert "tiny_standard remove (ROAR, retrained): 0=" in stdout
    saved = json.loads((out / "curve_remove_retrain.json").read_text())["tiny_standard"]
    assert saved["retrained"] and saved["fractions"] == [0.0, 1.0] and len(saved["accuracy"]) == 2
    summary = json.loads((out / "saliency.json").read_text())["curve"]
    assert summary["retrain"]["config"]["epochs"] == 1
    assert [r["n_train"] for r in summary["retrain"]["records"]] == [64, 64]
    assert not (out / "curve_remove.json").exists()
    # the retrained models leave nothing behind; only the stored maps analysis (runs/results) stays
    assert [p for p in folder_files("ROBUSTSCOPE_RUNS") if "results" not in p.parts] == []
    assert sorted(p.name for p in folder_files("ROBUSTSCOPE_CHECKPOINTS")) == [
        "tiny_robust.json", "tiny_robust.safetensors", "tiny_standard.json", "tiny_standard.safetensors"]

    for bad, needle in ((["--retrain-epochs", "0"], "--retrain-epochs"), (["--retrain-n", "1"], "--retrain-n"),
                        (["--retrain-n", "999999"], "--retrain-n must be <=")):
        assert main(argv + ["--retrain"] + bad) == 2
        assert needle in capsys.readouterr().err
    no_curve = [a for a in argv if a not in ("--curve", "remove")]
    assert main(no_curve + ["--retrain"]) == 2
    assert "--retrain needs --curve" in capsys.readouterr().err
