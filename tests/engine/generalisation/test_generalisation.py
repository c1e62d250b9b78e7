"""engine.generalisation: OOD table, shape bias, unit statistics and the paper-findings summary."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from engine.data import distortions as D
from engine.errors import InvalidParameterError
from engine.evaluation import accuracy
from engine.generalisation import (
    ImageSet,
    evaluate_ood,
    findings_line,
    high_frequency_share,
    label_complexity,
    paper_findings,
    shape_bias,
    shape_bias_from_predictions,
    spatial_roughness,
    unit_statistics,
    units_frame,
)
from engine.generalisation.shape_bias import ShapeBiasResult


def _tiny_cnn(classes=4, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes),
    )


def _data(n=20, classes=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 3, 16, 16), generator=g), torch.randint(0, classes, (n,), generator=g)


class _ReadsChannel(nn.Module):
    """Predicts the class written (as class / 10) into pixel (0, 0) of ``channel``."""

    def __init__(self, channel: int, classes: int = 6):
        super().__init__()
        self.channel, self.classes = channel, classes

    def forward(self, x):
        cls = (x[:, self.channel, 0, 0] * 10).round().long()
        return nn.functional.one_hot(cls, self.classes).float()


class _Constant(nn.Module):
    def __init__(self, cls=0, classes=4):
        super().__init__()
        self.cls, self.classes = cls, classes
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        out = torch.zeros(len(x), self.classes)
        out[:, self.cls] = 1
        return out


# --------------------------------------------------------------------------- shape bias


def _cue_conflict(n=12, classes=6):
    shapes = torch.arange(n) % classes
    textures = (shapes + 1 + torch.arange(n) % (classes - 1)) % classes  # always != shape
    images = torch.zeros(n, 3, 8, 8)
    images[:, 0] = (shapes.float() / 10).view(-1, 1, 1)
    images[:, 1] = (textures.float() / 10).view(-1, 1, 1)
    return images, shapes, textures


def test_shape_bias_is_one_for_a_shape_follower_and_zero_for_a_texture_follower():
    images, shapes, textures = _cue_conflict()
    follows_shape = shape_bias(_ReadsChannel(0), images, shapes, textures, batch_size=5)
    follows_texture = shape_bias(_ReadsChannel(1), images, shapes, textures, batch_size=5)
    assert follows_shape.shape_bias == 1.0 and follows_shape.shape_fraction == 1.0
    assert follows_texture.shape_bias == 0.0 and follows_texture.texture_fraction == 1.0
    assert follows_shape.n == follows_texture.n == 12


def test_shape_bias_counts_mixed_decisions_and_excludes_agreeing_labels():
    preds = torch.tensor([0, 1, 2, 3, 4, 5])
    shapes = torch.tensor([0, 0, 2, 3, 1, 5])
    textures = torch.tensor([1, 1, 0, 4, 2, 5])  # the last has no conflict: excluded
    r = shape_bias_from_predictions(preds, shapes, textures)
    assert (r.n_shape, r.n_texture, r.n_other, r.n, r.n_excluded) == (3, 1, 1, 5, 1)
    assert r.shape_bias == pytest.approx(3 / 4)
    assert r.shape_fraction + r.texture_fraction + r.other_fraction == pytest.approx(1.0)


def test_shape_bias_is_nan_without_shape_or_texture_decisions():
    r = shape_bias_from_predictions([5, 5], [0, 1], [1, 2])
    assert math.isnan(r.shape_bias) and r.other_fraction == 1.0


def test_shape_bias_rejects_mismatched_lengths():
    with pytest.raises(InvalidParameterError):
        shape_bias_from_predictions([0, 1], [0], [1, 0])


# --------------------------------------------------------------------------- OOD evaluation


def test_ood_table_has_one_row_per_model_cell_and_clean_matches_accuracy():
    images, labels = _data()
    model = _tiny_cnn()
    calls = []
    result = evaluate_ood({"A": model, "B": _tiny_cnn(seed=1)}, images, labels,
                          distortions=["gaussian_noise", "patch_shuffle"], severities=[1, 3],
                          batch_size=8, progress=lambda d, t: calls.append((d, t)))
    table = result.table
    assert not result.stopped
    assert len(table) == 2 * (1 + 2 * 2)
    assert set(table["distortion"]) == {"clean", "gaussian_noise", "patch_shuffle"}
    assert table["accuracy"].between(0, 1).all() and (table["total"] == 20).all()
    clean_a = table[(table.model == "A") & (table.distortion == "clean")]["accuracy"].item()
    assert clean_a == pytest.approx(accuracy(model, images, labels).accuracy)
    assert calls[-1] == (5 * 3, 5 * 3) and [d for d, _ in calls] == list(range(1, 16))
    assert set(table[table.distortion == "patch_shuffle"]["keeps"]) == {"texture"}


def test_ood_is_deterministic_and_models_see_the_same_distorted_images():
    images, labels = _data()
    model = _tiny_cnn()
    run = lambda: evaluate_ood({"A": model, "A again": model}, images, labels,  # noqa: E731
                               distortions=["gaussian_noise"], batch_size=7, seed=3).table
    first, second = run(), run()
    pd.testing.assert_frame_equal(first, second)
    a, again = (first[first.model == m]["correct"].tolist() for m in ("A", "A again"))
    assert a == again


def test_ood_with_a_constant_model_gives_the_label_share_everywhere():
    images, labels = _data(n=30)
    table = evaluate_ood({"zero": _Constant(0)}, images, labels, severities=[2], batch_size=16).table
    expected = float((labels == 0).float().mean())
    assert np.allclose(table["accuracy"], expected)
    assert len(table) == 1 + len(D.DISTORTIONS)


def test_ood_image_sets_and_stop():
    images, labels = _data(n=10)
    sets = {"flipped": ImageSet(images.flip(-1), labels, "shape")}
    result = evaluate_ood({"zero": _Constant(0)}, images, labels, distortions=[], image_sets=sets)
    assert result.table["distortion"].tolist() == ["clean", "flipped"]
    assert result.table["severity"].tolist() == [0, 0]
    polls = iter([False, False, True])
    stopped = evaluate_ood({"zero": _Constant(0)}, images, labels, distortions=["contrast"],
                           batch_size=5, should_stop=lambda: next(polls))
    assert stopped.stopped and stopped.table["distortion"].tolist() == ["clean"]


def test_ood_restores_model_mode_and_rejects_bad_input():
    images, labels = _data()
    model = _tiny_cnn().train()
    evaluate_ood({"A": model}, images, labels, distortions=["contrast"], severities=[1])
    assert model.training
    for kwargs in ({"distortions": ["nope"]}, {"severities": [0]}, {"batch_size": 0}):
        with pytest.raises(InvalidParameterError):
            evaluate_ood({"A": model}, images, labels, **kwargs)
    with pytest.raises(InvalidParameterError):
        evaluate_ood({}, images, labels)
    with pytest.raises(InvalidParameterError):
        evaluate_ood({"A": model}, images, labels[:-1])


# --------------------------------------------------------------------------- unit statistics


def _smooth_and_noisy_maps(n=3, size=12):
    y, x = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    smooth = torch.exp(-((x - size / 2) ** 2 + (y - size / 2) ** 2) / (2 * 3.0**2))
    noisy = torch.rand((n, size, size), generator=torch.Generator().manual_seed(0))
    return torch.stack([smooth.expand(n, size, size), noisy], dim=1)  # (N, 2, H, W)


def test_smoothness_orders_a_smooth_and_a_noisy_map():
    maps = _smooth_and_noisy_maps()
    rough = spatial_roughness(maps)
    high = high_frequency_share(maps)
    assert rough[0] < rough[1] and high[0] < high[1]
    assert 0 <= high[0] <= 1 and 0 <= high[1] <= 1


def test_smoothness_exact_values():
    constant = torch.ones(1, 1, 4, 4)
    spike = torch.zeros(1, 1, 5, 5)
    spike[0, 0, 2, 2] = 3.0
    dead = torch.zeros(1, 1, 4, 4)
    maps = torch.cat([constant, spike[..., :4, :4] * 0 + constant, ], 1)
    assert spatial_roughness(constant)[0] == 0.0 and high_frequency_share(constant)[0] == 0.0
    assert spatial_roughness(spike)[0] == pytest.approx(4.0)  # 4 neighbours of 3 / mass 3
    assert np.isnan(spatial_roughness(dead)[0]) and np.isnan(high_frequency_share(dead)[0])
    # scale invariance: multiplying a unit's maps by a constant changes nothing
    assert np.allclose(spatial_roughness(maps * 7), spatial_roughness(maps))


def test_label_complexity_counts_distinct_labels_exactly():
    entropy, distinct = label_complexity([[3, 3, 3, 3], [0, 1, 2, 3], [1, 1, 2, 2], [5, 1, 5, 5]])
    assert distinct.tolist() == [1, 4, 2, 2]
    assert np.allclose(entropy, [0.0, 2.0, 1.0, -(0.75 * np.log2(0.75) + 0.25 * np.log2(0.25))])


class _MapsModel(nn.Module):
    """Its ``feat`` layer outputs the first two input channels; a fixed linear head."""

    def __init__(self):
        super().__init__()
        self.feat = nn.Identity()
        self.head = nn.Linear(2, 3)

    def forward(self, x):
        return self.head(self.feat(x[:, :2]).mean(dim=(2, 3)))


def test_unit_statistics_on_constructed_maps():
    n, size = 8, 12
    maps = _smooth_and_noisy_maps(n, size)
    images = maps.clone() * 0.2
    images[:4, 0] *= 4  # unit 0 fires most on images 0..3 (all label 0)
    images[4:, 1] *= 4  # unit 1 fires most on images 4..7 (labels 1, 2, 3, 4)
    images = torch.cat([images, torch.zeros(n, 1, size, size)], 1).clamp(0, 1)
    labels = torch.tensor([0, 0, 0, 0, 1, 2, 3, 4])
    model = _MapsModel().train()
    report = unit_statistics(model, images, labels, "feat", top_k=4, batch_size=3)
    stats = report.layers["feat"]
    assert stats.distinct_labels.tolist() == [1, 4]
    assert np.allclose(stats.label_entropy, [0.0, 2.0])
    assert sorted(stats.top_indices[0].tolist()) == [0, 1, 2, 3]
    assert stats.roughness[0] < stats.roughness[1]
    assert np.allclose(stats.roughness, spatial_roughness(images[:, :2]))
    assert model.training and not model.feat._forward_hooks
    frame = units_frame({"M": report})
    assert len(frame) == 2 and frame["distinct_labels"].tolist() == [1, 4]


def test_unit_statistics_on_a_cnn_and_linear_layer():
    images, labels = _data(n=12)
    model = _tiny_cnn()
    report = unit_statistics(model, images, labels, ["1", "6"], top_k=3, batch_size=5)
    conv, linear = report.layers["1"], report.layers["6"]
    assert conv.roughness.shape == (6,) and conv.top_indices.shape == (6, 3)
    assert np.all(np.isnan(linear.roughness)) and linear.distinct_labels.shape == (4,)
    assert np.all((conv.distinct_labels >= 1) & (conv.distinct_labels <= 3))
    with pytest.raises(InvalidParameterError):
        unit_statistics(model, images, labels, "nope")
    with pytest.raises(InvalidParameterError):
        unit_statistics(model, images, labels, "1", top_k=13)


# --------------------------------------------------------------------------- findings


def _table(robust_shape, standard_shape, robust_tex, standard_tex):
    rows = []
    for model, shape_acc, tex_acc in (("R", robust_shape, robust_tex), ("S", standard_shape, standard_tex)):
        rows += [(model, "edges", 1, "shape", shape_acc, 0, 1),
                 (model, "patch_shuffle", 1, "texture", tex_acc, 0, 1),
                 (model, "clean", 0, "both", 0.9, 0, 1)]
    return pd.DataFrame(rows, columns=["model", "distortion", "severity", "keeps", "accuracy", "correct", "total"])


def _bias(value):
    return ShapeBiasResult(value, 0, 0, 0, 0, 0, 0, 1, 0)


def test_findings_follow_the_numbers():
    good = paper_findings("R", "S", _table(0.6, 0.3, 0.4, 0.5), {"R": _bias(0.8), "S": _bias(0.3)})
    assert [f.holds for f in good] == [True, True, True, True]
    bad = paper_findings("R", "S", _table(0.2, 0.3, 0.7, 0.5), {"R": _bias(0.1), "S": _bias(0.3)})
    assert [f.holds for f in bad] == [False, False, False, False]
    assert "reproduces 0 of 4" in findings_line(bad) and "Not reproduced" in findings_line(bad)
    units = pd.DataFrame({"model": ["R", "S"], "roughness": [0.1, 0.5], "high_freq_share": [0.1, 0.2],
                          "distinct_labels": [3, 2], "label_entropy": [1.0, 0.5], "active": [True, True]})
    smooth, simple = paper_findings("R", "S", units=units)
    assert smooth.holds is True and simple.holds is False


# --------------------------------------------------------------------------- CLI


def test_cli_ood_json_on_shapes(tiny_checkpoints, capsys):
    import json

    from engine.cli import main

    argv = ["ood", "--checkpoint", str(tiny_checkpoints["standard"]), "--checkpoint",
            str(tiny_checkpoints["robust"]), "--n", "12", "--distortions", "edges", "patch_shuffle",
            "--severities", "2", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    rows = pd.DataFrame(report["rows"])
    assert set(rows["distortion"]) == {"clean", "edges", "patch_shuffle", "shapes:silhouette",
                                       "shapes:texture", "shapes:cue-conflict"}
    assert set(rows["model"]) == {"tiny_standard", "tiny_robust"} and (rows["total"] == 12).all()
    assert report["robust"] == "tiny_robust" and report["standard"] == "tiny_standard"
    assert set(report["shape_bias"]) == {"tiny_standard", "tiny_robust"}
    assert len(report["findings"]) == 4 and "measured claims" in report["summary"]


def test_cli_units_json_and_bad_severity(tiny_checkpoints, capsys):
    import json

    from engine.cli import main

    argv = ["units", "--checkpoint", str(tiny_checkpoints["robust"]), "--n", "10", "--layer",
            "net.block1", "--top-k", "4", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    stats = report["layers"]["tiny_robust"]["net.block1"]
    assert len(stats["roughness"]) == len(stats["distinct_labels"]) > 0
    assert all(1 <= d <= 4 for d in stats["distinct_labels"])
    assert main(["ood", "--checkpoint", str(tiny_checkpoints["robust"]), "--n", "4",
                 "--severities", "9"]) == 2
    assert "severity" in capsys.readouterr().err
