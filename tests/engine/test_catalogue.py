"""engine.catalogue: the torch-free names every registry is checked against."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine import catalogue
from engine.catalogue import CatalogueMismatch, require_names

REPO = Path(__file__).resolve().parents[2]


def test_the_catalogue_imports_only_the_standard_library():
    code = ("import sys; before = set(sys.modules); import engine.catalogue; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "assert new - set(sys.stdlib_module_names) <= {'engine'}, sorted(new)")
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_every_registry_names_what_the_catalogue_names():
    from engine.attacks import ATTACKS, AUTOATTACK_FAMILY, AUTOATTACK_VERSIONS, EXPOSED, STEPS
    from engine.attribution import ALIGNMENT_DATASETS, DEFAULT_FRACTIONS, METHODS, MODES, REPLACEMENTS
    from engine.attribution.render import REDUCTIONS
    from engine.checkpoints.importers import FORMATS
    from engine.checkpoints.robustbench import DATASETS as ROBUSTBENCH
    from engine.data import DATASETS, LOADERS
    from engine.data.distortions import DISTORTIONS, SEVERITIES
    from engine.featvis.config import MAX_VIS_PIXELS, MAX_VIS_SIDE, MAX_VIS_STEPS, MAX_VIS_TARGETS
    from engine.models import ARCHITECTURES, BN_BRANCHES
    from engine.similarity import KERNELS, POOLINGS
    from engine.similarity.structure import REFERENCES
    from engine.training import METHODS as TRAINING_METHODS, NORMS
    from engine.training.methods import METHOD_LOSSES

    assert tuple(ATTACKS) == tuple(EXPOSED) == catalogue.ATTACKS
    assert tuple(AUTOATTACK_FAMILY) == catalogue.AUTOATTACK_FAMILY
    assert tuple(AUTOATTACK_VERSIONS) == catalogue.AUTOATTACK_VERSIONS
    assert tuple(STEPS) == NORMS == catalogue.NORMS and set(catalogue.NORM_SYMBOLS) == set(catalogue.NORMS)
    assert tuple(DATASETS) == catalogue.DATASETS and tuple(LOADERS) == catalogue.LOADABLE_DATASETS
    assert tuple(DISTORTIONS) == catalogue.DISTORTIONS and tuple(SEVERITIES) == catalogue.SEVERITIES
    assert tuple(ARCHITECTURES) == catalogue.ARCHITECTURES and tuple(BN_BRANCHES) == catalogue.BN_BRANCHES
    assert TRAINING_METHODS == catalogue.TRAINING_METHODS and set(METHOD_LOSSES) == set(catalogue.TRAINING_METHODS)
    assert tuple(METHODS) == catalogue.ATTRIBUTION_METHODS and tuple(REDUCTIONS) == catalogue.REDUCTIONS
    assert tuple(MODES) == catalogue.CURVE_MODES and tuple(REPLACEMENTS) == catalogue.CURVE_REPLACEMENTS
    assert tuple(DEFAULT_FRACTIONS) == catalogue.CURVE_FRACTIONS
    assert tuple(ALIGNMENT_DATASETS) == catalogue.ALIGNMENT_DATASETS
    assert (tuple(KERNELS), tuple(POOLINGS), tuple(REFERENCES)) == \
        (catalogue.CKA_KERNELS, catalogue.CKA_POOLINGS, catalogue.CKA_REFERENCES)
    assert (MAX_VIS_TARGETS, MAX_VIS_STEPS, MAX_VIS_SIDE, MAX_VIS_PIXELS) == \
        (catalogue.MAX_VIS_TARGETS, catalogue.MAX_VIS_STEPS, catalogue.MAX_VIS_SIDE, catalogue.MAX_VIS_PIXELS)
    assert tuple(FORMATS) == catalogue.IMPORT_FORMATS and tuple(ROBUSTBENCH) == catalogue.ROBUSTBENCH_DATASETS
    from engine.attribution.metrics import EVALUATORS, LOCALISATION
    from engine.similarity.measures import MEASURES

    assert tuple(MEASURES) == tuple(catalogue.SIMILARITY_MEASURES)
    assert tuple(EVALUATORS) == tuple(catalogue.EXPLANATION_METRICS) and LOCALISATION == catalogue.LOCALISATION_METRICS


@pytest.mark.parametrize("method", list(catalogue.TRAINING_METHODS))
def test_training_attack_is_the_configs(method):
    from engine.training import TrainConfig

    for alpha in (None, 0.01):
        config = TrainConfig(method=method, eps=0.1, steps=4, alpha=alpha)
        assert catalogue.training_attack(method, 0.1, 4, alpha) == (config.attack_steps, config.attack_alpha)


def test_a_registry_out_of_step_fails_with_both_places_named():
    require_names({"a": 1, "b": 2}, ("a", "b"), "reg vs cat")
    require_names(("b", "a"), ("a", "b"), "reg vs cat", ordered=False)
    with pytest.raises(CatalogueMismatch, match=r"reg vs cat: the registry lacks \['c'\]"):
        require_names(("a", "b"), ("a", "b", "c"), "reg vs cat")
    with pytest.raises(CatalogueMismatch, match=r"engine/catalogue.py lacks \['new'\]"):
        require_names({"a": 1, "new": 2}, ("a",), "reg vs cat")
    with pytest.raises(CatalogueMismatch, match="another order"):
        require_names(("b", "a"), ("a", "b"), "reg vs cat")


def test_norm_symbols():
    assert [catalogue.norm_symbol(n) for n in ("linf", "l2", "l1", None)] == ["ℓ∞", "ℓ₂", "l1", ""]
