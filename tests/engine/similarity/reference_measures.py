"""Float64 NumPy references of the similarity measures, written from the papers' equations.

Independent of ``engine.similarity.measures``: where the engine works through thin SVDs of the
centred data (orthonormal bases, nuclear norms), these go the textbook way — covariance matrices
and their inverse square roots for CCA, an explicitly solved rotation for Procrustes, a
least-squares fit for regression, sorted neighbour lists and sets for mutual kNN — so agreement
checks the algebra, not a copy of it. They need full-rank covariances (N > D, generic data).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr


def centre(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0, keepdims=True)


def inverse_sqrt(cov: np.ndarray) -> np.ndarray:
    """Σ^{-1/2} of a symmetric positive-definite matrix."""
    values, vectors = np.linalg.eigh(cov)
    return vectors @ np.diag(values ** -0.5) @ vectors.T


def canonical_correlations(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ρ_i = singular values of Σxx^{-1/2} Σxy Σyy^{-1/2} (Hotelling 1936), largest first."""
    xc, yc = centre(x), centre(y)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    return np.linalg.svd(inverse_sqrt(sxx) @ sxy @ inverse_sqrt(syy), compute_uv=False)


def mean_cca(x, y) -> float:
    """Mean of the min(D1, D2) canonical correlations."""
    return float(canonical_correlations(x, y).mean())


def svd_reduce(x: np.ndarray, keep: float = 0.99) -> np.ndarray:
    """The top singular directions of the centred x holding ``keep`` of its variance (Raghu et al.
    2017): the smallest k with Σ_{i<=k} σ_i² >= keep · Σ σ_i²; returns the N × k projections."""
    u, s, _ = np.linalg.svd(centre(x), full_matrices=False)
    share = np.cumsum(s ** 2) / np.sum(s ** 2)
    k = int(np.argmax(share >= keep)) + 1
    return u[:, :k] * s[:k]


def svcca(x, y, keep: float = 0.99) -> float:
    return mean_cca(svd_reduce(x, keep), svd_reduce(y, keep))


def pwcca(x, y) -> float:
    """Morcos et al. 2018, weights from x: canonical variates h_i = X_c Σxx^{-1/2} u_i
    (orthonormalised), α_i = Σ_j |⟨h_i, x_j⟩| over x's centred neurons, Σ α_i ρ_i / Σ α_i."""
    xc, yc = centre(x), centre(y)
    sxx, syy, sxy = xc.T @ xc, yc.T @ yc, xc.T @ yc
    wx = inverse_sqrt(sxx)
    u, rho, _ = np.linalg.svd(wx @ sxy @ inverse_sqrt(syy))
    m = min(x.shape[1], y.shape[1])
    variates, _ = np.linalg.qr(xc @ wx @ u[:, :m])          # unit, mutually orthogonal h_i
    alpha = np.abs(variates.T @ xc).sum(axis=1)
    return float(np.sum(alpha * rho[:m]) / np.sum(alpha))


def procrustes_angle(x, y) -> float:
    """Williams et al. 2021, angular shape metric: centre, scale to unit Frobenius norm, zero-pad
    to a common width, solve min_Q ‖X − YQ‖ over orthogonal Q (Schönemann 1966: Q = U Vᵀ for
    YᵀX = U S Vᵀ), then θ = arccos ⟨X, YQ⟩_F."""
    xc, yc = centre(x), centre(y)
    xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
    width = max(xc.shape[1], yc.shape[1])
    xp = np.pad(xc, ((0, 0), (0, width - xc.shape[1])))
    yp = np.pad(yc, ((0, 0), (0, width - yc.shape[1])))
    u, _, vt = np.linalg.svd(yp.T @ xp)
    aligned = yp @ (u @ vt)
    return float(np.arccos(np.clip(np.sum(xp * aligned), -1.0, 1.0)))


def rsa(x, y) -> float:
    """Kriegeskorte et al. 2008: Spearman ρ of the upper triangles of the RDMs 1 − corr(x_i, x_j)."""
    iu = np.triu_indices(len(x), 1)
    return float(spearmanr((1 - np.corrcoef(x))[iu], (1 - np.corrcoef(y))[iu]).statistic)


def knn_sets(x: np.ndarray, k: int) -> list[set]:
    """Each row's k most cosine-similar other rows."""
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return [set(np.argsort(-row, kind="stable")[:k].tolist()) for row in sims]


def mutual_knn(x, y, k: int = 10) -> float:
    """Huh et al. 2024: mean over images of |kNN_x(i) ∩ kNN_y(i)| / k."""
    return float(np.mean([len(a & b) / k for a, b in zip(knn_sets(x, k), knn_sets(y, k))]))


def linreg_r2(x, y) -> float:
    """R² of the least-squares fit y ≈ [1, x] B: 1 − ‖residual‖²_F / ‖y − ȳ‖²_F."""
    design = np.hstack([np.ones((len(x), 1)), x])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ coef
    return float(1 - np.sum(residual ** 2) / np.sum(centre(y) ** 2))


def linear_cka(x, y) -> float:
    """‖YᵀX‖²_F / (‖XᵀX‖_F ‖YᵀY‖_F) on centred X, Y (Kornblith et al. 2019)."""
    xc, yc = centre(x), centre(y)
    return float(np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


#: measure name -> reference function (mknn takes k)
REFERENCES = {"cka": linear_cka, "procrustes": procrustes_angle, "cca": mean_cca, "svcca": svcca, "pwcca": pwcca,
              "rsa": rsa, "mknn": mutual_knn, "linreg": linreg_r2}
