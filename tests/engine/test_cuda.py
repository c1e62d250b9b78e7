"""CUDA paths: attacks, AutoAttack, training (AMP), CKA and the recorded evaluate on a GPU, each
checked against the same call on the CPU. Skipped on machines without CUDA (CI); run on a GPU with
``python -m pytest tests/engine/test_cuda.py`` (bench/gpu_zoo.sh does, first)."""
from __future__ import annotations

import json

import pytest
import torch

import engine
from engine import checkpoints as ckpt
from engine.attacks import AutoAttack, evaluate_autoattack, make_attack
from engine.cli import main as cli_main
from engine.data import get_spec, load_dataset, take
from engine.models import build_model
from engine.similarity.cka import compare_models
from engine.training import TrainConfig, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

EPS = 0.1
FAMILY = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square", "deepfool", "cw")


@pytest.fixture(scope="module")
def shapes():
    """Sixty-four seeded shapes test images (3x16x16) and their labels."""
    images, labels = take(load_dataset("shapes", split="test", n=64, image_size=16), 64)
    return images, labels


def small_model(seed: int = 0, side: int = 16) -> torch.nn.Module:
    spec = get_spec("shapes")
    torch.manual_seed(seed)
    return build_model("small_cnn", spec.num_classes, (3, side, side), spec.mean, spec.std, width=8, hidden=32)


@pytest.mark.parametrize("name", FAMILY)
def test_attack_on_cuda_stays_in_ball_and_restores_the_model(name, shapes):
    images, labels = shapes
    model = small_model().cuda().train()
    attack = make_attack(name, "shapes", eps=EPS) if name not in ("deepfool", "cw") else make_attack(name, "shapes")
    res = attack(model, images.cuda(), labels.cuda())
    assert res.adv.is_cuda and res.adv.shape == images.shape
    assert float(res.adv.min()) >= 0.0 and float(res.adv.max()) <= 1.0
    if name not in ("deepfool", "cw"):
        assert float((res.adv - images.cuda()).abs().amax()) <= EPS + 1e-6
    assert model.training and next(model.parameters()).is_cuda
    with torch.no_grad():
        assert torch.equal(model.eval()(res.adv).argmax(1), res.preds_adv)


def test_autoattack_on_cuda_agrees_with_cpu_and_moves_the_model_back(shapes):
    images, labels = shapes
    model = small_model(1).eval()
    attack = AutoAttack(eps=EPS, norm="linf", version="standard", seed=0)
    on_gpu = evaluate_autoattack(model, images, labels, attack, batch_size=32, device="cuda")
    assert next(model.parameters()).device.type == "cpu"
    on_cpu = evaluate_autoattack(model, images, labels, attack, batch_size=32, device="cpu")
    assert on_gpu.clean_acc == on_cpu.clean_acc
    assert abs(on_gpu.robust_acc - on_cpu.robust_acc) <= 2 / 64, (on_gpu.robust_acc, on_cpu.robust_acc)
    assert [s["attack"] for s in on_gpu.per_attack] == [s["attack"] for s in on_cpu.per_attack]
    assert float((on_gpu.adv - images).abs().amax()) <= EPS + 1e-6


@pytest.mark.parametrize("method,amp", [("pgd", True), ("trades", False), ("advprop", True)])
def test_training_on_cuda_publishes_a_checkpoint_that_loads_on_cpu(method, amp, tmp_path):
    config = TrainConfig(dataset="shapes", dataset_options={"n": 128, "image_size": 16}, arch="small_cnn",
                         arch_kwargs={"width": 8, "hidden": 32}, method=method, epochs=2, batch_size=32,
                         optimizer="adamw", lr=3e-3, weight_decay=0.0, eval_size=32, eval_steps=3, steps=3,
                         eps=8 / 255, device="cuda", amp=amp, seed=0, name=f"cuda_{method}")
    result = train(config, run_dir=tmp_path / "run")
    assert result.status == "done" and result.epochs_completed == 2
    on_cpu = ckpt.load(result.checkpoint, device="cpu")
    on_gpu = ckpt.load(result.checkpoint, device="cuda")
    x = torch.rand(8, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(on_gpu.model(x.cuda()).cpu(), on_cpu.model(x), atol=1e-4)
    assert on_cpu.card.to_dict()["training"]["config"]["device"] == "cuda"


def test_cka_on_cuda_equals_cpu(shapes):
    images, labels = shapes
    a, b = small_model(0).eval(), small_model(1).eval()
    data = torch.utils.data.TensorDataset(images, labels)
    cpu = compare_models(a, b, data, batch_size=32)
    gpu = compare_models(a.cuda(), b.cuda(), data, batch_size=32)
    for part in ("within_a", "within_b", "across"):
        mine, theirs = getattr(cpu, part), getattr(gpu, part)
        assert mine.rows == theirs.rows and mine.cols == theirs.cols
        assert abs(mine.matrix - theirs.matrix).max() < 1e-3, part


def test_evaluate_record_on_cuda_names_the_gpu(tmp_path, capsys):
    net = small_model(2, side=32)
    card = ckpt.make_card(net, "shapes", name="gpu", training={"method": "pgd", "norm": "linf", "eps": EPS},
                          metrics={"clean_acc": 0.2, "robust_acc": 0.1, "n_test": 512})
    path = ckpt.save_checkpoint(net.eval(), card, tmp_path / "gpu")
    argv = ["evaluate", "--checkpoint", str(path), "--attack", "autoattack", "--eps", str(EPS), "--n", "16",
            "--device", "cuda", "--json", "--record"]
    assert cli_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["device"].startswith("cuda") and out["device_name"] == torch.cuda.get_device_name(0)
    recorded = engine.load(path).card.to_dict()["metrics"]["autoattack"]
    assert recorded["device_name"] == out["device_name"] and recorded["torch"] == torch.__version__
