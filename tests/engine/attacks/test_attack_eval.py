"""Robustness evaluation and the attack CLIs, checked against an independent PGD written here."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from engine import checkpoints as ckpt
from engine.attacks import FGSM, PGD, eps_sweep, minimal_perturbation, robust_accuracy, transfer_matrix
from engine.cli import main as cli_main
from engine.data import get_spec, load_dataset, take
from engine.models import build_model

EPS = 4 / 255
N = 100


@pytest.fixture(scope="module")
def shapes_data():
    return take(load_dataset("shapes"), N)


def _train_tiny(seed: int, images, labels, steps: int = 150):
    """A width-4 small_cnn on shapes, briefly trained (seeded) so robust accuracy is not trivial."""
    spec = get_spec("shapes")
    torch.manual_seed(seed)
    model = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=4, hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for i in range(steps):
        idx = torch.arange(i % 4, len(images), 4)
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    train_x, train_y = take(load_dataset("shapes", split="train"), 512, seed=1)
    models = {"a": _train_tiny(0, train_x, train_y), "b": _train_tiny(1, train_x, train_y)}
    folder = tmp_path_factory.mktemp("ckpt")
    paths = {k: ckpt.save_checkpoint(m, ckpt.make_card(m, "shapes"), folder / f"tiny_{k}") for k, m in models.items()}
    return models, paths


def independent_pgd_accuracy(model, x, y, eps, steps, alpha):
    """Madry et al.'s ℓ∞ PGD from the clean image, written from the definition (no engine code)."""
    adv = x.clone()
    for _ in range(steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(model(adv), y)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = adv.detach() + alpha * grad.sign()
        adv = torch.min(torch.max(adv, x - eps), x + eps).clamp(0, 1)
    with torch.no_grad():
        return float((model(adv).argmax(1) == y).float().mean())


def test_robust_accuracy_agrees_with_independent_pgd(trained, shapes_data):
    model = trained[0]["a"]
    x, y = shapes_data
    res = robust_accuracy(model, x, y, PGD(eps=EPS, steps=10, random_start=False), batch_size=32)
    ours = independent_pgd_accuracy(model, x, y, EPS, 10, 2.5 * EPS / 10)
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    assert res.clean_acc == pytest.approx(clean)
    assert clean > 0.4 and res.robust_acc < clean, (clean, res.robust_acc, ours)  # a real model and attack
    assert abs(res.robust_acc - ours) <= 0.01
    assert res.n == N and res.config["steps"] == 10 and res.seconds > 0


def test_cli_evaluate_reports_robust_accuracy(trained, shapes_data, capsys):
    model, path = trained[0]["a"], trained[1]["a"]
    code = cli_main(["evaluate", "--checkpoint", str(path), "--dataset", "shapes", "--n", str(N),
                     "--attack", "pgd", "--eps", str(EPS), "--steps", "10", "--no-random-start", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    x, y = shapes_data
    ours = independent_pgd_accuracy(model, x, y, EPS, 10, 2.5 * EPS / 10)
    assert abs(report["robust_acc"] - ours) <= 0.01
    assert report["attack"]["eps"] == pytest.approx(EPS) and report["attack"]["attack"] == "pgd"
    assert {"clean_acc", "seconds", "attack_seconds"} <= set(report)


def test_cli_attack_writes_npz(trained, tmp_path, capsys):
    out = tmp_path / "adv.npz"
    code = cli_main(["attack", "--checkpoint", str(trained[1]["b"]), "--dataset", "shapes", "--attack", "pgd",
                     "--norm", "linf", "--eps", "0.05", "--steps", "3", "--n", "10", "--out", str(out), "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    data = np.load(out)
    assert data["x"].shape == data["x_adv"].shape == (10, 3, 32, 32)
    assert np.abs(data["x_adv"] - data["x"]).max() <= 0.05 + 1e-6
    assert data["labels"].shape == data["preds"].shape == (10,)
    assert summary["robust_acc"] == pytest.approx(float((data["preds"] == data["labels"]).mean()))


def test_cli_bad_parameters_exit_2(trained, tmp_path, capsys):
    code = cli_main(["attack", "--checkpoint", str(trained[1]["a"]), "--eps", "-1", "--n", "2",
                     "--out", str(tmp_path / "x.npz")])
    assert code == 2 and "epsilon must be" in capsys.readouterr().err
    code = cli_main(["evaluate", "--checkpoint", str(trained[1]["a"]), "--n", "2", "--attack", "lbfgs",
                     "--eps", "0.1"])
    assert code == 2 and "does not take eps" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_eps_sweep_and_transfer(trained, shapes_data):
    models = trained[0]
    x, y = shapes_data[0][:40], shapes_data[1][:40]
    sweep = eps_sweep(models, x, y, "pgd", [0.0, 2 / 255, 16 / 255], params={"steps": 5, "random_start": False})
    for name, accs in sweep.accuracy.items():
        with torch.no_grad():
            clean = float((models[name](x).argmax(1) == y).float().mean())
        assert accs[0] == pytest.approx(clean) and accs[-1] < accs[0]
    assert len(sweep.rows()) == 6
    fgsm = FGSM(eps=8 / 255)
    tm = transfer_matrix(models, x, y, fgsm)
    for i, name in enumerate(tm.names):
        white_box = robust_accuracy(models[name], x, y, fgsm).robust_acc
        assert tm.accuracy[i][i] == pytest.approx(white_box)
    assert all(0.0 <= v <= 1.0 for row in tm.fooling for v in row)


def test_minimal_perturbation_pgd_bisection_is_consistent(trained, shapes_data):
    model = trained[0]["a"]
    x, y = shapes_data[0][:16], shapes_data[1][:16]
    mp = minimal_perturbation(model, x, y, method="pgd", norm="linf", eps_max=0.2, bisection_steps=5, steps=5)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert bool((mp.norms[~correct] == 0).all())
    found = mp.found & correct
    assert int(found.sum()) >= 1 and bool((mp.norms[found] <= 0.2).all())
    # the reported radius is one at which PGD did succeed
    eps = mp.norms[found]
    adv_ok = []
    for xi, yi, e in zip(x[found], y[found], eps):
        adv_ok.append(bool(PGD(eps=float(e), steps=5, random_start=False)(model, xi[None], yi[None]).success))
    assert all(adv_ok)
    df = minimal_perturbation(model, x, y, method="deepfool")
    assert bool(torch.isfinite(df.norms[correct]).all())


def test_robust_accuracy_progress_and_stop(trained, shapes_data):
    x, y = shapes_data
    seen = []
    res = robust_accuracy(trained[0]["a"], x, y, PGD(eps=EPS, steps=2), batch_size=25,
                          progress=lambda d, t: seen.append((d, t)), should_stop=lambda: len(seen) >= 2)
    assert res.stopped and res.n == 50 and seen == [(25, N), (50, N)]


def test_cli_evaluate_record_writes_full_test_figures_into_the_card(trained, tmp_path, capsys):
    import shutil

    for suffix in (".safetensors", ".json"):
        shutil.copy(trained[1]["a"].with_suffix(suffix), tmp_path / f"rec{suffix}")
    stem = tmp_path / "rec"
    weights_before = (tmp_path / "rec.safetensors").read_bytes()
    argv = ["evaluate", "--checkpoint", str(stem), "--attack", "pgd", "--eps", str(EPS), "--steps", "2",
            "--record", "--json"]
    assert cli_main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    card = engine.load(stem).card.to_dict()
    metrics = card["metrics"]
    assert report["n"] == len(load_dataset("shapes")) == metrics["n_test"]  # the whole test split
    assert metrics["clean_acc"] == report["clean_acc"] and metrics["robust_acc"] == report["robust_acc"]
    assert metrics["attack"]["steps"] == 2 and "--record" not in metrics["measured_with"]
    assert metrics["measured_with"].startswith("python -m engine evaluate --checkpoint")
    assert (tmp_path / "rec.safetensors").read_bytes() == weights_before
    assert not list(tmp_path.glob(".*.tmp"))
    # a subset is refused, and the card is left as it was
    assert cli_main(["evaluate", "--checkpoint", str(stem), "--n", "10", "--record"]) == 2
    assert "whole test split" in capsys.readouterr().err
    assert engine.load(stem).card.to_dict() == card
