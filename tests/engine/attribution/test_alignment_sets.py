"""Object masks for the alignment score beyond ``shapes``: foreground pixels of MNIST-style data."""
from __future__ import annotations

import pytest
import torch

from engine.attribution.alignment import (
    ALIGNMENT_DATASETS,
    alignment_score,
    evaluation_set,
    foreground_masks,
)
from engine.errors import InvalidParameterError


def test_foreground_masks_mark_non_zero_pixels_in_any_channel():
    images = torch.zeros(2, 3, 4, 4)
    images[0, 1, 1, 2] = 0.2
    images[1, :, 0, 0] = 1.0
    masks = foreground_masks(images)
    assert masks.shape == (2, 1, 4, 4) and masks.dtype == torch.bool
    assert masks.sum().item() == 2 and masks[0, 0, 1, 2] and masks[1, 0, 0, 0]


def test_alignment_of_a_map_on_the_digit_is_one():
    images = torch.zeros(1, 1, 6, 6)
    images[0, 0, 2:4, 2:4] = 0.7
    masks = foreground_masks(images)
    inside = images[:, 0] * 3.0  # all mass on the object
    assert alignment_score(inside, masks)[0] == pytest.approx(1.0)
    assert alignment_score(torch.ones(1, 6, 6), masks)[0] == pytest.approx(4 / 36)


def test_evaluation_set_for_shapes_uses_its_exact_masks():
    data = evaluation_set("shapes", n=5)
    assert data.images.shape == (5, 3, 32, 32) and data.masks.shape == (5, 1, 32, 32)
    assert not torch.equal(data.masks, foreground_masks(data.images))  # backgrounds are coloured


@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_evaluation_set_for_real_data(dataset, real_data_root, monkeypatch):
    monkeypatch.setenv("ROBUSTSCOPE_DATA", str(real_data_root))
    data = evaluation_set(dataset, n=8)
    assert data.images.shape == (8, 1, 28, 28) and data.labels.shape == (8,)
    area = data.masks.float().mean().item()
    assert 0.05 < area < 0.9  # an object, not the whole image
    assert torch.equal(data.masks, data.images > 0)


def test_evaluation_set_refuses_datasets_without_masks():
    assert "cifar10" not in ALIGNMENT_DATASETS
    with pytest.raises(InvalidParameterError, match="no object masks"):
        evaluation_set("cifar10", n=4)
    with pytest.raises(InvalidParameterError, match=">= 1"):
        evaluation_set("mnist", n=0)


def test_tradeoff_cli_sorts_by_epsilon(tiny_checkpoints, capsys):
    import json

    from engine.cli import main as cli_main

    argv = ["tradeoff", "--checkpoint", str(tiny_checkpoints["robust"]), "--checkpoint",
            str(tiny_checkpoints["standard"]), "--n", "8", "--json"]
    assert cli_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == "shapes" and out["n"] == 8
    eps = [p["epsilon"] for p in out["points"]]
    assert eps[0] == 0.0 and eps[1] > 0
    assert all(0.0 <= p["alignment"] <= 1.0 and 0.0 <= p["clean_accuracy"] <= 1.0 for p in out["points"])


def test_tradeoff_cli_refuses_mixed_datasets(tiny_checkpoints, capsys):
    from engine.cli import main as cli_main

    argv = ["tradeoff", "--checkpoint", str(tiny_checkpoints["standard"]), "--dataset", "mnist", "--n", "4"]
    assert cli_main(argv) == 2
    assert "must be trained on `mnist`" in capsys.readouterr().err
