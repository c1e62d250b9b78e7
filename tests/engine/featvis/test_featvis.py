"""engine.featvis: top-k dataset examples, random directions, lucent visualisation, cache."""
from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import engine.featvis  # noqa: F401  # first: it imports lucent (and kornia) with kornia's warning silenced
from lucent.optvis import objectives as lucent_objectives  # noqa: E402
from lucent.optvis import transform as lucent_transform  # noqa: E402
from lucent.optvis.param import spatial as lucent_spatial  # noqa: E402

from engine.errors import InvalidParameterError
from engine.featvis import (
    VisConfig,
    cache_dir,
    cached_visualise,
    direction_target,
    layer_features,
    projection,
    random_direction,
    target_scores,
    top_k,
    top_k_many,
    unit_scores,
    unit_target,
    visualise,
)
import engine.featvis.cache as featvis_cache


def tiny_cnn(channels: int = 1, width: int = 6, size: int = 28) -> nn.Module:
    """A seeded 28x28 (by default grey) CNN with named layers and input_shape like a Classifier."""
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(channels, width, 3, padding=1), relu1=nn.ReLU(),
        conv2=nn.Conv2d(width, 8, 3, padding=1), relu2=nn.ReLU(),
        pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(8, 3),
    ))
    model.input_shape = (channels, size, size)
    return model.eval()


def identity_model(channels: int = 3) -> nn.Module:
    """Layer ``feat`` outputs the image itself, so every score is known in closed form."""
    return nn.Sequential(OrderedDict(
        feat=nn.Identity(), pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), fc=nn.Linear(channels, 2),
    )).eval()


def hook_counts(model: nn.Module) -> list[int]:
    return [len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules()]


def as_nchw(images_hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images_hwc).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- random directions

@settings(max_examples=30, deadline=None)
@given(dim=st.integers(1, 600), seed=st.integers(0, 2**31 - 1))
def test_random_direction_is_seeded_and_unit_norm(dim, seed):
    v = random_direction(dim, seed)
    assert v.shape == (dim,) and v.dtype == np.float32
    assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_array_equal(v, random_direction(dim, seed))


def test_random_directions_differ_across_seeds_and_are_not_axis_aligned():
    a, b = random_direction(64, 0), random_direction(64, 1)
    assert not np.allclose(a, b)
    assert np.abs(a).max() < 0.9  # not (close to) a natural-basis vector
    target = direction_target(64, seed=0)
    np.testing.assert_array_equal(target.vector, a)
    assert target.key != direction_target(64, seed=1).key


# ---------------------------------------------------------------- top-k

def known_images(n=40, seed=0):
    """Constant-per-channel images with distinct, shuffled channel values, plus one bright pixel."""
    rng = np.random.default_rng(seed)
    values = np.stack([rng.permutation(n) / n for _ in range(3)], axis=1).astype(np.float32)  # (n, 3)
    images = np.broadcast_to(values[:, :, None, None], (n, 3, 5, 5)).copy()
    return images, values


def test_top_k_of_a_unit_is_the_images_with_the_brightest_channel():
    images, values = known_images()
    model = identity_model()
    for unit in range(3):
        result = top_k(model, "feat", images, k=5, unit=unit, batch_size=7)
        expected = np.argsort(-values[:, unit])[:5]
        np.testing.assert_array_equal(result.indices, expected)
        np.testing.assert_allclose(result.scores, values[expected, unit], atol=1e-6)


def test_top_k_of_a_direction_ranks_by_projection_of_channel_means():
    images, values = known_images()
    v = random_direction(3, seed=4)
    result = top_k(identity_model(), "feat", images, k=6, direction=v)
    projections = values @ v
    np.testing.assert_array_equal(result.indices, np.argsort(-projections)[:6])
    assert np.all(np.diff(result.scores) <= 0)


def test_top_k_of_a_neuron_reads_one_position():
    images = np.zeros((10, 1, 4, 4), np.float32)
    images[:, 0, 2, 1] = np.arange(10) / 10          # neuron (2, 1): increasing with index
    images[:, 0, 0, 0] = 1 - np.arange(10) / 10      # dominates the spatial mean the other way
    model = identity_model(1)
    assert list(top_k(model, "feat", images, 3, unit=0, position=(2, 1)).indices) == [9, 8, 7]
    assert list(top_k(model, "feat", images, 3, unit=0).indices) == [0, 1, 2]


def test_unit_scores_are_per_channel_spatial_means_in_one_pass():
    images, values = known_images(n=12)
    scores = unit_scores(identity_model(), "feat", torch.from_numpy(images), batch_size=5)
    np.testing.assert_allclose(scores, values, atol=1e-6)
    model = tiny_cnn()
    x = torch.rand(9, 1, 28, 28)
    expected = model.relu1(model.conv1(x)).mean(dim=(2, 3)).detach().numpy()
    np.testing.assert_allclose(unit_scores(model, "relu1", x, batch_size=4), expected, atol=1e-5)


def test_top_k_many_matches_single_calls():
    model, x = tiny_cnn(), torch.rand(20, 1, 28, 28)
    targets = [unit_target(2), direction_target(8, seed=3), unit_target(1, position=(3, 4))]
    many = top_k_many(model, "relu2", x, targets, k=4)
    singles = [top_k(model, "relu2", x, 4, unit=2), top_k(model, "relu2", x, 4, direction=targets[1].vector),
               top_k(model, "relu2", x, 4, unit=1, position=(3, 4))]
    for a, b in zip(many, singles):
        np.testing.assert_array_equal(a.indices, b.indices)


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=3), "exactly one"),
    (dict(k=3, unit=0, direction=np.ones(8)), "exactly one"),
    (dict(k=50, unit=0), "k must be"),
    (dict(k=3, unit=8), "out of range"),
    (dict(k=3, direction=np.ones(5)), "entries"),
    (dict(k=3, unit=0, position=(40, 0)), "outside"),
])
def test_top_k_rejects_bad_input(kwargs, message):
    with pytest.raises(InvalidParameterError, match=message):
        top_k(tiny_cnn(), "relu2", torch.rand(6, 1, 28, 28), **kwargs)


def test_top_k_leaves_no_hooks_and_restores_mode():
    model = tiny_cnn().train()
    top_k(model, "relu2", torch.rand(4, 1, 28, 28), 2, unit=0)
    assert model.training and all(m.training for m in model.modules())
    assert sum(hook_counts(model)) == 0
    with pytest.raises(InvalidParameterError):
        top_k(model, "relu2", torch.rand(4, 1, 28, 28), 2, unit=99)
    assert sum(hook_counts(model)) == 0
    with pytest.raises(InvalidParameterError, match="unknown layer"):
        top_k(model, "nope", torch.rand(4, 1, 28, 28), 2, unit=0)


# ---------------------------------------------------------------- lucent visualisation

def test_projection_on_a_basis_vector_equals_lucent_channel_objective():
    acts = torch.randn(2, 5, 4, 4)
    hook = lambda name: acts  # noqa: E731
    basis = torch.zeros(5)
    basis[3] = 1
    ours = projection("layer", basis)(hook)
    theirs = lucent_objectives.channel("layer", 3)(hook)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    v = torch.randn(5)
    assert projection("layer", v)(hook).item() == pytest.approx(-(acts.mean(dim=(2, 3)) @ v).mean().item(), abs=1e-5)


def test_direction_objective_increases_the_projection_on_v():
    model = tiny_cnn()
    target = direction_target(8, seed=11)
    start = visualise(model, "relu2", [target], VisConfig(steps=0, seed=2))
    end = visualise(model, "relu2", [target], VisConfig(steps=40, seed=2))
    before = target_scores(layer_features(model, "relu2", as_nchw(start.images)), target)[0]
    after = target_scores(layer_features(model, "relu2", as_nchw(end.images)), target)[0]
    assert after > before + 1e-3
    assert end.trajectories.shape == (40, 1)
    assert end.trajectories[-5:].mean() > end.trajectories[:5].mean()


def test_units_and_directions_share_one_parameterisation():
    model = tiny_cnn()
    targets = [unit_target(1), direction_target(8, seed=0)]
    start = visualise(model, "relu2", targets, VisConfig(steps=0, seed=5))
    np.testing.assert_array_equal(start.images[0], start.images[1])  # same seeded start
    alone = visualise(model, "relu2", targets[:1], VisConfig(steps=10, seed=5))
    batched = visualise(model, "relu2", targets, VisConfig(steps=10, seed=5))
    np.testing.assert_allclose(alone.images[0], batched.images[0], atol=1e-5)
    assert not np.allclose(batched.images[0], batched.images[1], atol=1e-3)


def test_visualisation_of_one_unit_of_a_grey_28px_model_is_fast_and_valid():
    model = tiny_cnn()
    began = time.process_time()  # CPU time: robust to other processes sharing the machine
    result = visualise(model, "relu1", [unit_target(0)], VisConfig(steps=20))
    assert time.process_time() - began < 15
    assert result.images.shape == (1, 28, 28, 1) and result.images.dtype == np.float32
    assert np.isfinite(result.images).all()
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result.steps_done == 20 and not result.stopped


def test_rgb_model_gets_three_channel_images():
    model = tiny_cnn(channels=3, size=32)
    result = visualise(model, "relu2", [unit_target(0, position=(4, 4))], VisConfig(steps=3))
    assert result.images.shape == (1, 32, 32, 3)


def test_visualisation_is_seeded_and_leaves_global_state_alone():
    model = tiny_cnn()
    np.random.seed(123)
    expected_draw = np.random.rand()
    np.random.seed(123)
    torch_state = torch.get_rng_state()
    devices = (lucent_spatial.device, lucent_transform.device)
    a = visualise(model, "relu2", [unit_target(0)], VisConfig(steps=5, seed=1))
    assert np.random.rand() == expected_draw
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert (lucent_spatial.device, lucent_transform.device) == devices
    b = visualise(model, "relu2", [unit_target(0)], VisConfig(steps=5, seed=1))
    c = visualise(model, "relu2", [unit_target(0)], VisConfig(steps=5, seed=2))
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.allclose(a.images, c.images)


def test_visualisation_restores_model_and_removes_hooks_also_on_error():
    model = tiny_cnn().train()
    frozen = model.conv1.weight
    frozen.requires_grad_(False)
    progress = []
    visualise(model, "relu2", [unit_target(0)], VisConfig(steps=4), progress=lambda d, t: progress.append((d, t)))
    assert progress[-1] == (4, 4)
    assert sum(hook_counts(model)) == 0
    assert model.training and not frozen.requires_grad and model.conv2.weight.requires_grad
    assert all(p.grad is None for p in model.parameters())

    def explode():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        visualise(model, "relu2", [unit_target(0)], VisConfig(steps=4), should_stop=explode)
    with pytest.raises(InvalidParameterError, match="out of range"):
        visualise(model, "relu2", [unit_target(42)], VisConfig(steps=4))
    assert sum(hook_counts(model)) == 0
    assert model.training and not frozen.requires_grad and model.conv2.weight.requires_grad


def test_should_stop_ends_early():
    calls = []
    result = visualise(tiny_cnn(), "relu2", [unit_target(0)], VisConfig(steps=50),
                       should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert result.stopped and result.steps_done == 3 and result.trajectories.shape == (3, 1)


@pytest.mark.parametrize("config, message", [(VisConfig(steps=-1), "steps"), (VisConfig(lr=0), "lr")])
def test_visualise_rejects_bad_config(config, message):
    with pytest.raises(InvalidParameterError, match=message):
        visualise(tiny_cnn(), "relu2", [unit_target(0)], config)


# ---------------------------------------------------------------- cache

class FakeCheckpoint:
    def __init__(self, model, sha256):
        self.model, self.sha256 = model, sha256


def test_cache_hit_returns_identical_arrays_without_rendering(monkeypatch):
    checkpoint = FakeCheckpoint(tiny_cnn(), "ab" * 32)
    targets = [unit_target(0), direction_target(8, seed=3)]
    config = VisConfig(steps=5, seed=9)
    first = cached_visualise(checkpoint, "relu2", targets, config)
    files = sorted(cache_dir().glob("*.npz"))
    assert len(files) == 2 and str(cache_dir()).endswith("runs/featvis-cache")

    def no_render(*args, **kwargs):
        raise AssertionError("cache miss")

    monkeypatch.setattr(featvis_cache, "visualise", no_render)
    second = cached_visualise(checkpoint, "relu2", targets, config)
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.trajectories, second.trajectories)
    assert not list(cache_dir().glob("*.tmp"))
    with pytest.raises(AssertionError, match="cache miss"):  # another seed is another entry
        cached_visualise(checkpoint, "relu2", targets, VisConfig(steps=5, seed=10))
    with pytest.raises(AssertionError, match="cache miss"):  # another checkpoint too
        cached_visualise(FakeCheckpoint(checkpoint.model, "cd" * 32), "relu2", targets, config)


def test_partial_cache_renders_only_missing_targets_and_stopped_runs_are_not_cached():
    checkpoint = FakeCheckpoint(tiny_cnn(), "ef" * 32)
    config = VisConfig(steps=4)
    cached_visualise(checkpoint, "relu2", [unit_target(1)], config)
    both = cached_visualise(checkpoint, "relu2", [unit_target(1), unit_target(2)], config)
    direct = visualise(checkpoint.model, "relu2", [unit_target(1), unit_target(2)], config)
    np.testing.assert_allclose(both.images, direct.images, atol=1e-5)
    assert len(list(cache_dir().glob("*.npz"))) == 2
    stopped = cached_visualise(checkpoint, "relu2", [unit_target(3)], config, should_stop=lambda: True)
    assert stopped.stopped and len(list(cache_dir().glob("*.npz"))) == 2


# ---------------------------------------------------------------- images and CLI

def test_grid_and_png_round_trip():
    from PIL import Image
    import io
    from engine.featvis import grid, png_bytes

    images = np.stack([np.full((4, 5, 1), v, np.float32) for v in (0.0, 0.5, 1.0)])
    tiled = grid(images, columns=2, pad=1, scale=2)
    assert tiled.shape == ((4 * 2 + 1) * 2, (5 * 2 + 1) * 2, 1)
    assert tiled[0, 0, 0] == 0 and tiled[0, -1, 0] == 0.5  # image 0 top-left, image 1 top-right
    assert tiled[-1, 0, 0] == 1.0 and tiled[8, 0, 0] == 1.0  # image 2 bottom-left; white padding row
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(tiled))))
    assert decoded.shape == tiled.shape[:2] and decoded[0, 0] == 0 and decoded[-1, 0] == 255


def test_cli_writes_pngs_and_json(tmp_path, capsys):
    import json

    from engine.checkpoints import save_checkpoint
    from engine.checkpoints import make_card
    from engine.cli import main
    from engine.data import get_spec
    from engine.models import build_model

    spec = get_spec("shapes")
    model = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=4).eval()
    path = save_checkpoint(model, make_card(model, "shapes", name="tiny"), tmp_path / "tiny")
    out = tmp_path / "out"
    code = main(["featvis", "--checkpoint", str(path), "--layer", "net.block2", "--direction-seed", "3",
                 "--top-k", "4", "--n", "24", "--steps", "3", "--out", str(out), "--json"])
    assert code == 0
    report = json.loads((out / "featvis.json").read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["target"]["kind"] == "direction" and report["target"]["direction_seed"] == 3
    assert len(report["top_k"]["indices"]) == 4 and report["top_k"]["scores"] == sorted(report["top_k"]["scores"], reverse=True)
    assert len(report["visualisation"]["trajectory"]) == 3
    assert (out / "topk.png").read_bytes()[:4] == b"\x89PNG" and (out / "vis.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["featvis", "--checkpoint", str(path), "--layer", "net.block2", "--unit", "99",
                 "--top-k", "0", "--steps", "2", "--out", str(out)]) == 2
    assert "out of range" in capsys.readouterr().err
