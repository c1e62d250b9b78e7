"""engine.attribution: captum adapters, rendering, keep/remove curves, alignment, ε trade-off."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.attribution import (
    METHODS,
    alignment_score,
    attribute,
    check_module_relus,
    epsilon_tradeoff,
    keep_remove_curves,
    mask_area,
    overlay,
    to_heatmap,
    to_png_bytes,
    training_epsilon,
)
from engine.attribution.curves import REPLACEMENTS, top_mask
from engine.errors import InvalidParameterError

C, H, W, K = 3, 8, 8, 4


def tiny_cnn(seed: int = 0, bn: bool = False) -> nn.Module:
    """A seeded conv net with module ReLUs (and optionally BatchNorm)."""
    torch.manual_seed(seed)
    layers = [nn.Conv2d(C, 6, 3, padding=1)] + ([nn.BatchNorm2d(6)] if bn else []) + [
        nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * H * W, K),
    ]
    return nn.Sequential(*layers)


def linear_model(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, K))


class FunctionalReluNet(nn.Module):
    """ReLU called as F.relu inside forward: invisible to captum's guided backprop."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(C, 4, 3, padding=1)
        self.fc = nn.Linear(4 * H * W, K)

    def forward(self, x):
        return self.fc(F.relu(self.conv(x)).flatten(1))


def images(n: int = 6, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, C, H, W, generator=torch.Generator().manual_seed(seed))


# --- attribution methods -------------------------------------------------------------------

@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_returns_finite_maps_of_the_input_shape(method):
    x = images(5)
    result = attribute(tiny_cnn(), x, None, method)
    assert result.maps.shape == tuple(x.shape)
    assert result.maps.dtype == np.float32
    assert np.isfinite(result.maps).all()
    assert np.abs(result.maps).sum() > 0
    assert result.method == method
    assert result.targets.shape == (5,)
    assert (result.delta is not None) == (method == "integrated_gradients")


@pytest.mark.parametrize("method", list(METHODS))
def test_chunking_does_not_change_the_result(method):
    x, model = images(5), tiny_cnn()
    whole = attribute(model, x, 1, method, batch_size=5).maps
    chunked = attribute(model, x, 1, method, batch_size=2).maps
    np.testing.assert_allclose(chunked, whole, rtol=1e-4, atol=1e-6)


def test_default_targets_are_the_predictions():
    model, x = tiny_cnn(), images(6)
    with torch.no_grad():
        predicted = model(x).argmax(1).numpy()
    np.testing.assert_array_equal(attribute(model, x).targets, predicted)


def test_saliency_equals_the_analytic_gradient_of_a_linear_model():
    model, x = linear_model(), images(4)
    targets = torch.tensor([0, 3, 1, 2])
    weight = model[1].weight.detach().reshape(K, C, H, W)  # d logit_k / dx = W_k
    expected = weight[targets].numpy()
    signed = attribute(model, x, targets, "saliency", abs=False).maps
    np.testing.assert_allclose(signed, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(attribute(model, x, targets, "saliency").maps, np.abs(expected), rtol=1e-6)
    np.testing.assert_allclose(
        attribute(model, x, targets, "input_x_gradient").maps, (x * weight[targets]).numpy(), rtol=1e-5, atol=1e-7
    )


def test_log_prob_output_gives_the_gradient_of_minus_the_loss():
    model, x = linear_model(), images(3)
    targets = torch.tensor([2, 0, 1])
    weight = model[1].weight.detach()  # (K, D)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)  # (B, K)
    expected = (weight[targets] - probs @ weight).reshape(3, C, H, W).numpy()  # d log p_t / dx
    got = attribute(model, x, targets, "saliency", abs=False, output="log_prob").maps
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("baseline", ["black", "mean"])
def test_integrated_gradients_completeness(baseline):
    model, x = tiny_cnn(seed=3), images(4)
    targets = torch.tensor([0, 1, 2, 3])
    result = attribute(model, x, targets, "integrated_gradients", baseline=baseline, steps=128)
    base = torch.zeros_like(x) if baseline == "black" else x.mean(dim=(2, 3), keepdim=True).expand_as(x)
    with torch.no_grad():
        gap = (model(x) - model(base)).gather(1, targets[:, None]).squeeze(1).numpy()  # f(x) - f(x')
    sums = result.maps.reshape(4, -1).sum(1)
    assert np.abs(gap).min() > 1e-3  # the check is not trivially satisfied
    np.testing.assert_allclose(sums, gap, rtol=0.02, atol=1e-3)
    np.testing.assert_allclose(result.delta, sums - gap, atol=1e-4)


def test_smoothgrad_with_zero_noise_equals_saliency_and_is_seeded():
    model, x = tiny_cnn(), images(3)
    plain = attribute(model, x, 1, "saliency").maps
    np.testing.assert_allclose(attribute(model, x, 1, "smoothgrad", stdev=0.0, n_samples=3).maps, plain, rtol=1e-5)
    state = torch.get_rng_state()
    first = attribute(model, x, 1, "smoothgrad", stdev=0.2, seed=5).maps
    assert torch.equal(state, torch.get_rng_state())  # the caller's RNG is untouched
    np.testing.assert_array_equal(attribute(model, x, 1, "smoothgrad", stdev=0.2, seed=5).maps, first)
    assert not np.allclose(attribute(model, x, 1, "smoothgrad", stdev=0.2, seed=6).maps, first)
    assert not np.allclose(first, plain)


@pytest.mark.parametrize("method", list(METHODS))
def test_model_mode_requires_grad_and_hooks_are_restored(method):
    model = tiny_cnn(bn=True)
    model.train()
    model[0].weight.requires_grad_(False)
    bn = model[1]
    running = bn.running_mean.clone()
    flags = {p_name: p.requires_grad for p_name, p in model.named_parameters()}
    attribute(model, images(4), 0, method)
    assert model.training and all(m.training for m in model.modules())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert torch.equal(bn.running_mean, running)  # attribution ran in eval mode
    assert all(p.grad is None for p in model.parameters())
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks and not module._forward_pre_hooks


def test_mode_is_restored_after_an_error():
    model = tiny_cnn()
    model.train()
    with pytest.raises(InvalidParameterError):
        attribute(model, images(2), 0, "guided_backprop", no_such_param=1)
    model2 = FunctionalReluNet().train()
    with pytest.raises(InvalidParameterError):
        attribute(model2, images(2), 0, "guided_backprop")
    assert model.training and model2.training
    assert all(p.requires_grad for p in model2.parameters())


def test_guided_backprop_refuses_functional_relu_models():
    with pytest.raises(InvalidParameterError, match="functional"):
        attribute(FunctionalReluNet(), images(2), 0, "guided_backprop")
    with pytest.raises(InvalidParameterError, match="no nn.ReLU|none"):
        attribute(linear_model(), images(2), 0, "guided_backprop")
    check_module_relus(tiny_cnn(), images(1))  # module ReLUs are fine
    # the other methods do not care how ReLU is written
    assert np.isfinite(attribute(FunctionalReluNet(), images(2), 0, "saliency").maps).all()


def test_guided_backprop_zeroes_negative_gradients_at_relus():
    # one ReLU between two linear maps: guided backprop = W2 masked by (relu active) and by
    # positive upstream gradient, so it differs from the plain gradient when signs mix.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, 5), nn.ReLU(), nn.Linear(5, K))
    x = images(1)
    w1, w2 = model[1].weight.detach(), model[3].weight.detach()
    with torch.no_grad():
        active = (model[1](x.flatten(1)) > 0).float()[0]  # (5,)
    upstream = w2[2] * active  # gradient reaching the ReLU output, masked by the forward pass
    expected = (upstream.clamp(min=0) @ w1).reshape(1, C, H, W)
    got = attribute(model, x, 2, "guided_backprop").maps
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(method="nope"), "unknown attribution method"),
        (dict(method="saliency", bogus=1), "unknown parameter"),
        (dict(method="smoothgrad", n_samples=0), "n_samples"),
        (dict(method="smoothgrad", n_samples=2.5), "whole number"),
        (dict(method="saliency", abs="yes"), "true or false"),
        (dict(method="integrated_gradients", baseline="white"), "baseline"),
        (dict(method="saliency", output="loss"), "output"),
    ],
)
def test_bad_parameters_raise_specific_errors(kwargs, match):
    with pytest.raises(InvalidParameterError, match=match):
        attribute(tiny_cnn(), images(2), 0, **kwargs)


@pytest.mark.parametrize(
    "x, targets, match",
    [
        (torch.rand(C, H, W), 0, "shape"),
        (torch.rand(2, C, H, W) * 3, 0, r"\[0, 1\]"),
        (torch.rand(2, C, H, W), K, "class indices"),
        (torch.rand(2, C, H, W), [0, 1, 2], "2 ints"),
    ],
)
def test_bad_images_or_targets_raise(x, targets, match):
    with pytest.raises(InvalidParameterError, match=match):
        attribute(tiny_cnn(), x, targets)


# --- rendering -----------------------------------------------------------------------------

def test_to_heatmap_reduces_channels_and_normalises_by_percentile():
    maps = np.zeros((1, 2, 10, 10), dtype=np.float32)
    maps[0, 0] = np.arange(100).reshape(10, 10)
    maps[0, 1] = -np.arange(100).reshape(10, 10)  # abs-sum doubles, max keeps
    by_max = to_heatmap(maps, "max", percentile=100)
    np.testing.assert_allclose(by_max[0], np.arange(100).reshape(10, 10) / 99, rtol=1e-6)
    np.testing.assert_allclose(to_heatmap(maps, "abs_sum", percentile=100), by_max, rtol=1e-6)
    clipped = to_heatmap(maps, "max", percentile=50)  # 50th percentile of 0..99 = 49.5
    np.testing.assert_allclose(clipped[0].ravel(), np.minimum(np.arange(100) / 49.5, 1.0), rtol=1e-6)
    assert to_heatmap(np.zeros((3, 4, 4)), "abs_sum").shape == (4, 4)
    assert to_heatmap(np.zeros((3, 4, 4))).max() == 0
    with pytest.raises(InvalidParameterError):
        to_heatmap(maps, "median")


def test_overlay_blends_by_heatmap_weight():
    image = torch.rand(1, 6, 5).numpy()  # grey image
    grey_rgb = np.repeat(image, 3, axis=0).transpose(1, 2, 0)
    np.testing.assert_allclose(overlay(image, np.zeros((6, 5)), alpha=0.8), grey_rgb, rtol=1e-6)
    np.testing.assert_allclose(overlay(image, np.ones((6, 5)), alpha=0.0), grey_rgb, rtol=1e-6)
    full = overlay(image, np.ones((6, 5)), alpha=1.0, cmap="gray")  # colour of 1.0 in gray = white
    np.testing.assert_allclose(full, np.ones((6, 5, 3)), rtol=1e-6)
    assert overlay(np.random.rand(3, 6, 5), np.random.rand(6, 5)).shape == (6, 5, 3)
    png = to_png_bytes(full, scale=3)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image
    import io
    assert Image.open(io.BytesIO(png)).size == (15, 18)


# --- keep / remove curves ------------------------------------------------------------------

def test_top_mask_keeps_exactly_the_top_pixels():
    heat = torch.arange(16.0).reshape(1, 4, 4)
    order = torch.sort(heat.reshape(1, -1), descending=True).indices
    mask = top_mask(order, 0.25, (4, 4))
    assert int(mask.sum()) == 4
    assert mask.view(-1)[12:].all() and not mask.view(-1)[:12].any()


def _curve_setup(n=12):
    x = images(n, seed=4)
    with torch.no_grad():
        labels = tiny_cnn(seed=0)(x).argmax(1)
    labels[: n // 3] = (labels[: n // 3] + 1) % K  # clean accuracy strictly between 0 and 1
    return x, labels


@pytest.mark.parametrize("replacement", list(REPLACEMENTS))
def test_curve_endpoints(replacement):
    models = {"A": tiny_cnn(seed=0), "B": tiny_cnn(seed=1)}
    x, y = _curve_setup()
    keep = keep_remove_curves(models, x, y, "keep", fractions=(0.0, 0.5, 1.0), replacement=replacement)
    remove = keep_remove_curves(models, x, y, "remove", fractions=(0.0, 0.5, 1.0), replacement=replacement)
    fill = REPLACEMENTS[replacement](x, None)
    for name, model in models.items():
        with torch.no_grad():
            clean = (model(x).argmax(1) == y).float().mean().item()
            filled = (model(fill).argmax(1) == y).float().mean().item()
        assert keep[name].clean_accuracy == pytest.approx(clean)
        assert keep[name].accuracy[-1] == pytest.approx(clean)  # keep 100 % = clean
        assert remove[name].accuracy[0] == pytest.approx(clean)  # remove 0 % = clean
        assert keep[name].accuracy[0] == pytest.approx(filled)  # keep 0 % = all filled
        assert remove[name].accuracy[-1] == pytest.approx(filled)  # remove 100 % = all filled
        assert keep[name].fractions == (0.0, 0.5, 1.0) and keep[name].n == 12
    assert 0 < keep["A"].clean_accuracy < 1


class OnePixelNet(nn.Module):
    """Logits depend only on pixel (2, 3): class 0 when it is bright, else class 1."""

    def forward(self, x):
        v = x[:, :, 2, 3].mean(1)  # (B,)
        return torch.stack([v - 0.5, 0.5 - v], dim=1) * 10


def test_curve_ranks_the_only_relevant_pixel_first():
    x = torch.full((4, C, H, W), 0.2)
    x[:2, :, 2, 3] = 0.9  # classes 0, 0, 1, 1
    y = torch.tensor([0, 0, 1, 1])
    one = 1 / (H * W)
    model = {"m": nn.Sequential(OnePixelNet())}
    keep = keep_remove_curves(model, x, y, "keep", fractions=(0.0, one))["m"]
    remove = keep_remove_curves(model, x, y, "remove", fractions=(0.0, one))["m"]
    assert keep.accuracy == (0.5, 1.0)  # keeping only the top pixel keeps the evidence
    assert remove.accuracy == (1.0, 0.5)  # removing it destroys the evidence


def test_curve_progress_stop_and_retrain_hook():
    models = {"A": tiny_cnn(seed=0), "B": tiny_cnn(seed=1)}
    x, y = _curve_setup()
    calls = []
    keep_remove_curves(models, x, y, "keep", fractions=(0.0, 1.0), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(i, 6) for i in range(1, 7)]

    stops = iter([False, False, True] + [True] * 10)
    stopped = keep_remove_curves({"A": models["A"]}, x, y, fractions=(0.0, 0.5, 1.0), should_stop=lambda: next(stops))
    assert stopped["A"].stopped and len(stopped["A"].accuracy) == 1

    constant = nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, K))
    with torch.no_grad():
        constant[1].weight.zero_()
        constant[1].bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))  # always class 2
    requests = []

    def retrain(request):
        requests.append(request)
        perturbed = request.perturb(x, y)
        assert perturbed.shape == x.shape
        if request.fraction == 1.0:
            assert torch.allclose(perturbed, x)  # keep everything = unchanged
        return constant

    result = keep_remove_curves({"A": models["A"]}, x, y, "keep", fractions=(0.0, 1.0), retrain=retrain)["A"]
    assert [r.fraction for r in requests] == [0.0, 1.0] and all(r.model is models["A"] for r in requests)
    assert result.retrained
    share_of_class_2 = (y == 2).float().mean().item()
    assert result.accuracy == pytest.approx((share_of_class_2, share_of_class_2))


@pytest.mark.parametrize(
    "kwargs", [dict(mode="both"), dict(replacement="zero"), dict(fractions=(0.5, 1.5)), dict(fractions=())]
)
def test_curve_rejects_bad_options(kwargs):
    x, y = _curve_setup(4)
    with pytest.raises(InvalidParameterError):
        keep_remove_curves({"A": tiny_cnn()}, x, y, **kwargs)


# --- alignment and the ε trade-off ---------------------------------------------------------

def test_alignment_score_is_exact_on_constructed_maps():
    masks = np.zeros((4, 4, 4), dtype=bool)
    masks[:, :2, :] = True  # top half
    heat = np.zeros((4, 4, 4))
    heat[0, 0, 0] = 3.0  # all mass inside
    heat[1, 3, 3] = 1.0  # all mass outside
    heat[2, 0, 0], heat[2, 3, 0] = 1.0, 3.0  # 1 / 4 inside
    scores = alignment_score(heat[:3], masks[:3])
    np.testing.assert_allclose(scores, [1.0, 0.0, 0.25])
    uniform = alignment_score(np.ones((4, 4, 4)), masks)
    np.testing.assert_allclose(uniform, mask_area(masks))
    assert np.isnan(alignment_score(np.zeros((1, 4, 4)), masks[:1])[0])
    np.testing.assert_allclose(alignment_score(torch.tensor(heat[:3]), torch.tensor(masks[:3, None])), scores)
    with pytest.raises(InvalidParameterError):
        alignment_score(-heat[:3], masks[:3])
    with pytest.raises(InvalidParameterError):
        alignment_score(heat[:3], masks[:2])


def _card(training: dict):
    from engine.checkpoints import ModelCard

    return ModelCard.from_dict({"arch": "small_cnn", "num_classes": 2, "input_shape": [C, H, W], "mean": [0.5] * C,
                                "std": [0.5] * C, "training": training})


def test_training_epsilon_reads_the_card():
    assert training_epsilon(_card({"method": "standard", "eps": 0.3})) == 0.0
    assert training_epsilon(_card({})) == 0.0
    assert training_epsilon(_card({"method": "advprop", "eps": 0.1})) == 0.0
    assert training_epsilon(_card({"method": "pgd", "eps": 0.1})) == pytest.approx(0.1)
    assert training_epsilon(_card({"method": "pgd"})) is None


def test_epsilon_tradeoff_sorts_by_epsilon_and_measures_each_checkpoint():
    x = torch.full((4, C, H, W), 0.2)
    x[:2, :, 2, 3] = 0.9
    y = torch.tensor([0, 0, 1, 1])
    masks = torch.zeros(4, 1, H, W, dtype=torch.bool)
    masks[:, :, 2, 3] = True  # the object is the one pixel the model looks at
    ckpts = [
        SimpleNamespace(model=nn.Sequential(OnePixelNet()), path="/c/robust.safetensors",
                        card=_card({"method": "pgd", "eps": 0.3, "norm": "linf"})),
        SimpleNamespace(model=tiny_cnn(), path="/c/standard.safetensors", card=_card({"method": "standard"})),
    ]
    done = []
    points = epsilon_tradeoff(ckpts, x, y, masks, progress=lambda d, t: done.append(d))
    assert done == [1, 2]
    assert [p.epsilon for p in points] == [0.0, 0.3]
    assert [p.name for p in points] == ["standard", "robust"]
    robust = points[1]
    assert robust.alignment == pytest.approx(1.0) and robust.clean_accuracy == 1.0
    assert robust.chance == pytest.approx(1 / (H * W)) and robust.norm == "linf" and robust.n == 4
    assert 0 <= points[0].alignment < 1
    with pytest.raises(InvalidParameterError, match="training ε"):
        epsilon_tradeoff([SimpleNamespace(model=tiny_cnn(), path="p", card=_card({"method": "pgd"}))], x, y, masks)


# --- grid and CLI --------------------------------------------------------------------------

def test_grid_orders_cells_and_reports_refusals_per_cell():
    from engine.attribution import attribution_grid

    models = {"A": tiny_cnn(), "B": FunctionalReluNet()}
    cells = attribution_grid(models, images(1)[0], {"saliency": {}, "guided_backprop": {}}, target=2)
    assert [(c.method, c.model) for c in cells] == [
        ("saliency", "A"), ("saliency", "B"), ("guided_backprop", "A"), ("guided_backprop", "B")
    ]
    assert cells[3].attribution is None and "functional" in cells[3].error
    for cell in cells[:3]:
        assert cell.error is None and cell.target == 2
        assert cell.heatmap.shape == (H, W) and 0 <= cell.heatmap.min() and cell.heatmap.max() <= 1
        assert cell.attribution.maps.shape == (1, C, H, W)


def test_cli_writes_pngs_npz_json_and_a_curve(tiny_checkpoints, tmp_path):
    import json

    from PIL import Image

    from engine.cli import main

    out = tmp_path / "out"
    argv = ["saliency", "--checkpoint", str(tiny_checkpoints["standard"]), "--checkpoint",
            str(tiny_checkpoints["robust"]), "--index", "2", "--methods", "saliency", "smoothgrad",
            "--param", "smoothgrad.n_samples=2", "--curve", "keep", "--n", "8", "--fractions", "0,1",
            "--out", str(out), "--device", "cpu"]
    assert main(argv) == 0
    summary = json.loads((out / "saliency.json").read_text())
    assert len(summary["maps"]) == 4 and summary["index"] == 2
    smooth = next(m for m in summary["maps"] if m["method"] == "smoothgrad")
    assert smooth["params"]["n_samples"] == 2
    for entry in summary["maps"]:
        assert Image.open(entry["overlay"]).size == (32 * 4, 32 * 4)
    assert len(np.load(out / "maps_2.npz").files) == 4
    curves = json.loads((out / "curve_keep.json").read_text())
    assert set(curves) == {"tiny_standard", "tiny_robust"}
    for curve in curves.values():
        assert curve["accuracy"][-1] == pytest.approx(curve["clean_accuracy"])  # keep 100 % = clean
    assert not list(out.glob(".*"))  # no temporary files left behind
    assert main(argv[:3] + ["--param", "smoothgrad.n_samples=lots", "--out", str(out)]) == 2
