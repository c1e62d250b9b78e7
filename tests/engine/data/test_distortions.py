"""Distortions: shape, range, determinism, and each one's defining property."""
from __future__ import annotations

import pytest
import torch

from engine.data import distortions as D
from engine.errors import InvalidParameterError

NAMES = sorted(D.DISTORTIONS)


def _images(b=3, c=3, h=28, w=28, seed=1):
    return torch.rand((b, c, h, w), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("severity", D.SEVERITIES)
@pytest.mark.parametrize("shape", [(3, 3, 28, 28), (2, 1, 32, 30)])
def test_keeps_shape_dtype_range_and_input(name, severity, shape):
    x = _images(*shape)
    before = x.clone()
    y = D.apply(name, x, severity, seed=5)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.equal(x, before)  # input untouched


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_given_seed(name):
    x = _images()
    assert torch.equal(D.apply(name, x, 3, seed=7), D.apply(name, x, 3, seed=7))


@pytest.mark.parametrize("name", [n for n in NAMES if D.DISTORTIONS[n].random])
def test_random_distortions_depend_on_seed(name):
    x = _images()
    assert not torch.equal(D.apply(name, x, 3, seed=1), D.apply(name, x, 3, seed=2))


@pytest.mark.parametrize("name", NAMES)
def test_every_distortion_changes_images(name):
    x = _images()
    assert not torch.allclose(D.apply(name, x, 5), x, atol=1e-3)


@pytest.mark.parametrize("severity", D.SEVERITIES)
def test_patch_shuffle_preserves_pixel_histogram_exactly(severity):
    x = _images(h=30, w=28)  # 30 is not a multiple of every grid: leftover strip stays
    y = D.apply("patch_shuffle", x, severity, seed=3)
    assert not torch.equal(x, y)
    assert torch.equal(x.flatten(1).sort(dim=1).values, y.flatten(1).sort(dim=1).values)


def test_patch_shuffle_moves_whole_patches():
    x = _images(b=2, c=2, h=32, w=32)
    g = int(D.DISTORTIONS["patch_shuffle"].level(3))  # 4x4 grid of 8x8 patches
    y = D.apply("patch_shuffle", x, 3, seed=0)
    p = 32 // g

    def patches(t):
        return {tuple(t[:, i * p:(i + 1) * p, j * p:(j + 1) * p].flatten().tolist())
                for i in range(g) for j in range(g)}

    for k in range(2):
        assert patches(x[k]) == patches(y[k])


def test_contrast_keeps_mean_and_shrinks_spread():
    x = _images()
    y = D.apply("contrast", x, 4)
    factor = D.DISTORTIONS["contrast"].level(4)
    assert torch.allclose(y.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), atol=1e-5)
    assert torch.allclose(y.std(dim=(1, 2, 3)), factor * x.std(dim=(1, 2, 3)), atol=1e-5)


def test_fourier_filters_split_the_spectrum():
    x = _images(c=1, h=32, w=32)
    low = D.apply("low_pass", x, 5)
    high = D.apply("high_pass", x, 5)
    radius = D._radial_frequency(32, 32, "cpu")
    cutoff = D.DISTORTIONS["low_pass"].level(5)
    spectrum_low = torch.fft.fft2(low.double()).abs()
    # before clipping the low-pass has no energy above the cutoff; clipping leaks only a little
    share_above = spectrum_low[..., radius > cutoff].pow(2).sum() / spectrum_low.pow(2).sum()
    assert share_above < 0.02
    spectrum_high = torch.fft.fft2(high.double()).abs()
    cut = D.DISTORTIONS["high_pass"].level(5)
    share_below = spectrum_high[..., (radius < cut) & (radius > 0)].pow(2).sum() / spectrum_high.pow(2).sum()
    assert share_below < 0.02


def test_blur_and_noise_grow_with_severity():
    x = _images()
    for name in ("gaussian_blur", "gaussian_noise"):
        errors = [float((D.apply(name, x, s) - x).abs().mean()) for s in D.SEVERITIES]
        assert errors == sorted(errors) and errors[0] < errors[-1]


def test_edges_and_silhouette_are_binary_and_channel_repeated():
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, 8:24, 8:24] = 0.8  # a bright square on black
    for name in ("edges", "silhouette"):
        y = D.apply(name, x, 2)
        assert set(y.unique().tolist()) <= {0.0, 1.0}
        assert torch.equal(y[:, 0], y[:, 1]) and torch.equal(y[:, 0], y[:, 2])
    sil = D.apply("silhouette", x, 2)
    assert torch.equal(sil[0, 0] > 0, x[0, 0] > 0)  # the silhouette is exactly the square
    edge = D.apply("edges", x, 2)[0, 0]
    assert edge[16, 16] == 0 and edge[0, 0] == 0 and edge[16, 8] == 1  # outline only


@pytest.mark.parametrize(
    "call",
    [
        lambda x: D.apply("no_such", x, 1),
        lambda x: D.apply("contrast", x, 0),
        lambda x: D.apply("contrast", x, 6),
        lambda x: D.apply("contrast", x, 2.0),
        lambda x: D.apply("contrast", x[0], 1),
        lambda x: D.apply("contrast", x * 2, 1),
    ],
)
def test_invalid_input_raises(call):
    with pytest.raises(InvalidParameterError):
        call(_images())
