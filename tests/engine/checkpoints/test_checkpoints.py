"""engine.checkpoints: round trip, atomic saves, card checks, listing, importers, unsafe pickles."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

import engine
from engine import checkpoints as ckpt
from engine.checkpoints import store
from engine.errors import CheckpointError, InvalidParameterError, UnsafeCheckpointError
from engine.models import bn_branch, build_model

MEAN, STD = [0.3, 0.4, 0.5], [0.2, 0.25, 0.3]


class Spec(NamedTuple):
    """A stand-in for engine.data.DatasetSpec, so these tests need no dataset code."""

    name: str
    num_classes: int
    class_names: tuple
    input_shape: tuple
    mean: tuple
    std: tuple


SPEC = Spec("tiny", 3, ("a", "b", "c"), (3, 16, 16), tuple(MEAN), tuple(STD))


def tiny_model(seed=0, dual_bn=False, **kwargs):
    """A seeded small_cnn whose BN statistics are not the defaults (so buffers are tested too)."""
    torch.manual_seed(seed)
    model = build_model("small_cnn", 3, (3, 16, 16), MEAN, STD, dual_bn=dual_bn, **(kwargs or {"width": 4}))
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 16, 16))
        if dual_bn:
            with bn_branch(model, "aux"):
                model(torch.rand(8, 3, 16, 16) * 2)
    return model.eval()


def saved(tmp_path, name="m", model=None, **card_kwargs):
    model = model if model is not None else tiny_model()
    card = ckpt.make_card(model, "tiny", class_names=["a", "b", "c"], **card_kwargs)
    return model, ckpt.save_checkpoint(model, card, tmp_path / name)


def logits(model, seed=5):
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(torch.rand(4, 3, 16, 16))


def temp_files(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def edit_card(path: Path, **changes) -> None:
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card.update(changes)
    card_path.write_text(json.dumps(card))


# --- our format -------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["stem", "safetensors", "json"])
def test_round_trip_gives_identical_logits(tmp_path, form):
    model, path = saved(tmp_path, training={"method": "pgd", "eps": 0.1}, metrics={"clean_acc": 0.5})
    arg = {"stem": tmp_path / "m", "safetensors": path, "json": path.with_suffix(".json")}[form]
    loaded = ckpt.load(arg)
    assert torch.equal(logits(loaded.model), logits(model))
    assert not any(m.training for m in loaded.model.modules())
    assert loaded.path == path and loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.card.to_dict()["training"] == {"method": "pgd", "eps": 0.1} and loaded.card.to_dict()["metrics"] == {"clean_acc": 0.5}
    assert loaded.card.to_dict()["name"] == "m" and loaded.card.to_dict()["class_names"] == ["a", "b", "c"]
    assert engine.load(arg).sha256 == loaded.sha256


def test_card_holds_the_documented_fields(tmp_path):
    _, path = saved(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    for field in ("arch", "arch_kwargs", "dataset", "input_shape", "mean", "std", "num_classes", "class_names",
                  "dual_bn", "training", "metrics", "versions", "created", "name", "description", "weights_sha256"):
        assert field in card, field
    assert card["input_shape"] == [3, 16, 16] and card["arch_kwargs"] == {"width": 4, "hidden": 128}
    assert {"torch", "torchvision", "safetensors", "python"} <= set(card["versions"])


def test_dual_bn_round_trip_keeps_both_branches(tmp_path):
    model, path = saved(tmp_path, model=tiny_model(dual_bn=True))
    loaded = ckpt.load(path)
    assert loaded.model.dual_bn
    with bn_branch(model, "aux"):
        expected = logits(model)
    with bn_branch(loaded.model, "aux"):
        assert torch.equal(logits(loaded.model), expected)
    assert not torch.equal(expected, logits(model))


def test_save_leaves_no_temp_files_and_overwrites(tmp_path):
    saved(tmp_path)
    other, _ = saved(tmp_path, model=tiny_model(seed=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]
    assert torch.equal(logits(ckpt.load(tmp_path / "m").model), logits(other))


@pytest.mark.parametrize("failing", ["_write_weights", "_write_text"])
def test_failed_save_does_not_clobber_the_existing_checkpoint(tmp_path, monkeypatch, failing):
    model, path = saved(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real = getattr(store, failing)

    def half_then_fail(payload, target):
        real(payload, target)  # the temp file is fully written ...
        Path(target).write_bytes(Path(target).read_bytes()[:20])  # ... then damaged, as in a crash
        raise OSError("disk full")

    monkeypatch.setattr(store, failing, half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tiny_model(seed=3), ckpt.make_card(tiny_model(seed=3), "tiny"), path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert temp_files(tmp_path) == []
    monkeypatch.undo()
    assert torch.equal(logits(ckpt.load(path).model), logits(model))


def test_bad_cards_are_refused_before_writing(tmp_path):
    model = tiny_model()
    with pytest.raises(InvalidParameterError, match="JSON"):
        ckpt.save_checkpoint(model, dict(ckpt.make_card(model, "tiny").to_dict(), metrics={"x": object()}), tmp_path / "a")
    with pytest.raises(InvalidParameterError, match="'arch'"):
        ckpt.save_checkpoint(model, dict(ckpt.make_card(model, "tiny").to_dict(), arch="cifar_resnet"), tmp_path / "a")
    with pytest.raises(InvalidParameterError, match="class names"):
        ckpt.make_card(model, "tiny", class_names=["only-one"])
    assert list(tmp_path.iterdir()) == []


def test_card_weights_mismatch_names_shapes(tmp_path):
    _, path = saved(tmp_path)
    edit_card(path, arch_kwargs={"width": 8, "hidden": 128})
    with pytest.raises(CheckpointError) as info:
        ckpt.load(path)
    message = str(info.value)
    assert "shape mismatches" in message and "net.block1.0.weight: file (4, 3, 3, 3) vs model (8, 3, 3, 3)" in message


def test_card_weights_mismatch_names_missing_and_unexpected_keys(tmp_path):
    _, path = saved(tmp_path)
    edit_card(path, dual_bn=True)
    with pytest.raises(CheckpointError) as info:
        ckpt.load(path)
    message = str(info.value)
    assert "missing keys" in message and "net.block1.1.aux.bias" in message
    assert "unexpected keys" in message and "net.block1.1.bias" in message


def test_changed_normalisation_in_card_is_refused(tmp_path):
    _, path = saved(tmp_path)
    edit_card(path, mean=[0.9, 0.9, 0.9])
    with pytest.raises(CheckpointError, match="mean"):
        ckpt.load(path)


def test_replaced_weights_are_detected(tmp_path):
    _, path = saved(tmp_path)
    _, other = saved(tmp_path, name="other", model=tiny_model(seed=2))
    path.write_bytes(other.read_bytes())
    with pytest.raises(CheckpointError, match="sha256"):
        ckpt.load(path)


@pytest.mark.parametrize("keep_hash", [True, False])
def test_truncated_weights_are_a_checkpoint_error(tmp_path, keep_hash):
    _, path = saved(tmp_path)
    if not keep_hash:
        edit_card(path, weights_sha256=None)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load(path)


def test_broken_or_missing_cards_are_checkpoint_errors(tmp_path):
    _, path = saved(tmp_path)
    card = path.with_suffix(".json")
    card.write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        ckpt.load(path)
    card.write_text(json.dumps({"arch": "small_cnn"}))
    with pytest.raises(CheckpointError, match="num_classes, input_shape, mean, std"):
        ckpt.load(path)
    card.unlink()
    with pytest.raises(CheckpointError, match="no model card"):
        ckpt.load(path)
    with pytest.raises(CheckpointError):
        ckpt.load(tmp_path / "nothing-here")


def test_pt_weights_beside_a_card_load_with_weights_only(tmp_path):
    model, path = saved(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pt.pt")
    card = json.loads(path.with_suffix(".json").read_text())
    card.pop("weights_sha256")
    (tmp_path / "pt.json").write_text(json.dumps(card))
    assert torch.equal(logits(ckpt.load(tmp_path / "pt").model), logits(model))


# --- listing ----------------------------------------------------------------------------------


def test_list_checkpoints_default_roots_and_broken_entries(tmp_path):
    root = ckpt.checkpoints_root()
    assert root == tmp_path / "checkpoints"  # conftest points ROBUSTSCOPE_CHECKPOINTS here
    assert ckpt.list_checkpoints() == []
    saved(root, name="good")
    saved(root / "uploads", name="uploaded")
    (root / "broken.json").write_text("{oops")
    _, lonely = saved(root, name="lonely")
    lonely.with_suffix(".json").unlink()
    _, no_weights = saved(root, name="noweights")
    no_weights.unlink()
    infos = {info.name: info for info in ckpt.list_checkpoints()}
    assert set(infos) == {"good", "uploaded", "broken", "lonely", "noweights"}
    assert infos["good"].error is None and infos["good"].card.to_dict()["arch"] == "small_cnn"
    assert infos["good"].path == (root / "good.safetensors").resolve()
    assert infos["uploaded"].error is None
    assert "not valid JSON" in infos["broken"].error and infos["broken"].card is None
    assert "no model card" in infos["lonely"].error
    assert "weights file missing" in infos["noweights"].error
    only_uploads = ckpt.list_checkpoints(root / "uploads")
    assert [i.name for i in only_uploads] == ["uploaded"]


# --- importers --------------------------------------------------------------------------------


def robustness_state(model) -> dict[str, torch.Tensor]:
    """What MadryLab robustness' AttackerModel state dict looks like (DataParallel-wrapped)."""
    net = {k[len("net."):]: v for k, v in model.state_dict().items() if k.startswith("net.")}
    mean, std = model.normalize.mean.view(-1, 1, 1), model.normalize.std.view(-1, 1, 1)
    state = {"module.normalizer.new_mean": mean, "module.normalizer.new_std": std,
             "module.attacker.normalize.new_mean": mean, "module.attacker.normalize.new_std": std}
    state.update({f"module.model.{k}": v for k, v in net.items()})
    state.update({f"module.attacker.model.{k}": torch.zeros_like(v) for k, v in net.items()})
    return state


@pytest.mark.parametrize("key,fmt", [("model", "auto"), ("state_dict", "robustness")])
def test_robustness_checkpoint_imports_with_identical_logits(tmp_path, key, fmt):
    torch.manual_seed(0)
    reference = build_model("small_cnn", 3, (3, 16, 16), [0.45, 0.5, 0.55], [0.2, 0.21, 0.22], width=4)
    reference.eval()
    src = tmp_path / "robust.pt"
    torch.save({key: robustness_state(reference), "epoch": 89,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, src)
    loaded = ckpt.import_checkpoint(src, "small_cnn", SPEC, fmt=fmt, arch_kwargs={"width": 4})
    assert torch.equal(logits(loaded.model), logits(reference))
    assert loaded.model.mean == pytest.approx((0.45, 0.5, 0.55))  # the file's normaliser, not the spec's
    assert loaded.card.to_dict()["source"]["format"] == "robustness"
    assert loaded.card.to_dict()["source"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert loaded.card.to_dict()["dataset"] == "tiny" and loaded.card.to_dict()["class_names"] == ["a", "b", "c"]


def test_robustbench_style_state_dict_with_module_prefix(tmp_path):
    reference = tiny_model(seed=4)
    state = {f"module.{k[len('net.'):]}": v for k, v in reference.state_dict().items() if k.startswith("net.")}
    torch.save(state, tmp_path / "rb.pt")
    for fmt in ("auto", "robustbench", "plain"):
        loaded = ckpt.import_checkpoint(tmp_path / "rb.pt", "small_cnn", SPEC, fmt=fmt, arch_kwargs={"width": 4})
        assert torch.equal(logits(loaded.model), logits(reference))


def test_torchvision_state_dict_imports_into_resnet18(tmp_path):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=3).eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    spec = SPEC._replace(input_shape=(3, 32, 32))
    loaded = ckpt.import_checkpoint(tmp_path / "tv.pth", "resnet18", spec, fmt="torchvision")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = tv((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
        assert torch.allclose(loaded.model(x), expected, atol=1e-6)


def test_import_with_dest_writes_our_format(tmp_path):
    reference = tiny_model(seed=6)
    torch.save(reference.state_dict(), tmp_path / "ours.pt")  # a full Classifier state dict
    loaded = ckpt.import_checkpoint(tmp_path / "ours.pt", "small_cnn", SPEC, arch_kwargs={"width": 4},
                                    dest=tmp_path / "out" / "converted")
    assert loaded.path == tmp_path / "out" / "converted.safetensors"
    again = ckpt.load(loaded.path)
    assert torch.equal(logits(again.model), logits(reference))
    assert again.sha256 == loaded.sha256 and again.card.to_dict()["name"] == "converted"


def test_import_mismatch_names_keys(tmp_path):
    torch.save(tiny_model().net.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError) as info:
        ckpt.import_checkpoint(tmp_path / "w.pt", "small_cnn", SPEC, arch_kwargs={"width": 8})
    assert "net.block2.0.weight: file (8, 4, 3, 3) vs model (16, 8, 3, 3)" in str(info.value)
    with pytest.raises(CheckpointError) as info:
        ckpt.import_checkpoint(tmp_path / "w.pt", "cifar_resnet", SPEC, arch_kwargs={"depth": 8})
    assert "missing keys: net.layer1.0.bn1.bias" in str(info.value)
    assert "unexpected keys: net.block1.0.weight" in str(info.value)


def test_import_refuses_bad_requests_and_corrupt_files(tmp_path):
    torch.save(tiny_model().net.state_dict(), tmp_path / "w.pt")
    with pytest.raises(InvalidParameterError, match="unknown checkpoint format"):
        ckpt.import_checkpoint(tmp_path / "w.pt", "small_cnn", SPEC, fmt="caffe")
    (tmp_path / "bad.pt").write_bytes((tmp_path / "w.pt").read_bytes()[:200])
    with pytest.raises(CheckpointError) as info:
        ckpt.import_checkpoint(tmp_path / "bad.pt", "small_cnn", SPEC, arch_kwargs={"width": 4})
    assert not isinstance(info.value, UnsafeCheckpointError)
    torch.save({"epoch": 3}, tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no tensors"):
        ckpt.import_checkpoint(tmp_path / "empty.pt", "small_cnn", SPEC)


def test_import_by_dataset_name_uses_engine_data(tmp_path):
    data = pytest.importorskip("engine.data")
    spec = data.get_spec("shapes")
    torch.manual_seed(0)
    reference = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=4).eval()
    torch.save(reference.net.state_dict(), tmp_path / "s.pt")
    loaded = ckpt.import_checkpoint(tmp_path / "s.pt", "small_cnn", "shapes", arch_kwargs={"width": 4})
    x = torch.rand(2, *spec.input_shape)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), reference(x))
    assert loaded.card.to_dict()["class_names"] == list(spec.class_names)


# --- unsafe pickles ---------------------------------------------------------------------------


class Payload:
    """Unpickling this object runs code that creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').close()",))


def malicious_file(tmp_path) -> tuple[Path, Path, torch.nn.Module]:
    model = tiny_model(seed=7)
    marker = tmp_path / "PWNED"
    src = tmp_path / "evil.pt"
    torch.save({"model": model.state_dict(), "args": Payload(marker)}, src)
    return src, marker, model


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    src, marker, _ = malicious_file(tmp_path)
    with pytest.raises(UnsafeCheckpointError) as info:
        ckpt.import_checkpoint(src, "small_cnn", SPEC, arch_kwargs={"width": 4})
    message = str(info.value)
    assert "--allow-pickle" in message and "arbitrary code" in message and "exec" in message
    assert not marker.exists()
    # our own loader refuses it too, when such a file sits beside a card
    _, path = saved(tmp_path)
    card = json.loads(path.with_suffix(".json").read_text())
    card.pop("weights_sha256")
    (tmp_path / "evil.json").write_text(json.dumps(card))
    with pytest.raises(UnsafeCheckpointError):
        ckpt.load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_allow_pickle_is_an_explicit_opt_in(tmp_path):
    src, marker, model = malicious_file(tmp_path)
    loaded = ckpt.import_checkpoint(src, "small_cnn", SPEC, allow_pickle=True, arch_kwargs={"width": 4})
    assert marker.exists()  # the payload is real: with the opt-in, the file's code does run
    assert torch.equal(logits(loaded.model), logits(model))
    assert os.path.getsize(marker) == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_load_onto_cuda(tmp_path):
    model, path = saved(tmp_path)
    loaded = ckpt.load(path, device="cuda")
    assert next(loaded.model.parameters()).is_cuda
    torch.manual_seed(5)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x.cuda()).cpu(), model(x), atol=1e-5)


# --- torch-free card and files (engine.checkpoints.card / .files) -----------------------------


def test_card_and_files_modules_import_no_torch():
    import subprocess
    import sys

    code = ("import engine.checkpoints.card, engine.checkpoints.files, engine.checkpoints, engine.catalogue, sys; "
            "engine.checkpoints.ModelCard, engine.checkpoints.checkpoint_files; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))[:5]")
    repo = Path(__file__).resolve().parents[3]
    run = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_weight_suffixes_are_defined_once():
    from engine.checkpoints import files, safe_io

    assert store.WEIGHT_SUFFIXES is files.WEIGHT_SUFFIXES is ckpt.WEIGHT_SUFFIXES
    assert files.WEIGHT_SUFFIXES == (safe_io.SAFETENSORS_SUFFIX, *safe_io.TORCH_SUFFIXES)
    assert safe_io.sha256_file is files.sha256_file and store.checkpoint_paths is files.checkpoint_files


@pytest.mark.parametrize("form", ["stem", "safetensors", "json"])
def test_checkpoint_files_card_and_sha256_without_loading(tmp_path, form):
    from engine.checkpoints.files import checkpoint_files, read_card_file, weights_sha256

    _, path = saved(tmp_path, training={"method": "pgd", "eps": 0.1})
    arg = {"stem": tmp_path / "m", "safetensors": path, "json": path.with_suffix(".json")}[form]
    assert checkpoint_files(arg) == (path, path.with_suffix(".json"))
    card = read_card_file(checkpoint_files(arg)[1])
    assert card == ckpt.load(arg).card and card.training.method == "pgd"
    assert weights_sha256(arg) == hashlib.sha256(path.read_bytes()).hexdigest()
    edit_card(path, weights_sha256=None)  # no recorded hash: the file is hashed
    assert weights_sha256(arg) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_checkpoint_files_and_read_card_file_refuse_missing_and_oversized(tmp_path):
    from engine.checkpoints.card import MAX_CARD_BYTES
    from engine.checkpoints.files import checkpoint_files, read_card_file

    _, path = saved(tmp_path)
    with pytest.raises(CheckpointError, match="weights file .* is missing"):
        checkpoint_files(tmp_path / "m.pt")  # the named weights file does not exist
    with pytest.raises(CheckpointError, match="no model card"):
        checkpoint_files(tmp_path / "other")
    big = tmp_path / "big.json"
    big.write_bytes(b" " * (MAX_CARD_BYTES + 1))
    with pytest.raises(CheckpointError, match="GiB|MiB|bytes"):
        read_card_file(big)
    path.unlink()
    with pytest.raises(CheckpointError, match="weights file"):
        checkpoint_files(tmp_path / "m")


# --- the recipe stored once, the attack record in one layout ---------------------------------


def _config(**over) -> dict:
    config = {"dataset": "shapes", "dataset_options": {}, "arch": "small_cnn", "arch_kwargs": {}, "method": "pgd",
              "norm": "linf", "eps": 0.1, "steps": 5, "alpha": None, "trades_beta": 6.0, "epochs": 3,
              "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0005,
              "schedule": "cosine", "warmup_epochs": 0.0, "seed": 1, "device": "auto", "amp": True,
              "train_size": None, "eval_size": 64, "eval_steps": 5, "name": None, "snapshot_every": 0}
    return {**config, **over}


@pytest.mark.parametrize("method, steps, alpha", [("pgd", 5, 2.5 * 0.1 / 5), ("standard", 0, 2.5 * 0.1),
                                                  ("fast", 1, 1.25 * 0.1)])
def test_a_training_recipe_is_stored_once_and_read_typed(method, steps, alpha):
    from engine.checkpoints import ModelCard

    config = _config(method=method)
    card = ModelCard.from_dict({**_structure(), "training": {"config": config, "status": "done"}})
    recipe = card.training
    assert (recipe.method, recipe.norm, recipe.eps, recipe.steps, recipe.alpha, recipe.epochs, recipe.seed) == \
        (method, "linf", 0.1, steps, pytest.approx(alpha), 3, 1)
    assert recipe.bn_mode == "single" and recipe.config == config and recipe.extra == {"status": "done"}
    assert card.to_dict()["training"] == {"status": "done", "config": config}  # nothing written twice
    assert ModelCard.from_dict(card.to_dict()).training == card.training


def test_old_training_cards_with_the_recipe_twice_read_the_same():
    from engine.checkpoints import ModelCard

    config = _config(method="advprop", steps=3)
    flat = {"method": "advprop", "norm": "linf", "eps": 0.1, "steps": 3, "alpha": 2.5 * 0.1 / 3, "trades_beta": None,
            "epochs": 3, "epochs_completed": 3, "batch_size": 32, "optimizer": "sgd", "lr": 0.05, "momentum": 0.9,
            "weight_decay": 0.0005, "schedule": "cosine", "seed": 1,
            "bn_mode": "dual (main for clean, aux for adversarial; evaluate with main)",
            "attack_mode": "eval-mode BN while crafting", "status": "done", "config": config}
    old = ModelCard.from_dict({**_structure(), "training": flat})
    new = ModelCard.from_dict({**_structure(), "training": {"config": config, "epochs_completed": 3, "status": "done",
                                                            "attack_mode": "eval-mode BN while crafting"}})
    assert old.training == new.training and old.describe_recipe() == "advprop ℓ∞ ε=0.1"
    # a field that says something else than the config is kept (and wins)
    odd = ModelCard.from_dict({**_structure(), "training": {"config": config, "eps": 0.2}})
    assert odd.training.eps == 0.2 and odd.to_dict()["training"] == {"eps": 0.2, "config": config}


def test_attack_record_is_written_in_one_layout_and_read_in_both():
    from engine.checkpoints import AttackRecord, ModelCard

    written = AttackRecord("pgd", {"eps": 0.1, "steps": 10, "norm": "linf"}).to_dict()
    assert written == {"attack": "pgd", "eps": 0.1, "steps": 10, "norm": "linf"}
    legacy = {"name": "PGD", "eps": 0.1, "steps": 10, "norm": "linf"}
    for layout in (written, legacy):
        card = ModelCard.from_dict({**_structure(), "metrics": {"attack": layout}})
        assert card.metrics.attack.label() == "PGD-10 ℓ∞ ε=0.1" and card.to_dict()["metrics"]["attack"] == written


def _structure() -> dict:
    return {"arch": "small_cnn", "num_classes": 3, "input_shape": [3, 16, 16], "mean": MEAN, "std": STD}


def test_an_imported_recipe_is_named_from_its_source():
    from engine.checkpoints.card import ModelCard

    base = {"arch": "small_cnn", "num_classes": 10, "input_shape": [1, 28, 28], "mean": [0.5], "std": [0.5],
            "dataset": "mnist", "training": {"method": "unknown", "note": "imported"}}
    assert ModelCard.from_dict(base).describe_recipe() == "imported"
    zoo = ModelCard.from_dict({**base, "source": {"format": "robustbench", "robustbench": {"threat": "corruptions"}}})
    assert zoo.describe_recipe() == "imported (RobustBench corruptions)"
    assert ModelCard.from_dict({**base, "training": {"method": "adversarial", "norm": "linf", "eps": 0.03}}
                               ).describe_recipe() == "adversarial ℓ∞ ε=0.03"
