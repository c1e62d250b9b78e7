"""Every analysis the pages and CLIs run works on the imported families — attacks,
CKA (main and per-block layers), saliency (guided backprop refuses clearly where it cannot be
exact), OOD accuracy and feature top-k — on small instances of each family."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.attacks import make_attack
from engine.attacks.evaluate import robust_accuracy
from engine.attribution import attribute
from engine.errors import InvalidParameterError
from engine.featvis import top_k
from engine.generalisation import evaluate_ood
from engine.models import block_layers, build_model, default_layers
from engine.similarity import compare_models

FAMILIES = [
    ("wide_resnet", {"depth": 10, "widen_factor": 1}, (3, 32, 32)),
    ("dm_wide_resnet", {"depth": 10, "width": 1}, (3, 32, 32)),
    ("preact_resnet18", {}, (3, 32, 32)),
    ("cifar_resnet18", {}, (3, 32, 32)),
    ("torchvision:resnet18", {"weights": None}, (3, 64, 64)),
    ("timm:vit_tiny_patch16_224", {}, (3, 224, 224)),
]


@pytest.fixture(scope="module", params=FAMILIES, ids=[f[0] for f in FAMILIES])
def family(request):
    arch, kwargs, shape = request.param
    torch.manual_seed(0)
    model = build_model(arch, 10, shape, [0.5] * 3, [0.25] * 3, **kwargs).eval()
    images = torch.rand(8, *shape)
    labels = model(images).argmax(1).detach()  # the model's own predictions: clean accuracy 1
    return arch, model, images, labels


def test_pgd_attack_runs_and_lowers_accuracy(family):
    _, model, images, labels = family
    result = robust_accuracy(model, images[:4], labels[:4], make_attack("pgd", "cifar10", eps=16 / 255, steps=3))
    assert result.clean_acc == 1.0 and result.robust_acc < 1.0


def test_cka_over_main_and_per_block_layers(family):
    _, model, images, _ = family
    for layers in (default_layers(model), block_layers(model)):
        comparison = compare_models(model, None, images, layers_a=layers, batch_size=8)
        diagonal = np.diag(comparison.within_a.matrix)
        # a layer whose output barely varies (e.g. a random net's logits) is reported, not divided by ~0
        undefined = [name for name, value in zip(layers, diagonal) if abs(value - 1.0) > 1e-6]
        assert all(any(name in w for w in comparison.warnings) for name in undefined), comparison.warnings
        assert len(undefined) <= 1


def test_saliency_maps_and_guided_backprop_exact_or_refused(family):
    arch, model, images, labels = family
    maps = attribute(model, images[:2], labels[:2], "saliency").maps
    assert maps.shape[0] == 2 and np.isfinite(maps).all() and np.abs(maps).sum() > 0
    try:
        guided = attribute(model, images[:2], labels[:2], "guided_backprop").maps
    except InvalidParameterError as exc:
        assert "guided" in str(exc).lower()
        assert not arch.startswith(("cifar_resnet", "torchvision:resnet")), "ResNets have module ReLUs"
    else:
        assert np.isfinite(guided).all()


def test_ood_accuracy_and_feature_top_k(family):
    _, model, images, labels = family
    table = evaluate_ood({"m": model}, images, labels, distortions=["gaussian_blur"], severities=[2]).table
    assert set(table["distortion"]) == {"clean", "gaussian_blur"} and table["accuracy"].between(0, 1).all()
    layer = default_layers(model)[1]
    found = top_k(model, layer, images, k=3, unit=0)
    assert len(found.indices) == 3 and len(set(int(i) for i in found.indices)) == 3
