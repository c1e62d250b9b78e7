"""Representation-similarity measures beside CKA, and the layer × layer maps of any of them.

Every measure compares two representations of the same N images, X (N × D1) and Y (N × D2),
computed in float64. Each is split into a per-layer ``prepare`` (done once per layer of a map)
and a pairwise ``compare``, so a map of L layers costs L preparations and ~L²/2 comparisons:

- ``procrustes`` — angular shape distance (Williams et al. 2021): centre the columns, scale to
  unit Frobenius norm, θ = arccos ‖XᵀY‖_* ∈ [0, π/2] (0: identical up to rotation). Similarity
  form: cos θ = ‖XᵀY‖_*.
- ``cca`` — mean canonical correlation ρ̄ = (1/m) Σ ρ_i, m = min(rank X, rank Y) (Hotelling 1936;
  the summary of Raghu et al. 2017): ρ_i are the singular values of U_XᵀU_Y, U the orthonormal
  bases of the centred column spaces.
- ``svcca`` — Raghu et al. 2017: keep the fewest singular directions of each centred
  representation that hold ``SVCCA_KEEP`` (99%) of its variance (Σσ²), then ``cca``.
- ``pwcca`` — Morcos et al. 2018: Σ α_i ρ_i with α_i ∝ Σ_j |⟨h_i, x_j⟩|, h_i the unit canonical
  variates of X and x_j its centred neurons. Asymmetric: the weights come from X (the row layer).
- ``rsa`` — Kriegeskorte et al. 2008: Spearman correlation of the two representational
  dissimilarity matrices (RDM: 1 − Pearson correlation between two images' activation patterns),
  over the N(N−1)/2 image pairs. In [−1, 1].
- ``mknn`` — mutual k-nearest-neighbour alignment (Huh et al. 2024): the mean over images of
  |kNN_X(i) ∩ kNN_Y(i)| / k, neighbours by cosine similarity, the image itself excluded.
- ``linreg`` — R² of the least-squares prediction of Y from X (with intercept):
  1 − ‖Y_c − P_X Y_c‖²_F / ‖Y_c‖²_F. Asymmetric: X (the row layer) predicts Y (the column layer).
- ``cka`` — linear CKA (Kornblith et al. 2019); its maps stream (``engine.similarity.compare_models``).

Every measure but CKA needs all N × D activations of every layer at once: :func:`memory_bytes`
says how much and :func:`compare_with_measure` refuses a run above :data:`MAX_MEMORY_BYTES`,
naming the largest N that fits. Spatial activations are handled like CKA's, by the ``pooling``
option ("flatten": every activation a feature; "avg": global average pooling), for every measure.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from engine.catalogue import SIMILARITY_MEASURES, require_names
from engine.errors import InvalidParameterError
from engine.similarity.cka import CKAComparison, CKAResult, _prepared, _resolve_layers, compare_models
from engine.similarity.features import (
    Transform,
    batch_bounds,
    dataset_size,
    eval_mode,
    forward_features,
    model_device,
    slice_batch,
)

#: the most memory (bytes) a full-batch measure may hold: float32 activations + per-layer states
MAX_MEMORY_BYTES = 4 * 2 ** 30
#: the variance SVCCA keeps (Raghu et al. 2017)
SVCCA_KEEP = 0.99
#: the neighbours mutual kNN counts by default (Huh et al. 2024)
DEFAULT_K = 10
#: rows per block when a measure forms N × N similarities (bounds the transient memory)
_ROW_BLOCK = 1024


# ------------------------------------------------------------------------------- input checks
def as_matrix(x, name: str = "features") -> torch.Tensor:
    """``x`` (tensor or array, (N, ...)) as an (N, D) float64 CPU tensor; NaN/inf refused."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).detach()
    if t.ndim < 2 or t.shape[0] < 2:
        raise InvalidParameterError(f"{name}: expected features of shape (N >= 2, D), got {tuple(t.shape)}")
    t = t.reshape(t.shape[0], -1).to(device="cpu", dtype=torch.float64)
    if not torch.isfinite(t).all():
        raise InvalidParameterError(f"{name}: features contain NaN or inf")
    return t


def varies(x: torch.Tensor) -> bool:
    """Whether any feature of ``x`` (N, D) takes more than one value across the images."""
    return bool((x - x[:1]).abs().max() > 0)


# ------------------------------------------------------------------------------- per-layer states
@dataclass(frozen=True)
class Basis:
    """A centred representation X_c = u · diag(s) · vh, truncated at its numerical rank.

    Attributes:
        u: (N, r) orthonormal basis of the centred column space.
        s: (r,) singular values, largest first.
        vh: (r, D) right singular vectors (kept only where a measure needs the neurons: PWCCA).
    """

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor | None = None


def _thin_svd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(u, s, vh) of x = u diag(s) vh; a wide x is decomposed through its transpose (LAPACK's
    divide and conquer is several times faster on tall matrices; same factors)."""
    if x.shape[1] <= x.shape[0]:
        return torch.linalg.svd(x, full_matrices=False)
    u, s, vh = torch.linalg.svd(x.T, full_matrices=False)
    return vh.T, s, u.T


def basis(x, keep_neurons: bool = False) -> Basis:
    """The thin SVD of the column-centred ``x``, singular values below the numerical-rank
    tolerance (σ_max · max(N, D) · float64 eps, as ``numpy.linalg.matrix_rank``) dropped."""
    x = as_matrix(x)
    u, s, vh = _thin_svd(x - x.mean(dim=0, keepdim=True))
    tol = (s[0] if len(s) else 0.0) * max(x.shape) * torch.finfo(torch.float64).eps
    r = int((s > tol).sum())
    return Basis(u[:, :r], s[:r], vh[:r] if keep_neurons else None)


def neuron_basis(x) -> Basis:
    """:func:`basis` keeping the right singular vectors (PWCCA weighs X's neurons)."""
    return basis(x, keep_neurons=True)


def svcca_basis(x, keep: float = SVCCA_KEEP) -> Basis:
    """The fewest leading singular directions of the centred ``x`` whose variance (Σσ²) reaches
    ``keep`` of the total (Raghu et al. 2017's SVD step)."""
    full = basis(x)
    if not len(full.s):
        return full
    share = torch.cumsum(full.s ** 2, 0) / (full.s ** 2).sum()
    r = min(int((share < keep - 1e-12).sum()) + 1, len(full.s))
    return Basis(full.u[:, :r], full.s[:r])


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (an all-zero row stays zero)."""
    norms = x.norm(dim=1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def _row_blocks(n: int):
    """[start, stop) row blocks of at most :data:`_ROW_BLOCK` rows."""
    return [(s, min(s + _ROW_BLOCK, n)) for s in range(0, n, _ROW_BLOCK)]


def rdm_vector(x) -> torch.Tensor:
    """The upper triangle (i < j, row by row) of the correlation-distance RDM of ``x``'s rows:
    1 − Pearson correlation of two images' activation patterns (a pattern with no variance
    across its features correlates 0 with every other)."""
    x = as_matrix(x)
    patterns = _unit_rows(x - x.mean(dim=1, keepdim=True))
    pieces = []
    for start, stop in _row_blocks(len(x)):
        corr = patterns[start:stop] @ patterns.T
        rows = torch.arange(start, stop)[:, None]
        pieces.append(1.0 - corr[torch.arange(len(x))[None, :] > rows])
    return torch.cat(pieces)


def ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties sharing their average rank (as ``scipy.stats.rankdata``)."""
    order = torch.argsort(values, stable=True)
    ordered = values[order]
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    group = torch.cumsum(starts, 0) - 1
    positions = torch.arange(1, len(values) + 1, dtype=torch.float64)
    average = torch.zeros(int(group[-1]) + 1, dtype=torch.float64).index_add_(0, group, positions)
    average /= torch.bincount(group).to(torch.float64)
    out = torch.empty_like(positions)
    out[order] = average[group]
    return out


def rdm_ranks(x) -> torch.Tensor:
    """The RDM's ranks, centred and scaled to unit length: Spearman's ρ is then a dot product."""
    r = ranks(rdm_vector(x))
    return _unit_rows((r - r.mean())[None, :])[0]


def neighbours(x, k: int = DEFAULT_K) -> torch.Tensor:
    """(N, k) indices of each image's k nearest other images by cosine similarity."""
    x = as_matrix(x)
    if not 1 <= k < len(x):
        raise InvalidParameterError(f"k must be between 1 and N - 1 = {len(x) - 1}, got {k}")
    unit = _unit_rows(x)
    out = []
    for start, stop in _row_blocks(len(x)):
        sims = unit[start:stop] @ unit.T
        sims[torch.arange(stop - start), torch.arange(start, stop)] = -math.inf
        out.append(torch.topk(sims, k, dim=1).indices)
    return torch.cat(out)


def centred_gram(x) -> torch.Tensor:
    """K = X_c X_cᵀ of the column-centred ``x`` (linear CKA's Gram matrix)."""
    x = as_matrix(x)
    x = x - x.mean(dim=0, keepdim=True)
    return x @ x.T


# ------------------------------------------------------------------------------- comparisons
def _correlations(bx: Basis, by: Basis) -> torch.Tensor:
    """Canonical correlations ρ (min(r_X, r_Y),), clipped to [0, 1]."""
    if not len(bx.s) or not len(by.s):
        return torch.zeros(0, dtype=torch.float64)
    return torch.linalg.svdvals(bx.u.T @ by.u).clamp(0.0, 1.0)


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if len(values) else 0.0


def procrustes_angle(bx: Basis, by: Basis) -> float:
    """arccos of the nuclear norm of XᵀY for unit-Frobenius X, Y (π/2 when one is constant)."""
    if not len(bx.s) or not len(by.s):
        return math.pi / 2
    cross = (bx.u * bx.s).T @ (by.u * by.s)
    cosine = float(torch.linalg.svdvals(cross).sum() / (bx.s.norm() * by.s.norm()))
    return math.acos(min(max(cosine, 0.0), 1.0))


def mean_correlation(bx: Basis, by: Basis) -> float:
    """The mean canonical correlation of two (possibly truncated) bases."""
    return _mean(_correlations(bx, by))


def projection_weighted(bx: Basis, by: Basis) -> float:
    """PWCCA with X's weights: α_i = Σ_j |⟨h_i, x_j⟩| over X's centred neurons x_j, where
    h_i = U_X a_i are X's unit canonical variates (a_i: left singular vectors of U_XᵀU_Y)."""
    if not len(bx.s) or not len(by.s):
        return 0.0
    left, rho, _ = torch.linalg.svd(bx.u.T @ by.u, full_matrices=False)
    # ⟨h_i, x_j⟩ = (a_iᵀ U_Xᵀ)(U_X diag(s) vh)_j = (a_iᵀ diag(s) vh)_j
    alpha = ((left.T * bx.s) @ bx.vh).abs().sum(dim=1)
    return float((alpha * rho.clamp(0.0, 1.0)).sum() / alpha.sum())


def explained_variance(bx: Basis, by: Basis) -> float:
    """R² of Y predicted from X: ‖U_Xᵀ Y_c‖²_F / ‖Y_c‖²_F (0 when Y is constant)."""
    if not len(by.s):
        return 0.0
    return float(((bx.u.T @ (by.u * by.s)) ** 2).sum() / (by.s ** 2).sum())


def spearman(rx: torch.Tensor, ry: torch.Tensor) -> float:
    """Pearson correlation of two centred unit-length rank vectors (Spearman's ρ)."""
    return float(rx @ ry)


def mutual_neighbours(nx: torch.Tensor, ny: torch.Tensor) -> float:
    """Mean over images of the share of X's k neighbours that are among Y's too."""
    k = nx.shape[1]
    shared = (nx[:, :, None] == ny[:, None, :]).any(dim=2).sum(dim=1)
    return float(shared.to(torch.float64).mean() / k)


def gram_alignment(kx: torch.Tensor, ky: torch.Tensor) -> float:
    """⟨K, L⟩_F / (‖K‖_F ‖L‖_F) of centred Gram matrices: biased linear CKA."""
    norm = kx.norm() * ky.norm()
    return float((kx * ky).sum() / norm) if norm > 0 else 0.0


# ------------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Measure:
    """One similarity measure: how to prepare a layer, compare two, and read the values.

    Attributes:
        name, title: registry name and a short label ("Procrustes angle θ").
        prepare: ``prepare(x (N, D) float64, **options) -> state`` (once per layer).
        compare: ``compare(state_x, state_y) -> float``.
        symmetric: compare(X, Y) == compare(Y, X); an asymmetric map reads rows → columns.
        distance: values are distances (0: identical), not similarities.
        value_range: the values' bounds (heatmap colour scale).
        direction: for asymmetric measures, how to read a map entry [row, column].
        options: the keyword options ``prepare`` takes (e.g. ``("k",)``).
        streams: computed batch by batch (CKA); else all activations are held at once.
        state_values: ``state_values(n, d, options) -> float64 values`` one prepared layer holds.
        flops: ``flops(n, d_x, d_y, options)``: rough operation count of preparing one layer of
            width ``d_x`` (``d_y`` None) or of one comparison (the cost model's figure).
        invariances: what leaves the value unchanged (documented and tested).
        paper: the reference.
    """

    name: str
    title: str
    prepare: Callable[..., Any]
    compare: Callable[[Any, Any], float]
    symmetric: bool
    distance: bool
    value_range: tuple[float, float]
    state_values: Callable[[int, int, dict], float]
    flops: Callable[[int, int, int | None, dict], float]
    invariances: tuple[str, ...]
    paper: str
    direction: str = ""
    options: tuple[str, ...] = ()
    streams: bool = False

    def __call__(self, x, y, **options) -> float:
        """The measure between two representations of the same N images."""
        x, y = as_matrix(x, "x"), as_matrix(y, "y")
        if x.shape[0] != y.shape[0]:
            raise InvalidParameterError(f"x and y must hold the same images, got N = {x.shape[0]} and {y.shape[0]}")
        for name, value in (("x", x), ("y", y)):
            if not varies(value):
                raise InvalidParameterError(f"{name} does not vary across the images; {self.name} is undefined")
        opts = self.accepted(options)
        return self.compare(self.prepare(x, **opts), self.prepare(y, **opts))

    def accepted(self, options: dict) -> dict:
        """The options this measure takes (others are left out; None means its default)."""
        return {k: v for k, v in options.items() if k in self.options and v is not None}

    def similarity(self, values) -> np.ndarray:
        """Values as similarities (1: identical): cos θ for the Procrustes angle, else as they are."""
        values = np.asarray(values, dtype=np.float64)
        return np.cos(values) if self.distance else values

    def undefined(self) -> float:
        """The value shown where a layer does not vary (similarity 0)."""
        return math.pi / 2 if self.distance else 0.0


def _svd_flops(n: int, d: int, _dy, _options) -> float:
    return 4.0 * n * d * min(n, d)


def _pair_flops(n: int, dx: int, dy: int) -> float:
    rx, ry = min(n, dx), min(n, dy)
    return 2.0 * n * rx * ry + 4.0 * rx * ry * min(rx, ry)


def _basis_flops(n, dx, dy, options) -> float:
    return _svd_flops(n, dx, None, options) if dy is None else _pair_flops(n, dx, dy)


def _pwcca_flops(n, dx, dy, options) -> float:
    return _basis_flops(n, dx, dy, options) + (0 if dy is None else 2.0 * min(n, dx) ** 2 * dx)


def _gram_flops(n, dx, dy, _options) -> float:
    return 2.0 * n * n * dx + 40.0 * n * n if dy is None else 2.0 * n * n


def _knn_flops(n, dx, dy, options) -> float:
    k = options.get("k") or DEFAULT_K
    return 2.0 * n * n * dx if dy is None else 1.0 * n * k * k


def _basis_values(n: int, d: int, _options) -> float:
    return n * min(n, d) + min(n, d)


def _pwcca_values(n: int, d: int, _options) -> float:
    return (n + d) * min(n, d)


def _square_values(n: int, _d: int, _options) -> float:
    return float(n) * n


def _knn_values(n: int, _d: int, options) -> float:
    return float(n) * (options.get("k") or DEFAULT_K)


_ORTHOGONAL = "orthogonal transforms"
_SCALING = "isotropic scaling"
_PERMUTATION = "permutations of neurons"
_TRANSLATION = "translation"

#: name -> :class:`Measure`, in the order select boxes list them (``engine.catalogue.SIMILARITY_MEASURES``)
MEASURES: dict[str, Measure] = {m.name: m for m in (
    Measure("cka", "CKA", centred_gram, gram_alignment, True, False, (0.0, 1.0), _square_values, _gram_flops,
            (_ORTHOGONAL, _SCALING, _PERMUTATION, _TRANSLATION), "Kornblith et al. 2019", streams=True),
    Measure("procrustes", "Procrustes angle θ", basis, procrustes_angle, True, True, (0.0, math.pi / 2),
            _basis_values, _basis_flops, (_ORTHOGONAL, _SCALING, _PERMUTATION, _TRANSLATION), "Williams et al. 2021"),
    Measure("cca", "mean CCA", basis, mean_correlation, True, False, (0.0, 1.0), _basis_values, _basis_flops,
            ("invertible linear transforms", _ORTHOGONAL, _SCALING, _PERMUTATION, _TRANSLATION), "Raghu et al. 2017"),
    Measure("svcca", "SVCCA", svcca_basis, mean_correlation, True, False, (0.0, 1.0), _basis_values, _basis_flops,
            (_ORTHOGONAL, _SCALING, _PERMUTATION, _TRANSLATION), "Raghu et al. 2017"),
    Measure("pwcca", "PWCCA", neuron_basis, projection_weighted, False, False, (0.0, 1.0),
            _pwcca_values, _pwcca_flops, (_SCALING, _PERMUTATION, _TRANSLATION, "invertible linear transforms of Y"),
            "Morcos et al. 2018", direction="weighted by the row layer's neurons"),
    Measure("rsa", "RSA (Spearman ρ of RDMs)", rdm_ranks, spearman, True, False, (-1.0, 1.0), _square_values,
            _gram_flops, (_SCALING, _PERMUTATION, "adding a constant to every feature of an image"),
            "Kriegeskorte et al. 2008"),
    Measure("mknn", "mutual kNN", neighbours, mutual_neighbours, True, False, (0.0, 1.0), _knn_values, _knn_flops,
            (_ORTHOGONAL, _SCALING, _PERMUTATION), "Huh et al. 2024", options=("k",)),
    Measure("linreg", "linear regression R²", basis, explained_variance, False, False, (0.0, 1.0), _basis_values,
            _basis_flops, ("invertible linear transforms of X", _ORTHOGONAL, _SCALING, _TRANSLATION, _PERMUTATION),
            "Kornblith et al. 2019 (R²_LR)", direction="rows predict columns"),
)}
require_names(MEASURES, SIMILARITY_MEASURES, "engine.similarity.measures.MEASURES vs engine.catalogue.SIMILARITY_MEASURES")


def get_measure(name: str) -> Measure:
    """The :class:`Measure` registered as ``name``."""
    try:
        return MEASURES[name]
    except (KeyError, TypeError):
        raise InvalidParameterError(f"unknown measure {name!r}; choose one of: {', '.join(MEASURES)}") from None


def procrustes(x, y) -> float:
    """Angular Procrustes distance θ ∈ [0, π/2] between x (N, D1) and y (N, D2) (Williams et al. 2021)."""
    return MEASURES["procrustes"](x, y)


def cca(x, y) -> float:
    """Mean canonical correlation between x (N, D1) and y (N, D2)."""
    return MEASURES["cca"](x, y)


def svcca(x, y) -> float:
    """SVCCA (Raghu et al. 2017): 99% of each one's variance kept, then the mean canonical correlation."""
    return MEASURES["svcca"](x, y)


def pwcca(x, y) -> float:
    """Projection-weighted CCA (Morcos et al. 2018), weighted by x's neurons."""
    return MEASURES["pwcca"](x, y)


def rsa(x, y) -> float:
    """Spearman ρ between the correlation-distance RDMs of x and y (Kriegeskorte et al. 2008)."""
    return MEASURES["rsa"](x, y)


def mknn(x, y, k: int = DEFAULT_K) -> float:
    """Mutual k-nearest-neighbour alignment of x and y (Huh et al. 2024)."""
    return MEASURES["mknn"](x, y, k=k)


def linreg(x, y) -> float:
    """R² of the least-squares prediction (with intercept) of y from x."""
    return MEASURES["linreg"](x, y)


def linear_cka(x, y) -> float:
    """Linear CKA with the biased HSIC estimator (Kornblith et al. 2019)."""
    return MEASURES["cka"](x, y)


# ------------------------------------------------------------------------------- memory
#: float64 copies of one layer (N × D) alive while it is prepared (its float64 copy, the centred
#: copy, the SVD's factor)
_WORKING_COPIES = 3


def memory_bytes(measure: str, n: int, widths: Sequence[int], options: dict | None = None) -> int:
    """Bytes a full-batch map holds at its peak: float32 activations (4 · N · ΣD), the prepared
    states (float64) and the working copies of the widest layer while it is prepared."""
    found, options = get_measure(measure), options or {}
    states = sum(found.state_values(n, d, options) for d in widths)
    working = _WORKING_COPIES * n * max(widths, default=0)
    return int(4 * n * sum(widths) + 8 * (states + working))


def largest_n(measure: str, n: int, widths: Sequence[int], options: dict | None = None,
              max_bytes: int = MAX_MEMORY_BYTES) -> int:
    """The largest number of images (<= n) whose :func:`memory_bytes` fits ``max_bytes`` (0: none)."""
    low, high = 0, n
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if memory_bytes(measure, mid, widths, options) <= max_bytes else (low, mid - 1)
    return low


def check_memory(measure: str, n: int, widths: Sequence[int], options: dict | None = None,
                 max_bytes: int = MAX_MEMORY_BYTES) -> None:
    """Refuse a full-batch map whose :func:`memory_bytes` exceeds ``max_bytes``, naming the bound
    and the largest number of images that fits."""
    needed = memory_bytes(measure, n, widths, options)
    if needed <= max_bytes:
        return
    fits = largest_n(measure, n, widths, options, max_bytes)
    raise InvalidParameterError(
        f"{measure} holds every activation at once: {n} images × {sum(widths):,} features "
        f"need about {needed / 2 ** 30:.1f} GiB, above the {max_bytes / 2 ** 30:.1f} GiB bound "
        f"(engine.similarity.measures.MAX_MEMORY_BYTES); use at most {fits} images, pooling 'avg' or fewer layers"
    )


# ------------------------------------------------------------------------------- activations
def collect_activations(
    parts,
    data,
    total: int,
    batch_size: int = 200,
    pooling: str = "flatten",
    transform: Transform | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    forward_batch: int | None = None,
    check: Callable[[list[int]], None] | None = None,
) -> list[torch.Tensor]:
    """One pass over the first ``total`` images: every (model, layer) of ``parts`` as an
    (total, D) float32 CPU tensor (each model runs once per batch, on the same inputs).

    Args:
        parts: [(model, layer names), ...] on one device.
        transform: applied per batch (``forward_batch`` images at a time) before the forward
            passes, as in :func:`engine.similarity.compare_models`, so every model sees the same
            (e.g. adversarial) images.
        check: called with the layers' widths after the first batch, before the buffers for all
            images are allocated (the memory bound).
        should_stop: polled before each batch; True raises InvalidParameterError (a full-batch
            measure has no partial result).
    """
    device = model_device(parts[0][0])
    step = None if forward_batch is None else max(1, int(forward_batch))
    buffers: list[torch.Tensor] = []
    with eval_mode(*(m for m, _ in parts)):
        for start, stop in batch_bounds(total, batch_size, min_last=1):
            if should_stop is not None and should_stop():
                raise InvalidParameterError(f"stopped after {start} of {total} images; nothing was computed")
            images, labels = slice_batch(data, start, stop)
            x = _prepared(images, labels, transform, device, step)
            for offset in range(0, len(x), step or len(x)):
                piece = x[offset:offset + (step or len(x))]
                features = forward_features(parts, piece, pooling)
                if not buffers:
                    if check is not None:
                        check([f.shape[1] for f in features])
                    buffers = [torch.empty((total, f.shape[1]), dtype=torch.float32) for f in features]
                for buffer, f in zip(buffers, features):
                    buffer[start + offset:start + offset + len(f)] = f.cpu()
            if progress is not None:
                progress(stop, total)
    return buffers


# ------------------------------------------------------------------------------- maps
@dataclass(frozen=True)
class SimilarityMap(CKAResult):
    """A layer × layer map of any measure (a :class:`CKAResult` with its measure named).

    ``matrix[i, j]`` compares row layer i with column layer j; for an asymmetric measure it reads
    as the measure's ``direction`` says (linreg: row i predicts column j). ``estimator`` is
    "full batch" for measures that hold all activations.
    """

    measure: str = "cka"

    def to_dict(self) -> dict:
        return {**super().to_dict(), "measure": self.measure}


@dataclass(frozen=True)
class MeasureComparison(CKAComparison):
    """The A×A, B×B and A×B maps of one measure (and B×A for an asymmetric one).

    Attributes (besides :class:`CKAComparison`'s):
        measure: the measure's registry name.
        reverse: the B×A map (rows: B's layers) of an asymmetric measure, else None.
        options: the measure's options used (e.g. ``{"k": 10}``).
    """

    measure: str = "cka"
    reverse: SimilarityMap | None = None
    options: dict = field(default_factory=dict)


def _prepare_all(found: Measure, features: list[torch.Tensor], names: Sequence[str], options: dict,
                 should_stop) -> tuple[list, list[str]]:
    """Each layer's prepared state (None for a layer that does not vary), freeing its activations."""
    states, warnings = [], []
    for i, name in enumerate(names):
        if should_stop is not None and should_stop():
            raise InvalidParameterError(f"stopped while preparing the layers; {found.name} was not computed")
        x = features[i].to(torch.float64)
        features[i] = None
        if varies(x):
            states.append(found.prepare(x, **options))
        else:
            states.append(None)
            warnings.append(f"layer {name!r}: its representation does not vary across the images; "
                            f"{found.name} with it is undefined and shown as {found.undefined():g}")
    return states, warnings


def _saturation(found: Measure, states: list, names: Sequence[str], n: int) -> list[str]:
    """Warnings for CCA-family / regression layers whose rank reaches N − 1 (values forced to 1)."""
    if found.name not in ("cca", "pwcca", "linreg"):
        return []
    full = [name for state, name in zip(states, names) if state is not None and len(state.s) >= n - 1]
    if not full:
        return []
    return [f"{found.name}: layer(s) {', '.join(full)} span all {n - 1} centred directions of the {n} images, so "
            f"{found.name} with them is 1 whatever the other layer; use pooling 'avg' or more images"]


def _fill(found: Measure, rows: list, cols: list, same: bool, should_stop) -> np.ndarray:
    """The (len(rows), len(cols)) map; a symmetric measure's within map is computed once per pair."""
    out = np.empty((len(rows), len(cols)))
    for i, sx in enumerate(rows):
        if should_stop is not None and should_stop():
            raise InvalidParameterError(f"stopped while comparing the layers; {found.name} was not computed")
        for j, sy in enumerate(cols):
            if same and found.symmetric and j < i:
                out[i, j] = out[j, i]
            elif sx is None or sy is None:
                out[i, j] = found.undefined()
            else:
                out[i, j] = found.compare(sx, sy)
    return out


def _measure_maps(found, states_a, states_b, names_a, names_b, n, should_stop, warnings):
    """The SimilarityMaps A×A, B×B, A×B and (asymmetric measures) B×A."""
    def result(rows, cols, row_names, col_names, same):
        return SimilarityMap(_fill(found, rows, cols, same, should_stop), tuple(row_names), tuple(col_names),
                             "linear", "full batch", n, tuple(warnings), found.name)

    maps = (result(states_a, states_a, names_a, names_a, True), result(states_b, states_b, names_b, names_b, True),
            result(states_a, states_b, names_a, names_b, False))
    reverse = None if found.symmetric else result(states_b, states_a, names_b, names_a, False)
    return maps, reverse


def compare_with_measure(
    model_a,
    model_b,
    data,
    measure: str = "cka",
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    n: int | None = None,
    batch_size: int = 200,
    pooling: str = "flatten",
    transform: Transform | None = None,
    inputs: str = "clean",
    options: dict | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    forward_batch: int | None = None,
    max_bytes: int = MAX_MEMORY_BYTES,
    **cka_options,
) -> MeasureComparison:
    """The maps A×A, B×B, A×B (and B×A for an asymmetric measure) of ``measure``.

    ``cka`` streams (:func:`engine.similarity.compare_models`, with ``cka_options`` such as
    ``kernel``, ``state``); every other measure collects all activations of both models in one
    pass (:func:`collect_activations`, each model once per batch), refuses beforehand when
    :func:`memory_bytes` exceeds ``max_bytes``, prepares each layer once and compares every pair.

    Args:
        model_a, model_b: classifiers taking images in [0, 1], on one device.
        data, layers_a, layers_b, n, batch_size, pooling, transform, inputs, progress,
            should_stop, forward_batch: as for :func:`engine.similarity.compare_models`.
        options: the measure's options (mknn: ``{"k": K}``).

    Raises:
        InvalidParameterError: unknown measure, too many activations for the bound, fewer than
            4 images, a layer that did not run, non-finite activations, stopped.
    """
    found, options = get_measure(measure), get_measure(measure).accepted(options or {})
    if found.streams:
        comp = compare_models(model_a, model_b, data, layers_a, layers_b, n=n, batch_size=batch_size, pooling=pooling,
                              transform=transform, inputs=inputs, progress=progress, should_stop=should_stop,
                              forward_batch=forward_batch, **cka_options)
        return MeasureComparison(comp.within_a, comp.within_b, comp.across, comp.inputs, comp.batch_size, comp.seconds,
                                 comp.warnings, measure=found.name)
    total = dataset_size(data) if n is None else min(int(n), dataset_size(data))
    if total < 4:
        raise InvalidParameterError(f"need at least 4 images, got {total}")
    if model_device(model_b) != model_device(model_a):
        raise InvalidParameterError("models A and B must be on the same device")
    names_a, names_b = _resolve_layers(model_a, layers_a), _resolve_layers(model_b, layers_b)
    started = time.perf_counter()
    features = collect_activations(
        [(model_a, names_a), (model_b, names_b)], data, total, batch_size, pooling, transform, progress, should_stop,
        forward_batch, check=lambda widths: check_memory(found.name, total, widths, options, max_bytes))
    labels = [f"A:{x}" for x in names_a] + [f"B:{x}" for x in names_b]
    states, warnings = _prepare_all(found, features, labels, options, should_stop)
    warnings += _saturation(found, states, labels, total)
    la = len(names_a)
    (within_a, within_b, across), reverse = _measure_maps(found, states[:la], states[la:], names_a, names_b, total,
                                                          should_stop, warnings)
    return MeasureComparison(within_a, within_b, across, inputs, batch_size, time.perf_counter() - started,
                             tuple(warnings), measure=found.name, reverse=reverse, options=options)


def measure_flops(measure: str, n: int, widths_a: Sequence[int], widths_b: Sequence[int],
                  options: dict | None = None) -> float:
    """Rough operation count of a full-batch map (every layer prepared, every pair compared): what
    the analysis' cost model converts into forward passes. 0 for a streaming measure (CKA)."""
    found, options = get_measure(measure), options or {}
    if found.streams:
        return 0.0
    prepare = sum(found.flops(n, d, None, options) for d in list(widths_a) + list(widths_b))
    within = sum(found.flops(n, x, y, options) for group in (widths_a, widths_b) for x in group for y in group)
    across = sum(found.flops(n, x, y, options) for x in widths_a for y in widths_b)
    if found.symmetric:
        return prepare + within / 2 + across
    return prepare + within + 2 * across
