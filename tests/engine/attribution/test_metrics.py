"""Explanation-quality metrics (``engine.attribution.metrics``).

1. Each metric agrees with its reference implementation, Quantus 0.6 (Hedström et al. 2023,
   ``pip install quantus==0.6.0``; skipped with the reason when it is not installed), on the same
   inputs and the same explanations: our maps are Quantus' ``a_batch`` (and its ``explain_func``
   where it recomputes maps), with Quantus' own normalisation and absolute value switched off
   (``normalise=False, abs=False``: Quantus' default ``normalise_by_max`` divides the whole batch
   by one maximum). Where Quantus draws noise from NumPy's global generator (ROAD's imputation
   noise, the sensitivity's perturbations), Quantus is fed the very noise our function drew
   (through its ``perturb_func`` parameter), so both see the same perturbed images.
2. Each metric has the properties its definition promises (a perfect explanation, a constant or
   linear model, a randomised linear model ...), its randomness is seeded and independent of
   batching, and bad input is a clear ``InvalidParameterError``.

Tolerances (each stated where it is used):
- similarity functions, imputation, localisation, sensitivity ratios: float64 arithmetic against
  float64 arithmetic (1e-12 ... 1e-9; the imputation solves iteratively to a 1e-12 residual where
  Quantus factorises: 1e-9);
- ROAD's accuracies: exactly equal (both classify float32 images that differ by < 1e-9 before the
  cast; a flip would need a logit tie at the 1e-6 level, and the inputs are fixed and seeded);
- pixel flipping's probabilities: 1e-6 (float32 logits of the same images, batched differently).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from engine.attribution import metrics as M
from engine.data.shapes import load_shapes, make_shapes
from engine.errors import InvalidParameterError
from engine.models import build_model

# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def quantus():
    """The reference implementation, Quantus 0.6."""
    found = pytest.importorskip("quantus", reason="Quantus 0.6 (the reference) is not installed: "
                                                  "pip install quantus==0.6.0")
    if not found.__version__.startswith("0.6."):
        pytest.skip(f"the reference is Quantus 0.6, found {found.__version__}")
    return found


def cnn(channels: int, classes: int, seed: int) -> nn.Module:
    """A small seeded CNN (``small_cnn``, 8 layers with parameters) on 16x16 images, eval mode."""
    torch.manual_seed(seed)
    return build_model("small_cnn", classes, (channels, 16, 16), (0.5,) * channels, (0.25,) * channels,
                       width=4, hidden=16).eval()


def conv(channels: int, classes: int, seed: int = 0) -> nn.Module:
    """A one-convolution seeded classifier on 16x16 images, eval mode: unlike a fresh ``small_cnn``
    (whose untrained BatchNorm makes it predict one class), its prediction follows the image, so
    ROAD's and pixel flipping's curves are not trivially flat."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, classes)).eval()


def images(n: int, channels: int, seed: int, low: float = 0.25, high: float = 0.75) -> torch.Tensor:
    """Smooth random images in [low, high] (N, C, 16, 16): a coarse pattern plus fine noise."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(n, channels, 4, 4, generator=generator), size=16,
                                             mode="bilinear", align_corners=False)
    fine = torch.rand(n, channels, 16, 16, generator=generator)
    return low + (high - low) * (0.7 * coarse + 0.3 * fine)


def predicted(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(1)


def untied(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``maps`` with a tiny seeded jitter, so that no two pixels of a map tie: Quantus ranks pixels
    with NumPy's unstable argsort, so tied pixels may come in another order than ours (stable)."""
    generator = torch.Generator().manual_seed(seed)
    scale = maps.flatten(1).amax(1).view(-1, 1, 1)
    return maps + 1e-6 * scale * torch.rand(maps.shape, generator=generator, dtype=torch.float64)


def for_quantus(explain, transform=lambda maps: maps):
    """Our explanation as Quantus' ``explain_func(model, inputs, targets) -> (N, 1, H, W)``."""
    def explain_func(model, inputs, targets, **_):
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32)
        return transform(explain(model, x, torch.as_tensor(np.asarray(targets)).long())).numpy()[:, None]
    return explain_func


SALIENCY = M.explainer("saliency")


# ------------------------------------------------------------------ 1. agreement with Quantus
def test_ssim_and_spearman_agree_with_quantus(quantus):
    from quantus.functions.similarity_func import correlation_spearman, ssim

    generator = torch.Generator().manual_seed(0)
    a = torch.rand(6, 16, 20, generator=generator, dtype=torch.float64)
    b = a + 0.5 * torch.rand(6, 16, 20, generator=generator, dtype=torch.float64)
    b[1] = torch.round(b[1] * 3)          # many ties: average ranks
    b[2] = a[2].max() - a[2]              # reversed: negative correlation
    b[3] = 10 * a[3]                      # another scale: SSIM's data range is the pair's
    # float64 on both sides: equal to rounding (1e-12)
    theirs = [ssim(x.numpy(), y.numpy()) for x, y in zip(a, b)]  # Quantus' ssim on 2-D maps (scikit-image)
    np.testing.assert_allclose(M.ssim(a, b).numpy(), theirs, rtol=0, atol=1e-12)
    ranks = correlation_spearman(a.flatten(1).numpy(), b.flatten(1).numpy(), batched=True)  # scipy.stats.spearmanr
    np.testing.assert_allclose(M.spearman(a, b).numpy(), ranks, rtol=0, atol=1e-12)
    assert M.spearman(a, b)[2] < -0.9 and len(set(np.round(theirs, 6))) == 6  # the cases differ


def test_linear_imputation_agrees_with_quantus(quantus):
    from quantus.functions.perturb_func import noisy_linear_imputation

    rng = np.random.default_rng(0)
    for channels, size, fraction in [(1, 16, 0.5), (3, 16, 0.9), (1, 12, 0.99), (3, 16, 0.02)]:
        x = rng.random((channels, size, size))
        removed = rng.permutation(size * size)[: int(size * size * fraction)]
        theirs = noisy_linear_imputation(x.copy(), removed, noise=0.0)  # scipy's sparse LU, float64
        mask = np.zeros(size * size, dtype=bool)
        mask[removed] = True
        ours = M.linear_imputation(torch.tensor(x)[None], torch.tensor(mask.reshape(1, 1, size, size)))[0]
        # our conjugate gradients stop at a 1e-12 relative residual: 1e-9 absolute
        np.testing.assert_allclose(ours.numpy(), theirs, rtol=0, atol=1e-9)
        assert np.abs(theirs - x).max() > 0.05  # something was imputed


def test_randomisation_agrees_with_quantus_mprt(quantus):
    from quantus.functions.similarity_func import correlation_spearman, ssim

    model = cnn(3, 6, seed=11)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = images(6, 3, seed=1)
    y = predicted(model, x)
    ours = M.randomisation(model, x, y, SALIENCY, seed=4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # a copy was randomised
    original = M.normalise_by_max(SALIENCY(model, x, y)).numpy()[:, None]

    def ssim_2d(a, b, batched=True, **_):
        return np.array([ssim(p.reshape(16, 16), q.reshape(16, 16)) for p, q in zip(a, b)])

    for similarity, table in ((correlation_spearman, ours.spearman), (ssim_2d, ours.ssim)):
        # Quantus seeds torch with seed + 1 before re-initialising each layer; ours with seed itself
        test = quantus.MPRT(similarity_func=similarity, layer_order="top_down", seed=4 - 1, abs=False,
                            normalise=False, disable_warnings=True)
        theirs = test(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=original,
                      explain_func=for_quantus(SALIENCY, M.normalise_by_max), batch_size=6, device="cpu")
        assert list(theirs) == ["original", *ours.layers] and len(ours.layers) == 8
        # the same randomised weights, the same maps: equal to float64 rounding (1e-10)
        np.testing.assert_allclose(np.array([theirs[layer] for layer in ours.layers]), table, rtol=0, atol=1e-10)
    assert ours.spearman[0].mean() > ours.spearman[-1].mean() and np.ptp(ours.ssim) > 0.1  # the maps change


def road_by_quantus(quantus, model, x, y, maps, percentages, perturb_func=None):
    """Quantus' ROAD accuracy (N, F), image by image (its output is averaged over a batch)."""
    rows = []
    for i in range(len(x)):
        road = quantus.ROAD(percentages=list(percentages), noise=0.0, abs=False, normalise=False,
                            perturb_func=perturb_func() if perturb_func else None, disable_warnings=True)
        found = road(model=model, x_batch=x[i:i + 1].numpy(), y_batch=y[i:i + 1].numpy(),
                     a_batch=maps[i:i + 1, None].numpy(), device="cpu")
        rows.append([found[p] for p in percentages])
    return np.array(rows, dtype=np.float64)


def test_road_agrees_with_quantus_morf_and_lerf(quantus):
    # Quantus 0.6's ROAD indexes pixels as if the image had one channel: grey images
    model = conv(1, 10)
    x = images(8, 1, seed=2)
    y = predicted(model, x)
    maps = untied(SALIENCY(model, x, y))
    percentages = (10, 30, 50, 70, 90)
    reversed_ = maps.flatten(1).amax(1).view(-1, 1, 1) - maps  # non-negative (Quantus refuses negative maps)
    curves = {}
    for order, ranking in (("morf", maps), ("lerf", reversed_)):  # Quantus removes the highest first
        ours = M.road(model, x, y, SALIENCY, maps=maps, fractions=[p / 100 for p in percentages], order=order,
                      noise=0.0)
        theirs = road_by_quantus(quantus, model, x, y, ranking, percentages)
        np.testing.assert_array_equal(ours, theirs)  # exact (see the module docstring)
        assert 0 < ours.mean() < 1  # the curves are not trivial
        curves[order] = ours
    assert not np.array_equal(curves["morf"], curves["lerf"])  # the order matters


def test_noisy_road_agrees_with_quantus_fed_the_same_noise(quantus, monkeypatch):
    from quantus.functions.perturb_func import noisy_linear_imputation

    model = conv(1, 10)
    x = images(6, 1, seed=3)
    y = predicted(model, x)
    maps = untied(SALIENCY(model, x, y))
    drawn = []  # per fraction: the noise our ROAD added, (N, C, H, W)
    real = M.noisy_linear_imputation

    def recording(batch, removed, noise, seed, stream):
        out = real(batch, removed, noise, seed, stream)
        drawn.append((out - M.linear_imputation(batch, removed)).numpy())
        return out

    monkeypatch.setattr(M, "noisy_linear_imputation", recording)
    percentages = (20, 50, 80)
    ours = M.road(model, x, y, SALIENCY, maps=maps, fractions=[p / 100 for p in percentages], noise=0.1, seed=7)
    removed = np.abs(np.stack(drawn)) > 0
    assert removed.mean() == pytest.approx(np.mean(percentages) / 100, abs=0.01)
    assert np.stack(drawn)[removed].std() == pytest.approx(0.1, rel=0.1)
    image = iter(range(len(x)))

    def replay():
        """Quantus' own imputation plus the noise we drew for this image, fraction by fraction."""
        i, calls = next(image), iter(range(len(percentages)))

        def perturb(arr, indices, **_):
            return noisy_linear_imputation(arr, indices, noise=0.0) + drawn[next(calls)][i]
        return perturb

    theirs = road_by_quantus(quantus, model, x, y, maps, percentages, perturb_func=replay)
    np.testing.assert_array_equal(ours, theirs)
    assert 0 < ours.mean() < 1


def test_pixel_flipping_agrees_with_quantus(quantus, monkeypatch):
    # Quantus 0.6 steps through channel values, in steps that must divide H x W: on grey images a
    # value is a pixel, as in ours (a pixel is all its channels)
    model = conv(1, 10)
    x = images(6, 1, seed=4, low=0.0, high=1.0)
    y = predicted(model, x)
    maps = untied(SALIENCY(model, x, y))
    ours = M.pixel_flipping(model, x, y, SALIENCY, maps=maps, steps=16, baseline=0.0)
    assert ours.shape == (6, 16) and M.flip_schedule(256, 16)[:2] == (16, 32)  # 16 pixels a step
    flipping = dict(features_in_step=16, perturb_baseline=0.0, abs=False, normalise=False, disable_warnings=True)
    call = dict(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(), device="cpu")
    theirs = np.array(quantus.PixelFlipping(**flipping)(**call))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)  # float32 softmax of the same images
    # Quantus 0.6's AUC calls np.trapz, which NumPy 2.4 removed: lend it np.trapezoid (the same rule)
    monkeypatch.setattr(np, "trapz", np.trapezoid, raising=False)
    auc = np.array(quantus.PixelFlipping(return_auc_per_sample=True, **flipping)(**call))
    np.testing.assert_allclose(M.flipping_auc(ours) * (16 - 1), auc, rtol=1e-6)  # ours: on [0, 1], theirs: dx = 1
    assert np.ptp(ours, axis=1).min() > 1e-3  # every curve moves (by far more than the tolerance)


def test_pointing_game_and_relevance_mass_agree_with_quantus(quantus):
    shapes = make_shapes(24, seed=3, image_size=16)
    model = cnn(3, 6, seed=2)
    generator = torch.Generator().manual_seed(1)
    maps = torch.rand(24, 16, 16, generator=generator, dtype=torch.float64)
    maps[:4] = torch.round(maps[:4] * 2)  # ties at the maximum: a hit when any maximal pixel is on the object
    maps = maps.float().double()  # float32 values, as attribution maps are (relevance mass reads them so)
    masks = shapes.masks
    call = dict(model=model, x_batch=shapes.images.numpy(), y_batch=shapes.labels.numpy(),
                a_batch=maps[:, None].numpy(), s_batch=masks.numpy().astype(np.float64), device="cpu")
    pointing = M.pointing_game(model, shapes.images, shapes.labels, SALIENCY, masks, maps=maps)
    theirs = quantus.PointingGame(abs=False, normalise=False, disable_warnings=True)(**call)
    np.testing.assert_array_equal(pointing, np.asarray(theirs, dtype=np.float64))
    assert 0 < pointing.mean() < 1
    mass = M.relevance_mass(model, shapes.images, shapes.labels, SALIENCY, masks, maps=maps)
    theirs = quantus.RelevanceMassAccuracy(abs=False, normalise=False, disable_warnings=True)(**call)
    np.testing.assert_allclose(mass, theirs, rtol=0, atol=1e-12)  # float64 sums
    assert np.ptp(mass) > 0.05


def test_sensitivity_agrees_with_quantus_fed_the_same_noise(quantus):
    model = conv(3, 6)
    x = images(5, 3, seed=6)  # in [0.25, 0.75]: a radius of 0.1 never leaves [0, 1], so neither side clips
    y = predicted(model, x)
    maps = SALIENCY(model, x, y)
    seen = []

    def recording(model_, batch, labels):
        seen.append(batch.clone())
        return SALIENCY(model_, batch, labels)

    ours = M.sensitivity(model, x, y, recording, maps=maps, radius=0.1, samples=4, seed=2)
    assert len(seen) == 4 and all((s - x).abs().max() <= 0.1 + 1e-6 for s in seen)
    assert all((s - x).abs().max() > 0.09 for s in seen)  # the whole ball is used

    def replay():
        draws = iter(seen)
        return lambda arr, indices, **_: next(draws).numpy().reshape(arr.shape)

    for metric, found in ((quantus.MaxSensitivity, ours.maximum), (quantus.AvgSensitivity, ours.average)):
        test = metric(nr_samples=4, lower_bound=0.1, perturb_func=replay(), abs=False, normalise=False,
                      return_nan_when_prediction_changes=False, disable_warnings=True)
        theirs = test(model=model, x_batch=x.numpy(), y_batch=y.numpy(), a_batch=maps[:, None].numpy(),
                      explain_func=for_quantus(SALIENCY), batch_size=5, device="cpu")
        # the same maps of the same images; float64 norms on both sides
        np.testing.assert_allclose(found, theirs, rtol=1e-9, atol=0)
    assert (ours.maximum >= ours.average).all() and ours.average.min() > 0


# ------------------------------------------------------------------ 2. properties
def test_a_perfect_explanation_scores_one_and_its_opposite_zero():
    shapes = make_shapes(12, seed=0, image_size=16)
    model = cnn(3, 6, seed=0)
    perfect = shapes.masks[:, 0].double()
    args = (model, shapes.images, shapes.labels, SALIENCY, shapes.masks)
    assert (M.pointing_game(*args, maps=perfect) == 1).all() and np.allclose(M.relevance_mass(*args, maps=perfect), 1)
    opposite = 1 - perfect
    assert (M.pointing_game(*args, maps=opposite) == 0).all() and np.allclose(M.relevance_mass(*args, maps=opposite), 0)
    uniform = torch.ones_like(perfect)  # chance level: the mask's area
    np.testing.assert_allclose(M.relevance_mass(*args, maps=uniform), perfect.flatten(1).mean(1).numpy())
    empty = shapes.masks.clone()
    empty[0] = False
    assert math.isnan(M.pointing_game(model, shapes.images, shapes.labels, SALIENCY, empty, maps=perfect)[0])


class Constant(nn.Module):
    """A classifier whose logits do not depend on the image (zero gradients)."""

    def __init__(self, classes: int = 6):
        super().__init__()
        self.bias = nn.Parameter(torch.arange(classes, dtype=torch.float32))

    def forward(self, x):
        return 0 * x.flatten(1).sum(1, keepdim=True) + self.bias


def linear(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 6)).eval()


def test_a_constant_or_linear_model_has_zero_sensitivity():
    x = images(4, 3, seed=0)
    y = torch.tensor([0, 1, 2, 3])
    constant = M.sensitivity(Constant(), x, y, SALIENCY, radius=0.2, samples=3)
    assert (constant.maximum == 0).all() and (constant.average == 0).all()
    flat = M.sensitivity(linear(1), x, y, SALIENCY, radius=0.2, samples=3)  # |W_y|: the same map everywhere
    assert (flat.maximum == 0).all() and SALIENCY(linear(1), x, y).abs().sum() > 0
    curved = M.sensitivity(cnn(3, 6, seed=1), x, y, SALIENCY, radius=0.2, samples=3)
    assert (curved.maximum > 0).all()


def test_randomising_a_linear_model_changes_its_gradient_map():
    model = linear(123)
    before = model[1].weight.clone()
    x = images(6, 3, seed=1)
    y = torch.arange(6)
    found = M.randomisation(model, x, y, SALIENCY, seed=0)
    assert found.layers == ("1",) and torch.equal(model[1].weight, before)
    assert np.abs(found.spearman[-1]).max() < 0.25 and found.ssim[-1].max() < 0.3  # unrelated maps
    again = M.randomisation(model, x, y, SALIENCY, seed=0)
    other = M.randomisation(model, x, y, SALIENCY, seed=1)
    np.testing.assert_array_equal(found.spearman, again.spearman)  # seeded
    assert not np.array_equal(found.spearman, other.spearman)
    edges = images(6, 1, seed=9)[:, 0].double()  # an "explanation" that ignores the model: it fails the test
    blind = M.randomisation(model, x, y, lambda *_: edges, seed=0)
    np.testing.assert_allclose(blind.spearman, 1) and np.testing.assert_allclose(blind.ssim, 1)


def test_road_and_pixel_flipping_properties():
    model = conv(1, 10)
    x = images(8, 1, seed=2)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    clean = (predicted(model, x) == y).double().numpy()
    np.testing.assert_array_equal(M.road(model, x, y, SALIENCY, fractions=[0.0], noise=0.5)[:, 0], clean)
    flat = torch.full((2, 3, 16, 16), 0.3, dtype=torch.float64)
    removed = torch.rand(2, 1, 16, 16) < 0.7
    np.testing.assert_allclose(M.linear_imputation(flat, removed), 0.3, atol=1e-12)  # a constant stays constant
    z = torch.rand(2, 3, 16, 16, dtype=torch.float64)
    assert torch.equal(M.linear_imputation(z, removed)[~removed.expand_as(z)], z[~removed.expand_as(z)])

    curve = M.pixel_flipping(model, x, y, SALIENCY, steps=7)
    assert curve.shape == (8, len(M.flip_schedule(256, 7))) == (8, 7)
    black = torch.softmax(model(torch.zeros_like(x)).double(), 1)[torch.arange(8), y].detach().numpy()
    np.testing.assert_allclose(curve[:, -1], black, atol=1e-6)  # every pixel flipped: the black image
    np.testing.assert_allclose(M.flipping_auc(np.full((3, 5), 0.4)), 0.4)
    np.testing.assert_allclose(M.flipping_auc([[1.0, 0.0]]), 0.5)
    assert M.flip_schedule(10, 3) == (4, 8, 10) and M.flip_schedule(4, 10) == (1, 2, 3, 4)
    assert M.removed_count(100, 0.29) == 29 and M.removed_count(784, 0.01) == 7


def test_noise_is_seeded_per_image_and_leaves_the_callers_generator_alone():
    model = cnn(3, 6, seed=1)
    x = images(5, 3, seed=0)
    y = predicted(model, x)
    state = torch.get_rng_state()
    whole = M.sensitivity(model, x, y, SALIENCY, samples=3, seed=4)
    part = M.sensitivity(model, x[:2], y[:2], SALIENCY, samples=3, seed=4)
    # the noise of image i depends on i only (the float32 maps of 2 or 5 images agree to 1e-6)
    np.testing.assert_allclose(whole.ratios[:2], part.ratios, rtol=1e-6)
    other = M.sensitivity(model, x, y, SALIENCY, samples=3, seed=5).ratios
    assert np.abs(other - whole.ratios).max() > 1e-3
    M.randomisation(model, x, y, SALIENCY, seed=3)
    road = M.road(model, x, y, SALIENCY, fractions=[0.5], noise=0.3, seed=1)
    np.testing.assert_array_equal(road[:2], M.road(model, x[:2], y[:2], SALIENCY, fractions=[0.5], noise=0.3, seed=1))
    assert torch.equal(torch.get_rng_state(), state)


def test_dataset_masks_interface():
    from engine import data as edata
    from engine.data.base import TensorImageDataset

    dataset = load_shapes("test", n=40, image_size=16)
    indices = edata.take_indices(len(dataset), 10, seed=3)
    masks = M.dataset_masks(dataset, indices)
    assert masks.shape == (10, 1, 16, 16) and masks.dtype == torch.bool
    assert torch.equal(masks, dataset.masks[indices])
    images_, _ = edata.take(dataset, 10, seed=3)
    background = images_[~masks.expand_as(images_)]
    assert torch.equal(M.dataset_masks(edata.Sample(dataset, 10, seed=3)), masks) and background.numel() > 0
    assert torch.equal(M.dataset_masks(dataset), dataset.masks)
    plain = TensorImageDataset(dataset.images, dataset.labels, dataset.spec)
    assert M.dataset_masks(plain) is None  # no foreground_masks: no masks


def test_explanation_metrics_runs_many_models_and_methods():
    shapes = make_shapes(6, seed=1, image_size=16)
    models = {"a": cnn(3, 6, seed=1), "b": cnn(3, 6, seed=2)}
    seen = []
    found = M.explanation_metrics(models, shapes.images, shapes.labels, {"saliency": {}, "input_x_gradient": {}},
                                  ["pointing_game", "max_sensitivity", "avg_sensitivity"], shapes.masks,
                                  M.MetricOptions(samples=2), progress=lambda done, total: seen.append((done, total)))
    assert [(s.model, s.method, s.score) for s in found.scores] == [
        (model, method, score) for model in "ab" for method in ("saliency", "input_x_gradient")
        for score in ("pointing_game", "max_sensitivity", "avg_sensitivity")]
    assert seen[-1] == (16, 16) and not found.stopped and found.errors == []
    first = found.scores[1]
    np.testing.assert_array_equal(first.values, M.max_sensitivity(models["a"], shapes.images, shapes.labels,
                                                                  SALIENCY, samples=2))
    assert first.curve.shape == (6, 2) and first.count == 6 and first.mean == pytest.approx(first.values.mean())
    calls = []
    stopped = M.explanation_metrics(models, shapes.images, shapes.labels, {"saliency": {}}, ["pointing_game"],
                                    shapes.masks, should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert stopped.stopped and len(stopped.scores) < 2


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: M.explanation_metrics({"a": m}, x, y, {"saliency": {}}, ["roar"]), "unknown or no"),
    (lambda m, x, y: M.explanation_metrics({"a": m}, x, y, {"saliency": {}}, ["pointing_game"]),
     "need foreground masks"),
    (lambda m, x, y: M.explanation_metrics({}, x, y, {"saliency": {}}, ["road"]), "at least one model"),
    (lambda m, x, y: M.explainer("lrp"), "unknown attribution method"),
    (lambda m, x, y: M.explainer("saliency", reduce="mean"), "unknown reduction"),
    (lambda m, x, y: M.road(m, x, y, SALIENCY, fractions=[1.0]), r"in \[0, 1\)"),
    (lambda m, x, y: M.road(m, x, y, SALIENCY, order="middle"), "morf, lerf"),
    (lambda m, x, y: M.pixel_flipping(m, x, y, SALIENCY, steps=0), "steps must be an integer >= 1"),
    (lambda m, x, y: M.sensitivity(m, x, y, SALIENCY, radius=0), r"radius must be in \(0, 1\]"),
    (lambda m, x, y: M.sensitivity(m, x, y, SALIENCY, samples=0), "samples must be an integer"),
    (lambda m, x, y: M.pointing_game(m, x, y, SALIENCY, torch.ones(2, 1, 8, 8)), "masks must have shape"),
    (lambda m, x, y: M.relevance_mass(m, x, y, SALIENCY, torch.ones(2, 16, 16), maps=torch.ones(2, 8, 8)),
     "maps must have shape"),
    (lambda m, x, y: M.linear_imputation(x, torch.ones(2, 1, 16, 16, dtype=torch.bool)), "at least one kept pixel"),
    (lambda m, x, y: M.ssim(torch.ones(1, 5, 5), torch.ones(1, 5, 5)), "at least 7 pixels"),
    (lambda m, x, y: M.road(m, x * 3, y, SALIENCY), r"must be in \[0, 1\]"),
])
def test_bad_input_is_a_clear_error(call, message):
    model = cnn(3, 6, seed=0)
    with pytest.raises(InvalidParameterError, match=message):
        call(model, images(2, 3, seed=0), torch.tensor([0, 1]))
