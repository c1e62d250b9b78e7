"""Tests for engine.similarity: CKA maths against a direct NumPy float64 implementation,
invariances, the minibatch estimator, activation capture and diagnostics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.errors import InvalidParameterError
from engine.similarity import (
    MinibatchCKA,
    capture_activations,
    cka,
    cka_matrix,
    compare_models,
    corresponding_depths,
    gram_linear,
    gram_rbf,
    hsic_biased_matrix,
    hsic_unbiased_matrix,
)


# ---------------------------------------------------------------- NumPy reference (SCIENCE.md)
def np_centre(x):
    return x - x.mean(axis=0, keepdims=True)


def np_linear_cka(x, y):
    """‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on column-centred X, Y."""
    x, y = np_centre(x), np_centre(y)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def np_hsic_biased(k, l):
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return np.trace(k @ h @ l @ h) / (n - 1) ** 2


def np_hsic_unbiased(k, l):
    """[tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n−1)(n−2)) − 2·1ᵀK̃L̃1/(n−2)] / (n(n−3))."""
    n = k.shape[0]
    kt, lt = k.copy(), l.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    one = np.ones(n)
    value = (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
             - 2 * one @ kt @ lt @ one / (n - 2))
    return value / (n * (n - 3))


def np_rbf(x, frac):
    sq = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    med = np.median(np.sqrt(sq[np.triu_indices(len(x), 1)]))
    return np.exp(-sq / (2 * (frac * med) ** 2))


def np_cka(k, l, hsic):
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def random_pair(seed, n=40, d1=12, d2=7):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d1)) + 3.0          # non-zero mean on purpose
    y = np.tanh(x[:, :d2] @ rng.normal(size=(d2, d2))) + 0.3 * rng.normal(size=(n, d2))
    return x, y


# ---------------------------------------------------------------- agreement with NumPy
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_linear_cka_matches_numpy_reference(seed, estimator):
    x, y = random_pair(seed)
    hsic = np_hsic_biased if estimator == "biased" else np_hsic_unbiased
    expected = np_cka(x @ x.T, y @ y.T, hsic)
    got = cka(torch.from_numpy(x), torch.from_numpy(y), estimator=estimator)
    assert got == pytest.approx(expected, abs=1e-6)
    if estimator == "biased":
        assert got == pytest.approx(np_linear_cka(x, y), abs=1e-6)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_rbf_cka_matches_numpy_reference(estimator):
    x, y = random_pair(5)
    hsic = np_hsic_biased if estimator == "biased" else np_hsic_unbiased
    expected = np_cka(np_rbf(x, 0.5), np_rbf(y, 0.5), hsic)
    got = cka(x, y, kernel="rbf", estimator=estimator, sigma_fraction=0.5)
    assert got == pytest.approx(expected, abs=1e-6)


def test_gram_matrices_match_numpy():
    x, _ = random_pair(3)
    xc = np_centre(x)
    np.testing.assert_allclose(gram_linear(torch.from_numpy(x)).numpy(), xc @ xc.T, atol=1e-9)
    np.testing.assert_allclose(gram_rbf(torch.from_numpy(x), 0.8).numpy(), np_rbf(x, 0.8), atol=1e-9)


@pytest.mark.parametrize("fn,ref", [(hsic_biased_matrix, np_hsic_biased),
                                    (hsic_unbiased_matrix, np_hsic_unbiased)])
def test_all_pairs_hsic_equals_pairwise_reference(fn, ref):
    rng = np.random.default_rng(7)
    feats = [rng.normal(size=(30, d)) * s + m for d, s, m in [(5, 1, 0), (9, 2, 4), (3, 0.5, -1)]]
    grams = [f @ f.T for f in feats]                       # uncentred: estimators centre/debias
    got = fn(torch.from_numpy(np.stack(grams))).numpy()
    expected = np.array([[ref(a, b) for b in grams] for a in grams])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_unbiased_hsic_invariant_to_feature_centring():
    # The reason we may centre features before forming Grams: exact invariance of the estimator.
    x, y = random_pair(11)
    raw = np_hsic_unbiased(x @ x.T, y @ y.T)
    xc, yc = np_centre(x), np_centre(y)
    assert np_hsic_unbiased(xc @ xc.T, yc @ yc.T) == pytest.approx(raw, rel=1e-9)


# ---------------------------------------------------------------- invariances
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_cka_with_itself_is_one(kernel, estimator):
    x, _ = random_pair(4)
    assert cka(x, x, kernel=kernel, estimator=estimator) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_invariant_to_orthogonal_transform_and_isotropic_scale(kernel):
    x, y = random_pair(8)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(12, 12)))
    base = cka(x, y, kernel=kernel)
    assert cka(7.5 * x @ q, y, kernel=kernel) == pytest.approx(base, abs=1e-9)
    assert cka(x + 100.0, y, kernel=kernel) == pytest.approx(base, abs=1e-9)  # translation too


def test_linear_cka_not_invariant_to_invertible_linear_map():
    x, y = random_pair(9)
    a = np.diag(np.geomspace(0.01, 100.0, 12)) @ np.random.default_rng(1).normal(size=(12, 12))
    assert abs(np.linalg.det(a)) > 1e-6
    assert abs(cka(x @ a, y) - cka(x, y)) > 0.05


def test_cka_matrix_rows_and_cols():
    x, y = random_pair(2)
    result = cka_matrix([x, y], [y], row_names=["x", "y"], col_names=["y"])
    assert result.matrix.shape == (2, 1)
    assert result.matrix[1, 0] == pytest.approx(1.0)
    assert result.matrix[0, 0] == pytest.approx(np_linear_cka(x, y), abs=1e-9)
    assert result.to_csv().splitlines()[0] == "layer,y"


# ---------------------------------------------------------------- minibatch estimator
def test_minibatch_approaches_full_batch_as_batches_grow():
    rng = np.random.default_rng(0)
    n = 480
    x = rng.normal(size=(n, 16))
    y = np.maximum(x @ rng.normal(size=(16, 8)), 0) + 0.5 * rng.normal(size=(n, 8))
    full = cka(x, y, estimator="unbiased")

    def minibatch(bs, order):
        acc = MinibatchCKA(["x", "y"])
        for s in range(0, n, bs):
            idx = order[s:s + bs]
            acc.update(torch.stack([gram_linear(torch.from_numpy(f[idx])) for f in (x, y)]))
        return acc.cka()[0][0, 1]

    orders = [np.random.default_rng(seed).permutation(n) for seed in range(5)]
    mean_error = {bs: np.mean([abs(minibatch(bs, o) - full) for o in orders]) for bs in (6, 80, 240)}
    assert mean_error[6] > 2 * mean_error[80] > 4 * mean_error[240]
    assert mean_error[240] < 0.005
    # One batch holding every image is exactly the full-batch unbiased estimate.
    assert minibatch(n, np.arange(n)) == pytest.approx(full, abs=1e-9)


# ---------------------------------------------------------------- models
def tiny_net(seed):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 3),
    )


LAYERS = ["0", "2", "4", "6"]


def tiny_data(n=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def no_hooks(model):
    return all(not m._forward_hooks for m in model.modules())


def test_compare_models_matches_captured_full_batch_and_cleans_up():
    a, b = tiny_net(0), tiny_net(1)
    a.train()
    b.eval()
    data = tiny_data()
    result = compare_models(a, b, data, LAYERS, LAYERS, batch_size=24)
    assert no_hooks(a) and no_hooks(b)
    assert a.training and not b.training             # modes restored as found
    feats_a = capture_activations(a, data, LAYERS)
    feats_b = capture_activations(b, data, LAYERS)
    assert a.training
    expected = cka_matrix(list(feats_a.values()), list(feats_b.values()), estimator="unbiased")
    np.testing.assert_allclose(result.across.matrix, expected.matrix, atol=1e-5)
    np.testing.assert_allclose(np.diag(result.within_a.matrix), 1.0, atol=1e-6)
    np.testing.assert_allclose(result.within_b.matrix, result.within_b.matrix.T, atol=1e-9)
    assert result.across.rows == tuple(LAYERS) and result.across.estimator == "minibatch"
    assert result.across.n == 24 and result.warnings == ()


def test_same_model_across_equals_within():
    a = tiny_net(0)
    result = compare_models(a, a, tiny_data(), LAYERS, LAYERS, batch_size=8)
    np.testing.assert_allclose(result.across.matrix, result.within_a.matrix, atol=1e-9)


def test_avg_pooling_gives_channel_features():
    a = tiny_net(0)
    feats = capture_activations(a, tiny_data(6), ["0", "6"], pooling="avg")
    assert feats["0"].shape == (6, 4) and feats["6"].shape == (6, 3)


def test_transform_progress_and_stop():
    a, b = tiny_net(0), tiny_net(1)
    seen, calls = [], []

    def transform(images, labels):
        seen.append(labels.shape[0])
        return (1 - images).clamp(0, 1)

    clean = compare_models(a, b, tiny_data(), LAYERS, LAYERS, batch_size=8)
    flipped = compare_models(a, b, tiny_data(), LAYERS, LAYERS, batch_size=8, transform=transform,
                             progress=lambda d, t: calls.append((d, t)))
    assert seen == [8, 8, 8] and calls == [(8, 24), (16, 24), (24, 24)]
    assert not np.allclose(clean.across.matrix, flipped.across.matrix)
    stopped = compare_models(a, b, tiny_data(), LAYERS, LAYERS, batch_size=8,
                             should_stop=lambda: len(calls) >= 4, progress=lambda d, t: calls.append(d))
    assert stopped.across.n == 8 and "stopped early" in stopped.warnings[0]


def test_hooks_removed_when_transform_fails():
    a = tiny_net(0)

    def broken(images, labels):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        compare_models(a, None, tiny_data(), LAYERS, batch_size=8, transform=broken)
    assert no_hooks(a)


# ---------------------------------------------------------------- diagnostics
def test_constant_features_are_reported_not_nan():
    x = np.ones((20, 5))
    with pytest.raises(InvalidParameterError, match="does not vary"):
        cka(x, random_pair(0, n=20)[1])
    zero_layer = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with torch.no_grad():
        zero_layer[0].weight.fill_(0.01)               # conv output in [-1, -0.91] varies,
        zero_layer[0].bias.fill_(-1.0)                 # its ReLU is identically 0
    result = compare_models(zero_layer, None, tiny_data(), ["0", "1"], batch_size=8)
    assert np.isfinite(result.within_a.matrix).all()
    assert result.within_a.matrix[1, 0] == 0.0 and result.within_a.matrix[0, 0] == pytest.approx(1.0)
    assert len(result.warnings) == 1 and "'A:1'" in result.warnings[0]


def test_batch_too_small_for_unbiased():
    x, y = random_pair(0, n=3)
    with pytest.raises(InvalidParameterError, match="more than 3"):
        cka(x, y, estimator="unbiased")
    with pytest.raises(InvalidParameterError, match="batch size"):
        compare_models(tiny_net(0), None, tiny_data(), LAYERS, batch_size=3)
    # A last batch of < 4 images is merged into the previous one instead of failing.
    result = compare_models(tiny_net(0), None, tiny_data(10), LAYERS, batch_size=8)
    assert result.within_a.n == 10


def test_non_finite_activations_raise():
    a = tiny_net(0)
    with torch.no_grad():
        a[3].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(InvalidParameterError, match="non-finite"):
        compare_models(a, None, tiny_data(), LAYERS, batch_size=8)
    assert no_hooks(a)
    with pytest.raises(InvalidParameterError, match="NaN"):
        cka(np.full((5, 2), np.nan), np.ones((5, 2)))


@pytest.mark.parametrize("kwargs,match", [
    ({"kernel": "cosine"}, "unknown kernel"),
    ({"pooling": "max"}, "unknown pooling"),
    ({"layers_a": ["nope"]}, "unknown layer"),
])
def test_bad_parameters(kwargs, match):
    args = {"layers_a": LAYERS, **kwargs}
    with pytest.raises(InvalidParameterError, match=match):
        compare_models(tiny_net(0), None, tiny_data(), batch_size=8, **args)


def test_corresponding_depths_pairs_relative_depth():
    x, y = random_pair(0)
    across = cka_matrix([x, y, x], [y, x], row_names=["a0", "a1", "a2"], col_names=["b0", "b1"])
    depth, values, pairs = corresponding_depths(across)
    assert pairs == [("a0", "b0"), ("a1", "b1"), ("a2", "b1")]
    np.testing.assert_allclose(depth, [0, 0.5, 1])
    np.testing.assert_allclose(values, across.matrix[[0, 1, 2], [0, 1, 1]])


# ---------------------------------------------------------------- CLI
def test_cli_json_and_atomic_csv(tiny_checkpoints, tmp_path, capsys):
    import csv
    import json

    from engine.cli import main

    a, b = str(tiny_checkpoints["standard"]), str(tiny_checkpoints["robust"])
    args = ["cka", "--a", a, "--b", b, "--dataset", "shapes", "--n", "12", "--batch-size", "6"]
    assert main(args + ["--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    across = np.array(report["across"]["matrix"])
    assert across.shape == (len(report["across"]["rows"]), len(report["across"]["cols"]))
    np.testing.assert_allclose(np.diag(report["within_a"]["matrix"]), 1.0, atol=1e-6)
    assert report["n"] == 12 and report["inputs"] == "clean"

    out = tmp_path / "maps" / "cka.csv"
    assert main(args + ["--out", str(out), "--layers", "net.block1", "net.fc"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["map"] for r in rows] == ["AxA"] * 4 + ["BxB"] * 4 + ["AxB"] * 4
    assert {r["row"] for r in rows} == {"net.block1", "net.fc"}
    assert sorted(p.name for p in out.parent.iterdir()) == ["cka.csv"]      # no temp file left
    assert main(args + ["--json", "--batch-size", "2"]) == 2              # user error: exit 2
    assert "batch size" in capsys.readouterr().err
