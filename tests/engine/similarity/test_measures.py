"""engine.similarity.measures: every measure against its reference implementation (a library where
one installs beside our requirements, else the float64 NumPy references of reference_measures.py,
written from the papers' equations), the invariances each claims, and the maps of two models.

Tolerances (absolute, on values of order 1):
- 1e-9 against the NumPy references of the CCA family, Procrustes, linear regression and CKA: two
  float64 routes (thin SVD of the data vs covariance matrices and their inverse square roots,
  explicit rotation, least squares) agree to roundoff amplified by the covariances' condition
  number, which is below ~1e2 for this generic data (observed differences ~1e-14);
- 1e-12 for RSA and the library rank correlations: ranks are exact, only two dot products differ;
- exact (1e-15) for mutual kNN: it counts shared neighbours;
- 1e-9 against repsim / rsatoolbox / scikit-learn: other float64 code (Eigen's Jacobi SVD, LAPACK
  least squares), roundoff only.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import reference_measures as ref
from engine.errors import InvalidParameterError
from engine.similarity import capture_activations, compare_models
from engine.similarity.measures import (
    DEFAULT_K,
    MEASURES,
    check_memory,
    collect_activations,
    compare_with_measure,
    get_measure,
    largest_n,
    memory_bytes,
    ranks,
)

TIGHT = 1e-9


def pair(seed: int, n: int = 60, d1: int = 8, d2: int = 5):
    """Two related, generic representations of the same n images (non-zero means on purpose)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1)) + 2.0
    y = np.tanh(x @ rng.normal(size=(d1, d2)) / d1) + 0.4 * rng.normal(size=(n, d2)) - 1.0
    return x, y


# ------------------------------------------------------------------ the registry
def test_registry_matches_the_torch_free_names_and_describes_each_measure():
    from engine.analysis.kinds.cka import DEFAULT_K as REQUEST_K
    from engine.analysis.kinds.cka import MEASURE_NAMES

    assert tuple(MEASURES) == tuple(MEASURE_NAMES)
    assert REQUEST_K == DEFAULT_K
    assert {name for name, m in MEASURES.items() if not m.symmetric} == {"pwcca", "linreg"}
    assert all(m.direction for m in MEASURES.values() if not m.symmetric)
    assert [name for name, m in MEASURES.items() if m.distance] == ["procrustes"]
    assert [name for name, m in MEASURES.items() if m.streams] == ["cka"]
    with pytest.raises(InvalidParameterError, match="unknown measure 'nope'"):
        get_measure("nope")


# ------------------------------------------------------------------ agreement with NumPy references
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", list(MEASURES))
def test_each_measure_matches_its_numpy_reference(name, seed):
    x, y = pair(seed)
    expected = ref.REFERENCES[name](x, y)
    assert MEASURES[name](x, y) == pytest.approx(expected, abs=TIGHT)
    assert MEASURES[name](y, x) == pytest.approx(ref.REFERENCES[name](y, x), abs=TIGHT)


def strong_and_weak(seed: int = 5):
    """Representations with three strong shared directions and weak independent noise neurons."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=(80, 3))
    x = np.hstack([signal @ rng.normal(size=(3, 3)) * 10, 0.05 * rng.normal(size=(80, 6))])
    y = np.hstack([signal @ rng.normal(size=(3, 3)) * 10, 0.05 * rng.normal(size=(80, 4))])
    return x, y


def test_svcca_drops_low_variance_directions_like_the_reference():
    """The 99% cut keeps only the strong directions, so SVCCA differs from plain CCA (which the
    noise directions drag down)."""
    x, y = strong_and_weak()
    assert ref.svd_reduce(x).shape[1] == 3
    assert MEASURES["svcca"](x, y) == pytest.approx(ref.svcca(x, y), abs=TIGHT)
    assert MEASURES["svcca"](x, y) > MEASURES["cca"](x, y) + 0.2


@pytest.mark.parametrize("k", [1, 5, 20])
def test_mknn_matches_the_reference_for_several_k(k):
    x, y = pair(3)
    assert MEASURES["mknn"](x, y, k=k) == pytest.approx(ref.mutual_knn(x, y, k), abs=1e-15)


def test_ranks_average_ties_like_scipy():
    from scipy.stats import rankdata

    values = torch.tensor([3.0, 1.0, 3.0, 2.0, 1.0, 3.0], dtype=torch.float64)
    np.testing.assert_array_equal(ranks(values).numpy(), rankdata(values.numpy()))


# ------------------------------------------------------------------ agreement with libraries
def test_cca_matches_repsim():
    repsim = pytest.importorskip("repsim", reason="repsim (reference CCA/PWCCA) is not installed")
    for seed in range(3):
        x, y = pair(seed)
        # repsim's "pillai" summary is Σρ / min(rank X, rank Y): the mean canonical correlation
        assert MEASURES["cca"](x, y) == pytest.approx(repsim.cca([x, y], "pillai")[0, 1], abs=TIGHT)


def test_pwcca_matches_repsim_symmetrised():
    """repsim averages the two directions' PWCCA; ours keeps them apart (weights from the row)."""
    repsim = pytest.importorskip("repsim", reason="repsim (reference CCA/PWCCA) is not installed")
    for seed in range(3):
        x, y = pair(seed)
        both = (MEASURES["pwcca"](x, y) + MEASURES["pwcca"](y, x)) / 2
        assert both == pytest.approx(repsim.pwcca([x, y])[0, 1], abs=TIGHT)
        assert MEASURES["pwcca"](x, y) != pytest.approx(MEASURES["pwcca"](y, x), abs=1e-3)


def test_rsa_matches_rsatoolbox():
    pytest.importorskip("rsatoolbox", reason="rsatoolbox (reference RSA) is not installed")
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    for seed in range(3):
        x, y = pair(seed)
        rdms = [calc_rdm(Dataset(m), method="correlation") for m in (x, y)]
        expected = compare(rdms[0], rdms[1], method="spearman")[0, 0]
        assert MEASURES["rsa"](x, y) == pytest.approx(expected, abs=1e-12)


def test_linreg_matches_scikit_learn():
    sklearn = pytest.importorskip("sklearn", reason="scikit-learn (reference regression) is not installed")
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score

    assert sklearn
    for seed in range(3):
        x, y = pair(seed)
        fitted = LinearRegression().fit(x, y).predict(x)
        expected = r2_score(y, fitted, multioutput="variance_weighted")
        assert MEASURES["linreg"](x, y) == pytest.approx(expected, abs=TIGHT)


def test_mknn_matches_scikit_learn_neighbours():
    pytest.importorskip("sklearn", reason="scikit-learn (reference neighbours) is not installed")
    from sklearn.neighbors import NearestNeighbors

    def sets(m, k):
        found = NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(m).kneighbors(m, return_distance=False)
        return [set(row[1:].tolist()) for row in found]      # the first neighbour is the image itself

    x, y = pair(4)
    expected = np.mean([len(a & b) / DEFAULT_K for a, b in zip(sets(x, DEFAULT_K), sets(y, DEFAULT_K))])
    assert MEASURES["mknn"](x, y) == pytest.approx(expected, abs=1e-15)


# ------------------------------------------------------------------ properties
def _orthogonal(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    return q * np.sign(np.diag(r))


def _invertible(rng, d):
    return _orthogonal(rng, d) @ np.diag(rng.uniform(0.5, 2.0, d)) @ _orthogonal(rng, d)


#: invariance claimed in a Measure's metadata -> transform(rng, matrix) of one representation
TRANSFORMS = {
    "orthogonal transforms": lambda rng, m: m @ _orthogonal(rng, m.shape[1]),
    "isotropic scaling": lambda rng, m: m * rng.uniform(0.1, 10.0),
    "permutations of neurons": lambda rng, m: m[:, rng.permutation(m.shape[1])],
    "translation": lambda rng, m: m + rng.normal(size=(1, m.shape[1])) * 5,
    "invertible linear transforms": lambda rng, m: m @ _invertible(rng, m.shape[1]),
    "adding a constant to every feature of an image": lambda rng, m: m + rng.normal(size=(len(m), 1)) * 3,
}


def _claims(name):
    """(transform, sides) for every invariance the measure claims: sides "xy", "x" or "y"."""
    out = []
    for claim in MEASURES[name].invariances:
        side = "x" if claim.endswith(" of X") else "y" if claim.endswith(" of Y") else "xy"
        out.append((TRANSFORMS[claim.removesuffix(" of X").removesuffix(" of Y")], side))
    return out


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(15, 40), d1=st.integers(3, 7), d2=st.integers(3, 7))
def test_every_claimed_invariance_holds(seed, n, d1, d2):
    """(At least 3 features: two-feature patterns correlate ±1 exactly, so an RDM of them is all
    ties, broken by roundoff.)"""
    rng = np.random.default_rng(seed)
    x, y = pair(int(rng.integers(1 << 30)), n, d1, d2)
    for name, measure in MEASURES.items():
        base = measure(x, y)
        for transform, sides in _claims(name):
            tx = transform(rng, x) if "x" in sides else x
            ty = transform(rng, y) if "y" in sides else y
            assert measure(tx, ty) == pytest.approx(base, abs=1e-7), (name, sides)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(15, 40), d=st.integers(3, 7))
def test_identity_is_one_or_distance_zero_and_symmetry_where_claimed(seed, n, d):
    x, y = pair(seed % (1 << 30), n, d, max(2, d - 1))
    for name, measure in MEASURES.items():
        assert measure(x, x) == pytest.approx(0.0 if measure.distance else 1.0, abs=1e-6), name
        if measure.symmetric:
            assert measure(x, y) == pytest.approx(measure(y, x), abs=1e-9), name


def test_invariance_claims_are_not_vacuous():
    """Scaling one neuron by 5 is not among these measures' invariances, and changes them; CCA
    and linear regression claim every invertible linear map, so it leaves them unchanged."""
    x, y = pair(7)
    stretched = x * np.r_[5.0, np.ones(x.shape[1] - 1)]
    for name in ("cka", "procrustes", "pwcca", "rsa", "mknn"):
        assert abs(MEASURES[name](stretched, y) - MEASURES[name](x, y)) > 1e-3, name
    for name in ("cca", "linreg"):
        assert MEASURES[name](stretched, y) == pytest.approx(MEASURES[name](x, y), abs=1e-9), name
    # SVCCA keeps the directions holding 99% of the variance: a neuron made quiet drops out
    quiet = x * np.r_[1e-3, np.ones(x.shape[1] - 1)]
    assert MEASURES["svcca"](x, y) == pytest.approx(MEASURES["cca"](x, y), abs=1e-12)    # nothing cut
    assert abs(MEASURES["svcca"](quiet, y) - MEASURES["svcca"](x, y)) > 1e-3


def test_procrustes_similarity_form_and_range():
    x, y = pair(1)
    theta = MEASURES["procrustes"](x, y)
    assert 0 < theta < math.pi / 2
    assert MEASURES["procrustes"].similarity(theta) == pytest.approx(math.cos(theta))
    assert MEASURES["cca"].similarity(0.4) == pytest.approx(0.4)


def test_bad_inputs_are_refused_clearly():
    x, y = pair(0)
    with pytest.raises(InvalidParameterError, match="same images"):
        MEASURES["cca"](x, y[:-1])
    with pytest.raises(InvalidParameterError, match="does not vary"):
        MEASURES["procrustes"](x, np.ones_like(y))
    with pytest.raises(InvalidParameterError, match="NaN or inf"):
        MEASURES["rsa"](np.where(x > 3, np.nan, x), y)
    with pytest.raises(InvalidParameterError, match="k must be between 1 and N - 1"):
        MEASURES["mknn"](x, y, k=len(x))


# ------------------------------------------------------------------ memory bound
def test_memory_bound_refuses_naming_it_and_the_largest_n_that_fits():
    widths = [1000, 500, 10]
    bound = memory_bytes("procrustes", 300, widths)
    fits = largest_n("procrustes", 1000, widths, max_bytes=bound)
    assert fits == 300 or memory_bytes("procrustes", fits + 1, widths) > bound
    assert memory_bytes("procrustes", fits, widths) <= bound
    check_memory("procrustes", 300, widths, max_bytes=bound)                 # fits: no error
    with pytest.raises(InvalidParameterError, match=rf"MAX_MEMORY_BYTES\); use at most {fits} images"):
        check_memory("procrustes", 1000, widths, max_bytes=bound)
    # RSA holds an N × N rank table per layer: its memory grows with N², not N
    assert memory_bytes("rsa", 2000, [10]) > 3 * memory_bytes("rsa", 1000, [10])


# ------------------------------------------------------------------ the maps of two models
def _models():
    from engine.models import build_model

    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        out.append(build_model("small_cnn", 6, (3, 32, 32), [0.5] * 3, [0.25] * 3, width=4, hidden=16).eval())
    return out


def _images(n=40):
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.zeros(n, dtype=torch.long)


LAYERS = ["net.block1", "net.block2", "net.block3", "net.hidden", "net.fc"]


@pytest.mark.parametrize("name", [m for m in MEASURES if m != "cka"])
def test_maps_equal_the_measure_on_the_captured_activations(name):
    a, b = _models()
    data = _images()
    comp = compare_with_measure(a, b, data, name, LAYERS, LAYERS, batch_size=16, pooling="avg", forward_batch=8)
    fa = capture_activations(a, data, LAYERS, pooling="avg")
    fb = capture_activations(b, data, LAYERS, pooling="avg")
    measure = MEASURES[name]
    expect = np.array([[measure(fa[r].double(), fb[c].double()) for c in LAYERS] for r in LAYERS])
    np.testing.assert_allclose(comp.across.matrix, expect, atol=1e-10)
    within = np.array([[measure(fa[r].double(), fa[c].double()) for c in LAYERS] for r in LAYERS])
    np.testing.assert_allclose(comp.within_a.matrix, within, atol=1e-10)
    assert comp.measure == name and comp.within_b.matrix.shape == (5, 5) and comp.across.measure == name
    if measure.symmetric:
        assert comp.reverse is None
    else:
        reverse = np.array([[measure(fb[r].double(), fa[c].double()) for c in LAYERS] for r in LAYERS])
        np.testing.assert_allclose(comp.reverse.matrix, reverse, atol=1e-10)
        assert comp.reverse.rows == tuple(LAYERS) and not np.allclose(comp.reverse.matrix, comp.across.matrix.T)


def test_cka_measure_is_the_streamed_minibatch_cka():
    a, b = _models()
    data = _images()
    comp = compare_with_measure(a, b, data, "cka", LAYERS, LAYERS, batch_size=8)
    plain = compare_models(a, b, data, LAYERS, LAYERS, batch_size=8)
    np.testing.assert_array_equal(comp.across.matrix, plain.across.matrix)
    assert comp.measure == "cka" and comp.within_a.estimator == "minibatch"


def test_the_inputs_are_transformed_once_and_both_models_see_them():
    a, b = _models()
    images, labels = _images(24)
    calls = []

    def transform(x, y):
        calls.append(len(x))
        return (x + 0.1).clamp(0, 1)

    features = collect_activations([(a, ["net.fc"]), (b, ["net.fc"])], (images, labels), 24, batch_size=10,
                                   pooling="avg", transform=transform, forward_batch=4)
    assert sum(calls) == 24                                   # each image crafted once, for both models
    with torch.no_grad():
        np.testing.assert_allclose(features[0].numpy(), a((images + 0.1).clamp(0, 1)).numpy(), atol=1e-5)
        np.testing.assert_allclose(features[1].numpy(), b((images + 0.1).clamp(0, 1)).numpy(), atol=1e-5)


def test_maps_refuse_above_the_memory_bound_before_holding_the_activations():
    a, b = _models()
    with pytest.raises(InvalidParameterError, match="holds every activation at once"):
        compare_with_measure(a, b, _images(), "procrustes", LAYERS, LAYERS, max_bytes=10_000)


def test_constant_layer_is_named_and_shown_as_undefined():
    a, b = _models()
    with torch.no_grad():
        b.net.fc.weight.zero_()
        b.net.fc.bias.fill_(0.5)
    comp = compare_with_measure(a, b, _images(), "procrustes", LAYERS, LAYERS, pooling="avg")
    assert any("'B:net.fc'" in w and "does not vary" in w for w in comp.warnings)
    assert comp.across.matrix[0, -1] == pytest.approx(math.pi / 2)


def test_saturated_layers_are_warned_about():
    a, b = _models()
    comp = compare_with_measure(a, b, _images(24), "cca", ["net.block1", "net.fc"], ["net.block1", "net.fc"])
    assert any("span all 23 centred directions" in w and "net.block1" in w for w in comp.warnings)
    assert comp.across.matrix[0, 0] == pytest.approx(1.0)


def test_stopping_raises_instead_of_a_partial_result():
    a, b = _models()
    with pytest.raises(InvalidParameterError, match="stopped"):
        compare_with_measure(a, b, _images(), "rsa", LAYERS, LAYERS, should_stop=lambda: True)
