"""The unit atlas (issue 24): batched rendering equals one-at-a-time rendering, the streamed scan
equals a brute-force search, matching recovers a planted permutation, crops stay inside the image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.errors import InvalidParameterError
from engine.featvis.atlas import layer_units, render_units, scan_layers
from engine.featvis.atlas_data import best_matches, crop_box, selectivity
from engine.featvis.config import VisConfig
from engine.models import build_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("small_cnn", 10, (1, 28, 28), [0.5], [0.25], width=4, hidden=16).eval()


@pytest.fixture(scope="module")
def data():
    generator = torch.Generator().manual_seed(1)
    return torch.rand(70, 1, 28, 28, generator=generator), torch.randint(0, 10, (70,), generator=generator)


def test_a_unit_renders_the_same_in_a_batch_and_alone(model):
    """Every batch element starts from the same seeded image, and the random transforms are drawn
    once per step for the whole batch, so unit 5's image cannot depend on its batch — up to float
    summation order in batched convolutions, which Adam can amplify over the steps: one grey level
    (1/255) at most on 99% of the pixels, and 8 levels anywhere, over 24 steps."""
    config = VisConfig(steps=24, seed=3)
    batched = render_units(model, "net.block2", range(8), config=config)
    for unit in (0, 5, 7):
        alone = render_units(model, "net.block2", [unit], config=config)[0]
        difference = np.abs(batched[unit].astype(int) - alone.astype(int))
        assert np.quantile(difference, 0.99) <= 1 and difference.max() <= 8, (unit, difference.max())
    other = render_units(model, "net.block2", [5], config=VisConfig(steps=24, seed=4))[0]
    assert np.abs(other.astype(int) - batched[5].astype(int)).max() > 8   # the seed matters: the check can fail


def _brute_force(model, layer, images, labels, k, vectors=None):
    """Every figure of the scan from the full (N, U, H, W) activations at once, in float64."""
    from engine.models.hooks import record_activations

    with torch.no_grad(), record_activations(model, layer) as rec:
        model(images)
        maps = rec.outputs[layer].double()
    if maps.ndim == 2:
        maps = maps[:, :, None, None]
    if vectors is not None:
        maps = torch.einsum("buhw,du->bdhw", maps, torch.as_tensor(vectors, dtype=torch.float64))
    flat = maps.flatten(2)
    peak, where = flat.max(dim=2)                                  # (N, U)
    order = np.argsort(-peak.T.numpy(), axis=1, kind="stable")[:, :k]
    class_mean = np.stack([flat.mean(2)[labels == c].mean(0).numpy() for c in range(10)], axis=1)
    return {"topk_index": order, "topk_score": np.take_along_axis(peak.T.numpy(), order, 1),
            "topk_flat_pos": np.take_along_axis(where.T.numpy(), order, 1), "topk_label": labels.numpy()[order],
            "mean": flat.mean(2).mean(0).numpy(), "max": peak.max(0).values.numpy(),
            "sparsity": (flat <= 0).double().mean((0, 2)).numpy(), "class_mean": class_mean,
            "grid_width": maps.shape[3]}


@pytest.mark.parametrize("layer", ["net.block1", "net.hidden"])
def test_the_streamed_scan_equals_a_brute_force_search(model, data, layer):
    images, labels = data
    units, _ = layer_units(model, layer, (1, 28, 28))
    vectors = np.random.default_rng(0).standard_normal((3, units)).astype(np.float32)
    [scan], corr = scan_layers([(model, layer)], (images, labels), k=5, classes=10, directions=[vectors],
                               batch_size=16)   # 70 images in batches of 16: the top-k merges across batches
    assert corr is None
    for table, reference in ((scan.units, _brute_force(model, layer, images, labels, 5)),
                             (scan.directions, _brute_force(model, layer, images, labels, 5, vectors))):
        np.testing.assert_array_equal(table.topk_index, reference["topk_index"])
        np.testing.assert_allclose(table.topk_score, reference["topk_score"], rtol=1e-5, atol=1e-5)
        width = reference["grid_width"]
        np.testing.assert_array_equal(table.topk_pos[..., 0] * width + table.topk_pos[..., 1], reference["topk_flat_pos"])
        np.testing.assert_array_equal(table.topk_label, reference["topk_label"])
        for field in ("mean", "max", "sparsity", "class_mean"):
            np.testing.assert_allclose(getattr(table, field), reference[field], rtol=1e-5, atol=1e-6, err_msg=field)
        np.testing.assert_allclose(table.selectivity, selectivity(reference["class_mean"]), rtol=1e-5, atol=1e-6)


def test_matching_recovers_a_planted_permutation_exactly(data):
    """B is A with its conv layer's output channels permuted: unit i of A is unit perm⁻¹(i) of B,
    correlation 1, and the streamed correlation finds every pair."""
    torch.manual_seed(2)
    a = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.Tanh())
    perm = torch.randperm(12)
    b = nn.Sequential(nn.Conv2d(1, 12, 3, padding=1), nn.Tanh())
    with torch.no_grad():
        b[0].weight.copy_(a[0].weight[perm])
        b[0].bias.copy_(a[0].bias[perm])
    _, corr = scan_layers([(a, "1"), (b, "1")], data, k=3, classes=10, batch_size=32)
    index, values = best_matches(corr)
    inverse = torch.argsort(perm).numpy()
    np.testing.assert_array_equal(index[:, 0], inverse)
    np.testing.assert_allclose(values[:, 0], 1.0, atol=1e-6)
    back, _ = best_matches(corr.T)
    np.testing.assert_array_equal(back[:, 0], perm.numpy())
    # the brute-force Pearson matrix over the spatially averaged activations
    with torch.no_grad():
        xa = a(data[0]).mean((2, 3)).double().numpy()
        xb = b(data[0]).mean((2, 3)).double().numpy()
    reference = np.corrcoef(xa.T, xb.T)[:12, 12:]
    np.testing.assert_allclose(corr, reference, atol=1e-9)


def test_best_matches_rank_nan_last_and_break_ties_by_index():
    corr = np.array([[0.5, np.nan, 0.5, 0.9], [np.nan, np.nan, np.nan, 0.1]])
    index, values = best_matches(corr, top=3)
    np.testing.assert_array_equal(index, [[3, 0, 2], [3, 0, 1]])
    assert values[0, 0] == pytest.approx(0.9) and np.isnan(values[1, 1])


@pytest.mark.parametrize("position, grid, size", [((0, 0), (14, 14), (28, 28)), ((13, 13), (14, 14), (28, 28)),
                                                  ((3, 6), (7, 7), (28, 28)), ((0, 0), (1, 1), (32, 32)),
                                                  ((55, 0), (56, 56), (224, 224))])
def test_a_crop_stays_inside_the_image_and_holds_the_activation(position, grid, size):
    top, left, height, width = crop_box(position, grid, size)
    assert 0 <= top and 0 <= left and top + height <= size[0] and left + width <= size[1]
    centre_y, centre_x = (position[0] + 0.5) * size[0] / grid[0], (position[1] + 0.5) * size[1] / grid[1]
    assert top <= centre_y <= top + height and left <= centre_x <= left + width
    assert height >= size[0] // 2 or grid == (1, 1)


def test_selectivity_follows_morcos_et_al():
    means = np.array([[4.0, 1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, -2.0, -3.0]])
    np.testing.assert_allclose(selectivity(means)[:2], [(4 - 1) / (4 + 1), 0.0])
    assert np.isnan(selectivity(means)[2])   # undefined for negative activity


def test_a_layer_too_wide_or_a_bad_k_is_refused(model, data, monkeypatch):
    with pytest.raises(InvalidParameterError, match="k must be between 1 and the number of images"):
        scan_layers([(model, "net.block1")], data, k=0, classes=10)
    import engine.featvis.atlas as atlas

    monkeypatch.setattr(atlas, "MAX_ATLAS_UNITS", 3)
    with pytest.raises(InvalidParameterError, match="an atlas covers at most 3"):
        scan_layers([(model, "net.block1")], data, k=2, classes=10)


class _SharedReLU(nn.Module):
    """A module whose ReLU runs twice per pass (as in torchvision's BasicBlock): the scan must see
    its last output, so it may not stop the pass at the layer's first call."""

    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.relu = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(self.relu(self.conv2(self.relu(self.conv1(x)))).mean((2, 3)))


def test_the_scan_stops_early_only_at_a_layer_that_runs_once():
    torch.manual_seed(5)
    model = _SharedReLU().eval()
    images, labels = torch.rand(20, 1, 8, 8), torch.randint(0, 10, (20,))
    [scan], _ = scan_layers([(model, "relu")], (images, labels), k=3, classes=10, batch_size=8)
    with torch.no_grad():
        last = model.relu(model.conv2(model.relu(model.conv1(images))))       # the second call's output
    np.testing.assert_allclose(scan.units.mean, last.mean((2, 3)).mean(0).numpy(), rtol=1e-5)
    calls = []
    model.head.register_forward_hook(lambda *_: calls.append(1))
    built = build_model("small_cnn", 10, (1, 28, 28), [0.5], [0.25], width=4, hidden=16).eval()
    built.net.fc.register_forward_hook(lambda *_: calls.append("fc"))
    scan_layers([(built, "net.block1")], (torch.rand(8, 1, 28, 28), torch.zeros(8, dtype=torch.long)), k=2, classes=10)
    assert calls.count("fc") == 1   # the probe pass only: the scan itself stopped after block1
