"""Attacks: ε-ball/box properties, monotone success, targeted success, L-BFGS vs FGSM, DeepFool
against the exact linear answer, state restoration, errors, images and NPZ export."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from engine import images as eimages
from engine.attacks import (
    ATTACKS, CW, FGSM, LBFGS, PGD, STEPS, AttackCancelled, DeepFool, default_params, make_attack,
)
from engine.attacks.export import result_arrays, result_rows, save_npz
from engine.errors import InvalidParameterError

SHAPE = (1, 6, 6)
K = 4


class Linear(nn.Module):
    """A seeded linear classifier on (1, 6, 6) images with the Classifier attributes."""

    def __init__(self, seed=0, scale=1.0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(36, K)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(K, 36, generator=g) * scale)
            self.fc.bias.copy_(torch.randn(K, generator=g) * 0.1)
        self.input_shape, self.num_classes = SHAPE, K

    def forward(self, x):
        return self.fc(x.flatten(1))


class TinyConv(nn.Module):
    """Conv + BatchNorm + ReLU + linear: a non-linear toy with BN state to protect."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(4 * 36, K)
        self.input_shape, self.num_classes = SHAPE, K

    def forward(self, x):
        return self.fc(self.relu(self.bn(self.conv(x))).flatten(1))


def batch(model, n=12, seed=0, lo=0.0, hi=1.0):
    """Seeded images in [lo, hi] labelled with the model's own predictions (clean accuracy 1)."""
    g = torch.Generator().manual_seed(seed)
    x = lo + (hi - lo) * torch.rand(n, *SHAPE, generator=g)
    with torch.no_grad():
        y = model.eval()(x).argmax(dim=1)
    return x, y


@settings(max_examples=12, deadline=None)
@given(norm=st.sampled_from(sorted(STEPS)), eps=st.floats(0.0, 1.0), random_start=st.booleans(),
       steps=st.integers(1, 4))
def test_pgd_stays_in_ball_and_box(norm, eps, random_start, steps):
    model = Linear()
    x, y = batch(model, 6)
    r = PGD(eps=eps, steps=steps, norm=norm, random_start=random_start)(model, x, y)
    assert float(r.adv.min()) >= 0.0 and float(r.adv.max()) <= 1.0
    measured = r.linf_norm if norm == "linf" else r.l2_norm
    assert float(measured.max()) <= eps + 1e-5
    assert torch.allclose(r.perturbation, r.adv - x)


@settings(max_examples=6, deadline=None)
@given(eps=st.floats(0.0, 1.0))
def test_fgsm_is_one_signed_step_of_eps(eps):
    model = Linear()
    x, y = batch(model, 6)
    r = FGSM(eps=eps)(model, x, y)
    xg = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(xg), y, reduction="sum").backward()
    expected = (x + eps * xg.grad.sign()).clamp(0, 1)
    assert torch.allclose(r.adv, expected, atol=1e-6)


def test_success_rises_with_eps():
    model = TinyConv()
    x, y = batch(model, 32)
    rates = [float(PGD(eps=e, steps=10, random_start=False)(model, x, y).success.float().mean())
             for e in (0.0, 0.01, 0.03, 0.1, 0.3)]
    assert rates[0] == 0.0
    assert all(b >= a for a, b in zip(rates, rates[1:])), rates
    assert rates[-1] > 0.9


@pytest.mark.parametrize("attack", [PGD(eps=0.5, steps=30, targeted=True), CW(targeted=True, steps=60),
                                    LBFGS(max_iter=20, search_steps=4)])
def test_targeted_attack_reaches_its_target_on_linear_model(attack):
    model = Linear()
    x, y = batch(model, 8, lo=0.3, hi=0.7)
    targets = (y + 1) % K
    r = attack(model, x, y, targets)
    assert torch.equal(r.preds_adv, targets)
    assert bool(r.success.all())


def test_lbfgs_smaller_than_fgsm_for_same_target():
    model = Linear()
    x, y = batch(model, 8, lo=0.2, hi=0.8)
    targets = (y + 1) % K
    fgsm = FGSM(eps=0.3, targeted=True)(model, x, y, targets)
    both = fgsm.success
    assert int(both.sum()) >= 3
    lbfgs = LBFGS(max_iter=20, search_steps=6)(model, x[both], y[both], targets[both])
    assert bool(lbfgs.success.all())
    assert bool((lbfgs.l2_norm < fgsm.l2_norm[both]).all())


def test_deepfool_matches_exact_linear_distance():
    """On a linear model the nearest boundary is analytic: min_k (z_y - z_k) / ‖w_y - w_k‖₂."""
    model = Linear(scale=0.5)
    x, y = batch(model, 6, lo=0.45, hi=0.55)
    r = DeepFool(overshoot=0.0)(model, x, y)
    w, z = model.fc.weight.detach(), model(x).detach()
    exact = torch.stack([
        min((z[i, y[i]] - z[i, k]) / (w[y[i]] - w[k]).norm() for k in range(K) if k != y[i]) for i in range(len(x))
    ])
    assert bool(r.success.all())
    assert torch.allclose(r.l2_norm, exact, rtol=0.02, atol=2e-4)


def test_cw_finds_small_untargeted_perturbations():
    model = Linear(scale=0.5)
    x, y = batch(model, 6, lo=0.45, hi=0.55)
    cw = CW(steps=100, lr=0.01, search_steps=5)(model, x, y)
    deepfool = DeepFool(overshoot=0.0)(model, x, y)
    assert bool(cw.success.all())
    # CW cannot beat the exact minimum (DeepFool's) and should be within a factor 1.5 of it
    assert bool((cw.l2_norm >= deepfool.l2_norm * 0.99).all())
    assert bool((cw.l2_norm <= deepfool.l2_norm * 1.5).all())


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_model_state_restored(name):
    model = TinyConv()
    x, y = batch(model, 4)
    model.train()
    model.bn.eval()
    model.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = default_params(name, "shapes")
    params.update({k: 2 for k in ("steps", "search_steps", "max_iter") if k in params})
    result = make_attack(name, **params)(model, x, y)
    assert model.training and not model.bn.training and model.conv.training
    assert [p.requires_grad for p in model.parameters()] == [True, True, True, True, False, True]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert result.adv.shape == x.shape and result.logits_adv.shape == (4, K)
    assert result.config["attack"] == name


def test_state_restored_when_stopped_and_progress_reported():
    model = TinyConv().train()
    x, y = batch(model, 4)
    model.train()
    calls = []
    with pytest.raises(AttackCancelled):
        PGD(eps=0.1, steps=5)(model, x, y, progress=lambda d, t: calls.append((d, t)),
                              should_stop=lambda: len(calls) >= 3)
    assert calls == [(0, 5), (1, 5), (2, 5)]
    assert model.training and all(p.requires_grad for p in model.parameters())


def test_early_stop_and_restarts():
    model = TinyConv()
    x, y = batch(model, 16)
    early = PGD(eps=0.3, steps=20, early_stop=True)(model, x, y)
    assert bool(early.success.all())
    full = PGD(eps=0.3, steps=20)(model, x, y)
    # frozen at the first adversarial iterate, so never further from x than running all steps
    assert float(early.linf_norm.mean()) < float(full.linf_norm.mean())
    many = PGD(eps=0.02, steps=5, restarts=3)(model, x, y)
    one = PGD(eps=0.02, steps=5, restarts=1)(model, x, y)
    assert int(many.success.sum()) >= int(one.success.sum()) - 1


@pytest.mark.parametrize("make, message", [
    (lambda: PGD(eps=-0.1), "epsilon"),
    (lambda: PGD(eps=0.1, steps=0), "steps"),
    (lambda: PGD(eps=0.1, norm="l7"), "unknown norm"),
    (lambda: PGD(eps=0.1, alpha=0.0), "alpha"),
    (lambda: PGD(eps=0.1, restarts=0), "restarts"),
    (lambda: FGSM(eps=0.1, steps=3), "FGSM"),
    (lambda: CW(lr=-1.0), "lr"),
    (lambda: DeepFool(norm="l1"), "unknown norm"),
    (lambda: make_attack("nope"), "unknown attack"),
    (lambda: make_attack("pgd", gamma=3), "does not take gamma"),
])
def test_bad_parameters_raise_clear_errors(make, message):
    with pytest.raises(InvalidParameterError, match=message):
        make()


def test_bad_inputs_raise_clear_errors():
    model = Linear()
    x, y = batch(model, 3)
    with pytest.raises(InvalidParameterError, match="does not match the model's input shape"):
        PGD(eps=0.1)(model, torch.rand(3, 1, 8, 8), y)
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\]"):
        PGD(eps=0.1)(model, x * 3, y)
    with pytest.raises(InvalidParameterError, match="labels must have shape"):
        PGD(eps=0.1)(model, x, y[:2])
    with pytest.raises(InvalidParameterError, match="class indices"):
        PGD(eps=0.1)(model, x, torch.tensor([0, 1, 9]))
    with pytest.raises(InvalidParameterError, match=r"\(B, C, H, W\)"):
        PGD(eps=0.1)(model, x[0], y)


def test_per_dataset_defaults():
    assert default_params("pgd", "mnist")["eps"] == 0.3
    assert default_params("pgd", "fashion-mnist")["eps"] == 0.1
    assert default_params("fgsm", "cifar10")["eps"] == pytest.approx(8 / 255)
    assert default_params("pgd", "shapes", norm="l2")["norm"] == "l2"
    pgd = make_attack("pgd", "mnist", steps=40)
    assert (pgd.eps, pgd.steps, pgd.step_size) == (0.3, 40, pytest.approx(2.5 * 0.3 / 40))


def test_decode_image_resizes_and_rejects_bad_files():
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((40, 50, 3), 200, dtype=np.uint8)).save(buf, format="PNG")
    grey = eimages.decode_image(buf.getvalue(), (1, 28, 28))
    rgb = eimages.decode_image(buf.getvalue(), (3, 32, 32))
    assert grey.shape == (1, 1, 28, 28) and rgb.shape == (1, 3, 32, 32)
    assert torch.allclose(rgb, torch.full_like(rgb, 200 / 255))
    with pytest.raises(InvalidParameterError, match="could not be read"):
        eimages.decode_image(b"not an image at all", (1, 28, 28))
    with pytest.raises(InvalidParameterError, match="empty"):
        eimages.decode_image(b"", (1, 28, 28))
    gif = io.BytesIO()
    Image.new("L", (8, 8)).save(gif, format="GIF")
    with pytest.raises(InvalidParameterError, match="PNG or JPEG"):
        eimages.decode_image(gif.getvalue(), (1, 28, 28))
    with pytest.raises(InvalidParameterError, match="limit"):
        eimages.decode_image(b"0" * (eimages.MAX_UPLOAD_BYTES + 1), (1, 28, 28))
    png = eimages.encode_png(rgb[0])
    assert torch.allclose(eimages.decode_image(png, (3, 32, 32)), rgb, atol=1 / 255)
    amp = eimages.amplify(torch.tensor([[[-0.1, 0.0, 0.05]]]))
    assert torch.allclose(amp, torch.tensor([[[0.0, 0.5, 0.75]]]))


def test_npz_export_roundtrip(tmp_path):
    model = Linear()
    x, y = batch(model, 5)
    r = PGD(eps=0.1, steps=3)(model, x, y)
    path = save_npz(tmp_path / "out" / "adv.npz", result_arrays(r, x))
    data = np.load(path)
    assert np.allclose(data["x"], x.numpy()) and np.allclose(data["x_adv"], r.adv.numpy())
    assert data["preds"].tolist() == r.preds_adv.tolist()
    assert [p.name for p in path.parent.iterdir()] == ["adv.npz"]
    rows = result_rows(r, class_names=["a", "b", "c", "d"])
    assert rows[0]["label"] == "abcd"[int(y[0])] and rows[0]["linf"] == pytest.approx(float(r.linf_norm[0]))
