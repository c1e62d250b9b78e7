"""HSIC estimators for every pair of a stack of Gram matrices at once.

Given L Gram matrices of the same n images stacked as (L, n, n), each function returns the (L, L)
matrix of HSIC(K_i, K_j) for all pairs with one matrix product, in float64:

- biased (Gretton et al. 2005): tr(K H L H) / (n - 1)², H = I - 11ᵀ/n;
- unbiased (Song et al. 2012), with K̃, L̃ the Gram matrices with zeroed diagonals (n > 3):
  [tr(K̃L̃) + (1ᵀK̃1)(1ᵀL̃1)/((n-1)(n-2)) - 2·1ᵀK̃L̃1/(n-2)] / (n(n-3)).

Both use the symmetry of Gram matrices: tr(KL) = Σ_ij K_ij L_ij and 1ᵀK̃L̃1 = (K̃1)·(L̃1).
"""
from __future__ import annotations

import torch

from engine.errors import InvalidParameterError

#: Smallest batch for which the unbiased estimator is defined (its denominator is n(n-3)).
MIN_UNBIASED_N = 4


def _check_stack(grams: torch.Tensor) -> tuple[int, int]:
    """Validate a (L, n, n) stack of Gram matrices; return (L, n)."""
    if grams.ndim != 3 or grams.shape[1] != grams.shape[2]:
        raise InvalidParameterError(
            f"expected a stack of square Gram matrices (L, n, n), got shape {tuple(grams.shape)}"
        )
    return grams.shape[0], grams.shape[1]


def hsic_biased_matrix(grams: torch.Tensor) -> torch.Tensor:
    """Biased HSIC for all pairs of a stack of Gram matrices.

    Args:
        grams: (L, n, n) symmetric Gram matrices of the same n images, n >= 2.

    Returns:
        (L, L) float64 tensor, entry (i, j) = tr(K_i H K_j H) / (n - 1)².
    """
    count, n = _check_stack(grams)
    if n < 2:
        raise InvalidParameterError(f"HSIC needs at least 2 images, got {n}")
    g = grams.to(torch.float64)
    g = g - g.mean(dim=1, keepdim=True)                   # H K      (L, n, n)
    g = g - g.mean(dim=2, keepdim=True)                   # H K H
    flat = g.reshape(count, n * n)
    return (flat @ flat.T) / (n - 1) ** 2


def hsic_unbiased_matrix(grams: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC (Song et al. 2012) for all pairs of a stack of Gram matrices.

    Args:
        grams: (L, n, n) symmetric Gram matrices of the same n images, n > 3. Diagonals are
            ignored (zeroed in a float64 copy).

    Returns:
        (L, L) float64 tensor of unbiased HSIC estimates (may be slightly negative).

    Raises:
        InvalidParameterError: n <= 3, where the estimator is undefined.
    """
    count, n = _check_stack(grams)
    if n < MIN_UNBIASED_N:
        raise InvalidParameterError(
            f"the unbiased HSIC estimator needs batches of more than 3 images, got {n}"
        )
    g = grams.to(torch.float64, copy=True)
    g.diagonal(dim1=1, dim2=2).zero_()                     # K̃       (L, n, n)
    flat = g.reshape(count, n * n)
    trace_term = flat @ flat.T                             # tr(K̃L̃) (L, L)
    sums = flat.sum(dim=1)                                 # 1ᵀK̃1    (L,)
    row_sums = g.sum(dim=2)                                # K̃1      (L, n)
    cross = row_sums @ row_sums.T                          # 1ᵀK̃L̃1  (L, L)
    total = trace_term + torch.outer(sums, sums) / ((n - 1) * (n - 2)) - 2 * cross / (n - 2)
    return total / (n * (n - 3))


#: Estimator registry: name -> function(grams (L, n, n)) -> HSIC (L, L).
HSIC_ESTIMATORS = {"biased": hsic_biased_matrix, "unbiased": hsic_unbiased_matrix}


def get_estimator(name: str):
    """Return the all-pairs HSIC function registered as ``name`` ("biased" or "unbiased")."""
    try:
        return HSIC_ESTIMATORS[name]
    except (KeyError, TypeError):
        raise InvalidParameterError(
            f"unknown HSIC estimator {name!r}; choose one of: {', '.join(HSIC_ESTIMATORS)}"
        ) from None
