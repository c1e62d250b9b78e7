"""The synthetic ``shapes`` dataset: determinism, every variant's defining property, the loader."""
from __future__ import annotations

import pytest
import torch

from engine.data import load_dataset, take
from engine.data.shapes import (
    SHAPE_CLASSES,
    SPEC,
    TEXTURES,
    VARIANTS,
    ShapesBatch,
    load_shapes,
    make_shapes,
)
from engine.errors import InvalidParameterError

N = 300


@pytest.fixture(scope="module")
def batches() -> dict[str, ShapesBatch]:
    """One batch per variant, all from seed 7."""
    return {v: make_shapes(N, seed=7, variant=v) for v in VARIANTS}


def test_constants_match_spec():
    assert len(SHAPE_CLASSES) == len(TEXTURES) == SPEC.num_classes == 6
    assert SPEC.class_names == SHAPE_CLASSES
    assert SPEC.input_shape == (3, 32, 32) and SPEC.default_arch == "small_cnn"


@pytest.mark.parametrize("variant", VARIANTS)
def test_same_seed_identical_other_seed_differs(variant, batches):
    again = make_shapes(N, seed=7, variant=variant)
    for a, b in zip(batches[variant], again):
        assert torch.equal(a, b)
    other = make_shapes(N, seed=8, variant=variant)
    assert not torch.equal(batches[variant].images, other.images)
    assert not torch.equal(batches[variant].labels, other.labels)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shapes_dtypes_and_range(variant, batches):
    b = batches[variant]
    assert b.images.shape == (N, 3, 32, 32) and b.images.dtype == torch.float32
    assert b.labels.shape == (N,) and b.labels.dtype == torch.long
    assert b.masks.shape == (N, 1, 32, 32) and b.masks.dtype == torch.bool
    assert b.textures.shape == (N,) and b.textures.dtype == torch.long
    assert 0.0 <= b.images.min() and b.images.max() <= 1.0
    # 8-bit quantised: storing as uint8 is lossless
    assert torch.equal(b.images.mul(255).round().div(255), b.images)
    assert b.masks.flatten(1).sum(1).min() >= 20  # every image has a real foreground
    assert set(b.labels.tolist()) == set(range(len(SHAPE_CLASSES)))


def test_other_image_size():
    b = make_shapes(20, seed=1, image_size=48)
    assert b.images.shape == (20, 3, 48, 48) and b.masks.shape == (20, 1, 48, 48)
    assert b.masks.flatten(1).sum(1).min() >= 40


def test_variants_share_labels_and_geometry(batches):
    base = batches["normal"]
    for variant in ("silhouette", "cue-conflict"):
        assert torch.equal(batches[variant].labels, base.labels)
        assert torch.equal(batches[variant].masks, base.masks)
    # outside the mask a textured image is exactly its silhouette (same background)
    outside = ~base.masks.expand_as(base.images)
    assert torch.equal(base.images[outside], batches["silhouette"].images[outside])


def test_silhouette_foreground_is_flat_and_is_the_mask(batches):
    b = batches["silhouette"]
    assert (b.textures == -1).all()
    for image, mask in zip(b.images, b.masks[:, 0]):
        fg = image[:, mask]  # (3, n_fg)
        colour = fg[:, :1]
        assert torch.equal(fg, colour.expand_as(fg))  # one flat colour
        bg = image[:, ~mask]
        # every background pixel differs clearly from the fill: the mask is the drawn shape
        assert (bg - colour).abs().amax(0).min() > 0.1


def test_normal_foreground_is_textured(batches):
    b = batches["normal"]
    for image, mask in zip(b.images, b.masks[:, 0]):
        assert image[:, mask].std(1).max() > 0.03


def test_texture_variant_has_no_shape(batches):
    b = batches["texture"]
    assert b.masks.all()
    assert torch.equal(b.textures, b.labels)
    # the texture covers the whole image: every quadrant varies
    for q in (b.images[..., :16, :16], b.images[..., 16:, 16:]):
        assert q.flatten(2).std(2).amax(1).min() > 0.03


def test_cue_conflict_texture_never_matches_label(batches):
    b = batches["cue-conflict"]
    assert (b.textures != b.labels).all()
    assert b.textures.min() >= 0 and b.textures.max() < len(TEXTURES)
    # every wrong texture occurs for every class (B is uniform over the other classes)
    pairs = set(zip(b.labels.tolist(), b.textures.tolist()))
    assert len(pairs) == len(SHAPE_CLASSES) * (len(SHAPE_CLASSES) - 1)


@pytest.mark.parametrize("rate", [0.0, 0.6, 0.9, 1.0])
def test_texture_rate_is_respected(rate):
    b = make_shapes(2000, seed=3, texture_rate=rate)
    typical = (b.textures == b.labels).float().mean().item()
    assert typical == pytest.approx(rate, abs=0.03)
    assert b.textures.min() >= 0


@pytest.mark.parametrize("contrast", [0.1, 0.4])
def test_texture_contrast_sets_the_step_between_the_two_tones(contrast):
    """Inside a shape the texture takes two tones, texture_contrast x U(0.8, 1.2) apart (before
    8-bit rounding and clamping, so only images whose tones stay inside [0, 1] are checked)."""
    b = make_shapes(64, seed=2, texture_contrast=contrast, variant="texture")  # texture fills the image
    steps = []
    for image in b.images:
        values = image[0].flatten()
        low, high = values.min().item(), values.max().item()
        if 0.0 < low and high < 1.0:
            steps.append(high - low)
    assert len(steps) > 10
    # the background ramp is absent in "texture" images, so the spread is the step itself
    assert min(steps) >= 0.8 * contrast - 2 / 255 and max(steps) <= 1.2 * contrast + 2 / 255


def test_same_shape_differs_with_texture():
    """Same seed, different texture_rate: the typical-texture images change only inside masks."""
    a = make_shapes(200, seed=5, texture_rate=1.0)
    b = make_shapes(200, seed=5, texture_rate=0.0)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.labels, b.labels)
    changed = (a.images != b.images).any(1, keepdim=True)
    assert not (changed & ~a.masks).any()
    assert changed.flatten(1).any(1).float().mean() > 0.95


@pytest.mark.parametrize(
    "kwargs",
    [dict(variant="stylised"), dict(texture_rate=1.5), dict(texture_rate=-0.1), dict(image_size=8),
     dict(n=-1), dict(texture_contrast=0.0), dict(texture_contrast=0.6)],
)
def test_bad_arguments(kwargs):
    args = dict(n=4) | kwargs
    with pytest.raises(InvalidParameterError):
        make_shapes(**args)


def test_load_dataset_wraps_make_shapes():
    test = load_dataset("shapes", "test", n=50, variant="cue-conflict", seed=2)
    train = load_dataset("shapes", "train", n=50, variant="cue-conflict", seed=2)
    assert len(test) == 50 and test.spec == SPEC and test.variant == "cue-conflict"
    images, labels = take(test, 50)
    assert not torch.equal(images, take(train, 50)[0])  # splits use different seeds
    again = load_shapes("test", n=50, variant="cue-conflict", seed=2)
    assert torch.equal(images, take(again, 50)[0])
    image, label = test[3]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == labels[3]
    assert (test.textures != test.labels).all()
    assert test.masks.shape == (50, 1, 32, 32)


def test_load_dataset_round_trips_the_generated_pixels():
    from engine.data.shapes import _SPLIT_SEED_OFFSET

    ds = load_dataset("shapes", "test", n=20, seed=4)
    ref = make_shapes(20, seed=4 + _SPLIT_SEED_OFFSET["test"])
    assert torch.equal(take(ds, 20)[0], ref.images)
    assert torch.equal(ds.labels, ref.labels)


def test_default_sizes_and_image_size_option():
    assert len(load_dataset("shapes")) == 2000
    ds = load_dataset("shapes", n=10, image_size=64)
    assert ds.spec.input_shape == (3, 64, 64) and ds[0][0].shape == (3, 64, 64)
