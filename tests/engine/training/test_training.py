"""Training engine: config validation, each method lowers the loss, PGD-AT is more robust, resume."""
from __future__ import annotations

import pytest
import torch

from engine.errors import InvalidParameterError
from engine.training import METHODS, TrainConfig, train


def tiny(method: str, **kw) -> TrainConfig:
    base = dict(dataset="shapes", dataset_options={"n": 256, "image_size": 16}, arch="small_cnn",
                arch_kwargs={"width": 8, "hidden": 32}, method=method, epochs=3, batch_size=32,
                optimizer="adamw", lr=3e-3, weight_decay=0.0, eval_size=96, eval_steps=5, steps=3,
                eps=8 / 255, device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("field,value,needle", [
    ("method", "magic", "method must be one of"), ("eps", -0.1, "eps must be"),
    ("epochs", 0, "epochs must be between"), ("lr", "0.1", "lr must be a finite number"),
    ("norm", "l1", "norm must be one of"), ("name", "../x", "name"), ("steps", 1.5, "whole number"),
])
def test_validation_messages(field, value, needle):
    with pytest.raises(InvalidParameterError, match=needle):
        TrainConfig(**{field: value}).validate()


def test_json_roundtrip_and_unknown_keys():
    cfg = tiny("trades", trades_beta=3.0)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(InvalidParameterError, match="unknown training config key"):
        TrainConfig.from_json('{"epochz": 3}')
    with pytest.raises(InvalidParameterError, match="not valid JSON"):
        TrainConfig.from_json("__import__('os')")


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_lowers_the_loss(method):
    result = train(tiny(method))
    losses = [h["train_loss"] for h in result.history]
    assert result.status == "done" and len(losses) == 3
    assert losses[-1] < losses[0]
    from engine.checkpoints import load
    loaded = load(result.checkpoint)
    assert loaded.card.training.method == method and len(loaded.card.metrics.history) == 3
    # the recipe is stored once (the config); the typed fields are read from it
    written = loaded.card.to_dict()["training"]
    assert TrainConfig.from_dict(written["config"]) == tiny(method)
    assert set(written) == {"config", "epochs_completed", "status", "attack_mode", "selected"}
    cfg = tiny(method)
    assert (loaded.card.training.steps, loaded.card.training.alpha) == (cfg.attack_steps, cfg.attack_alpha)
    assert loaded.card.training.bn_mode.startswith("dual" if method == "advprop" else "single")
    # the evaluation attack in the one AttackRecord layout
    attack = loaded.card.to_dict()["metrics"]["attack"]
    assert attack["attack"] == "pgd" and "name" not in attack and attack["steps"] == cfg.eval_steps
    assert loaded.model.dual_bn == (method == "advprop")


def test_pgd_training_is_more_robust_than_standard():
    std = train(tiny("standard", epochs=4, dataset_options={"n": 384, "image_size": 16}))
    adv = train(tiny("pgd", epochs=4, dataset_options={"n": 384, "image_size": 16}))
    assert adv.history[-1]["robust_acc"] > std.history[-1]["robust_acc"] + 0.05


def test_resume_continues_and_matches_uninterrupted(tmp_path):
    full = train(tiny("standard", epochs=2), run_dir=tmp_path / "a")
    calls = []

    def stop_after_first_epoch():
        calls.append(1)
        return len(calls) > 8  # 256 images / 32 = 8 batches: stop at epoch 2's first batch

    part = train(tiny("standard", epochs=2), run_dir=tmp_path / "b", should_stop=stop_after_first_epoch)
    assert part.status == "cancelled" and part.epochs_completed == 1
    rest = train(tiny("standard", epochs=2), run_dir=tmp_path / "b")
    assert rest.resumed_from == 1 and rest.epochs_completed == 2
    from engine.checkpoints import load
    a, b = load(full.checkpoint).model.state_dict(), load(rest.checkpoint).model.state_dict()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), atol=1e-6), k


def test_in_memory_datasets_train_exactly_like_the_named_dataset(tmp_path):
    from engine.checkpoints import load
    from engine.data import TensorImageDataset, load_dataset, take

    cfg = tiny("standard", epochs=1)
    by_name = train(cfg, run_dir=tmp_path / "a", checkpoint_dir=tmp_path / "ck_a")
    splits = [load_dataset("shapes", split=s, **cfg.dataset_options) for s in ("train", "test")]
    floats = [TensorImageDataset(*take(s, len(s)), s.spec) for s in splits]  # float32 copies in [0, 1]
    assert floats[0].images.dtype == torch.float32
    in_memory = train(cfg, run_dir=tmp_path / "b", checkpoint_dir=tmp_path / "ck_b", datasets=tuple(floats))
    assert in_memory.history[0]["train_loss"] == pytest.approx(by_name.history[0]["train_loss"], rel=1e-5)
    assert in_memory.history[0]["clean_acc"] == by_name.history[0]["clean_acc"]
    a, b = load(by_name.checkpoint).model.state_dict(), load(in_memory.checkpoint).model.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    assert in_memory.checkpoint.parent == tmp_path / "ck_b"

    no_eval = train(cfg, run_dir=tmp_path / "c", checkpoint_dir=tmp_path / "ck_c", datasets=(floats[0], None))
    assert no_eval.status == "done" and no_eval.history[0]["clean_acc"] is None
    with pytest.raises(InvalidParameterError, match="pair"):
        train(cfg, run_dir=tmp_path / "d", datasets=floats[0])
    with pytest.raises(InvalidParameterError, match="at least 2"):
        train(cfg, run_dir=tmp_path / "e", datasets=(TensorImageDataset(*take(splits[0], 1), splits[0].spec), None))
