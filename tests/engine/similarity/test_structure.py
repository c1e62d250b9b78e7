"""Block-structure score, CKA across epochs from training snapshots, AdvProp branches."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import engine
from engine import checkpoints as ckpt
from engine.cli import main
from engine.errors import InvalidParameterError
from engine.models import bn_branch, build_model, use_branch
from engine.similarity.structure import block_contrast, block_structure, cka_across_epochs, mean_off_diagonal
from engine.training import TrainConfig, train
from engine.training.state import list_snapshots
from factories import advprop_model


def block_map(sizes, within=0.9, between=0.2):
    label = np.repeat(np.arange(len(sizes)), sizes)
    m = np.where(label[:, None] == label[None, :], within, between)
    np.fill_diagonal(m, 1.0)
    return m


def smooth_map(n, scale=4.0):
    i = np.arange(n)
    return np.exp(-np.abs(i[:, None] - i[None, :]) / scale)


def test_block_score_higher_for_block_diagonal_than_smooth_map():
    blocky, smooth = block_structure(block_map([4, 5, 3])), block_structure(smooth_map(12))
    assert blocky.blocks == (4, 5, 3)
    assert blocky.score == pytest.approx(0.7) and blocky.within == pytest.approx(0.9)
    assert smooth.score < blocky.score - 0.2
    assert block_structure(np.full((6, 6), 0.5) + 0.5 * np.eye(6)).score == pytest.approx(0.0)


def test_mean_off_diagonal_and_contrast_are_exact():
    m = np.array([[1.0, 0.2, 0.4], [0.2, 1.0, 0.6], [0.4, 0.6, 1.0]])
    assert mean_off_diagonal(m) == pytest.approx((0.2 + 0.4 + 0.6) / 3)
    contrast, within, between = block_contrast(m, [2, 1])
    assert (within, between) == (pytest.approx(0.2), pytest.approx(0.5)) and contrast == pytest.approx(-0.3)
    with pytest.raises(InvalidParameterError):
        block_structure(np.eye(3))
    with pytest.raises(InvalidParameterError):
        block_contrast(m, [2, 2])


def _config(**kw):
    base = dict(dataset="shapes", dataset_options={"n": 64}, arch="small_cnn",
                arch_kwargs={"width": 4, "hidden": 8}, method="standard", epochs=3, batch_size=32,
                optimizer="adamw", lr=3e-3, eval_size=16, eval_steps=1, device="cpu", name="snap",
                snapshot_every=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("snap")
    train(_config(), run_dir=root / "run", checkpoint_dir=root / "ckpts")
    return root / "run"


def test_snapshots_are_kept_and_loadable(run_dir, tmp_path):
    snaps = list_snapshots(run_dir)
    assert [e for e, _ in snaps] == [1, 2, 3]
    models = [engine.load(stem).model for _, stem in snaps]
    x = torch.rand(2, 3, 32, 32)
    assert not torch.equal(models[0](x), models[-1](x))
    without = tmp_path / "plain"
    train(_config(snapshot_every=0), run_dir=without, checkpoint_dir=tmp_path / "c")
    assert len(list_snapshots(without)) <= 2  # only the last and the best


def test_across_epochs_matrix_shape_and_unit_final_row(run_dir):
    from engine.data import load_dataset

    data = load_dataset("shapes", split="test", n=40)
    snaps = [(e, engine.load(stem).model) for e, stem in list_snapshots(run_dir)]
    final = cka_across_epochs(snaps, data, n=40, batch_size=20)
    assert final.matrix.shape == (3, len(final.layers)) and final.epochs == (1, 2, 3)
    np.testing.assert_allclose(final.matrix[-1], 1.0, atol=1e-9)
    assert (final.matrix[:-1] < 1.0 - 1e-6).any()
    consecutive = cka_across_epochs(snaps, data, n=40, batch_size=20, reference="consecutive")
    assert consecutive.matrix.shape == (2, len(final.layers)) and consecutive.epochs == (2, 3)
    with pytest.raises(InvalidParameterError):
        cka_across_epochs(snaps[:1], data)


def test_cli_cka_run_prints_each_run(run_dir, capsys):
    assert main(["cka", "--run", str(run_dir), "--run", str(run_dir), "--n", "20", "--batch-size", "10",
                 "--reference", "consecutive", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["dataset"] == "shapes" and len(report["runs"]) == 2
    first = report["runs"][0]
    assert first["epochs"] == [2, 3] and np.array(first["matrix"]).shape == (2, len(first["layers"]))
    assert main(["cka", "--run", str(run_dir / "nope"), "--n", "20", "--json"]) == 2
    assert "no training run" in capsys.readouterr().err


def _advprop_model(seed=0):
    return advprop_model(3, (3, 16, 16), seed)


def test_branch_choice_changes_outputs_and_never_the_other_branch(tmp_path):
    model = _advprop_model()
    path = ckpt.save_checkpoint(model, ckpt.make_card(model, "tiny", name="adv"), tmp_path / "adv")
    main_b, aux_b = engine.load(path), engine.load(path, bn_branch="aux")
    x = torch.rand(4, 3, 16, 16)
    assert aux_b.branch == "aux" and not torch.allclose(main_b.model(x), aux_b.model(x))
    with bn_branch(model, "aux"):
        assert torch.equal(aux_b.model(x), model(x))
    before = {k: v.clone() for k, v in aux_b.model.state_dict().items() if ".main." in k}
    aux_b.model.train()
    aux_b.model(torch.rand(8, 3, 16, 16))  # training-mode pass through the aux branch only
    after = {k: v for k, v in aux_b.model.state_dict().items() if ".main." in k}
    assert all(torch.equal(before[k], after[k]) for k in before)
    plain = build_model("small_cnn", 3, (3, 16, 16), [0.5] * 3, [0.25] * 3, width=4, hidden=8)
    with pytest.raises(InvalidParameterError, match="no dual BatchNorm"):
        use_branch(plain, "aux")


def test_cli_cka_between_branches_of_one_model(tmp_path, capsys, monkeypatch):
    model = advprop_model(8, (3, 32, 32))
    path = ckpt.save_checkpoint(model, ckpt.make_card(model, "shapes", name="adv"), tmp_path / "adv")
    assert main(["cka", "--a", str(path), "--b", str(path), "--a-branch", "main", "--b-branch", "aux",
                 "--n", "24", "--batch-size", "12", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["a_branch"] == "main" and report["b_branch"] == "aux"
    across = np.array(report["across"]["matrix"])
    assert (np.abs(np.diag(across) - 1.0) > 1e-6).any(), "the two branches represent images differently"
    assert main(["cka", "--a", str(path), "--b", str(path), "--b-branch", "aux", "--n", "24", "--json"]) == 0


def test_evaluate_records_the_aux_branch_apart(tmp_path, capsys):
    model = advprop_model(6, (3, 32, 32))
    card = ckpt.make_card(model, "shapes", name="adv", metrics={"clean_acc": 0.5})
    path = ckpt.save_checkpoint(model, card, tmp_path / "adv")
    assert main(["evaluate", "--checkpoint", str(path), "--bn-branch", "aux", "--json", "--record"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bn_branch"] == "aux"
    saved = ckpt.read_card(path.with_suffix(".json"))
    assert saved.metrics.clean_acc == 0.5, "the headline (main-branch) figure is kept"
    assert saved.metrics.extra["branches"]["aux"]["clean_acc"] == report["clean_acc"]
    plain = build_model("small_cnn", 6, (3, 32, 32), [0.5] * 3, [0.25] * 3, width=4, hidden=8)
    other = ckpt.save_checkpoint(plain.eval(), ckpt.make_card(plain, "shapes", name="p"), tmp_path / "p")
    assert main(["evaluate", "--checkpoint", str(other), "--bn-branch", "aux"]) == 2
    assert "no dual BatchNorm" in capsys.readouterr().err


def test_branch_comparison_rows_differ_by_branch(tmp_path):
    from types import SimpleNamespace

    from engine.attacks import make_attack
    from engine.generalisation.advprop import compare_branches, comparison_entries

    model = _advprop_model()
    path = ckpt.save_checkpoint(model, ckpt.make_card(model, "tiny", name="adv", training={"method": "advprop"}),
                                tmp_path / "adv")
    infos = ckpt.list_checkpoints(tmp_path)
    entries = comparison_entries(infos, str(path))
    assert [(e.label, e.branch) for e in entries] == [("adv (main BN)", "main"), ("adv (aux BN)", "aux")]
    with pytest.raises(InvalidParameterError, match="not an AdvProp"):
        comparison_entries([SimpleNamespace(path=path, name="adv", card=ckpt.read_card(path.with_suffix(".json")).replace(dual_bn=False))], str(path))
    models = {e.label: engine.load(e.path, bn_branch=e.branch).model for e in entries}
    torch.manual_seed(0)
    images, labels = torch.rand(12, 3, 16, 16), torch.randint(0, 3, (12,))
    table = compare_branches(models, images, labels, make_attack("pgd", "shapes", steps=2),
                             distortions=["gaussian_blur"])
    assert list(table["model"]) == ["adv (main BN)", "adv (aux BN)"] and (table["images"] == 12).all()


def test_block_layers_expand_stages_of_repeated_blocks_only():
    from engine.models import block_layers, default_layers, list_layers

    resnet = build_model("cifar_resnet", 6, (3, 32, 32), [0.5] * 3, [0.25] * 3, depth=14)
    names = block_layers(resnet)
    assert names == ["net.stem", "net.layer1.0", "net.layer1.1", "net.layer2.0", "net.layer2.1",
                     "net.layer3.0", "net.layer3.1", "net.fc"]
    assert set(names) <= {info.name for info in list_layers(resnet)}
    cnn = build_model("small_cnn", 6, (3, 32, 32), [0.5] * 3, [0.25] * 3)
    assert block_layers(cnn) == default_layers(cnn)  # conv-BN-ReLU stages are not repeated blocks
