"""Reading a layer × layer CKA map: block structure, and CKA across the epochs of one run.

Block structure (Nguyen, Raghu & Kornblith 2021; Cianfarani et al. 2022): in standard deep
networks, contiguous groups of layers have nearly identical representations (bright squares on
the map's diagonal) and differ from the other groups; robust training makes the map smoother.

The **block-structure score** of a within-model map M (L × L) is the largest *contrast* over
partitions of the layers into 2 to ``max_blocks`` contiguous blocks of at least ``min_size``
layers each::

    contrast(partition) = mean{M[i, j] : i ≠ j in the same block}
                          − mean{M[i, j] : i, j in different blocks}

A block-diagonal map scores near its within/between gap; a map whose CKA decays smoothly with the
layer distance scores lower, and a constant map scores 0. The **mean off-diagonal CKA** (average of
M[i, j] over i ≠ j) is reported beside it.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from torch import nn

from engine.errors import InvalidParameterError


@dataclass(frozen=True)
class BlockStructure:
    """The block-structure reading of one within-model CKA map.

    Attributes:
        score: the largest within-block minus between-block contrast (see the module docstring).
        blocks: the sizes of the contiguous blocks of the best partition (sum = number of layers).
        within, between: the mean within-block (off-diagonal) and between-block CKA of it.
        mean_off_diagonal: the mean CKA over all pairs of different layers.
    """

    score: float
    blocks: tuple[int, ...]
    within: float
    between: float
    mean_off_diagonal: float

    def to_dict(self) -> dict:
        return {"score": self.score, "blocks": list(self.blocks), "within": self.within,
                "between": self.between, "mean_off_diagonal": self.mean_off_diagonal}


def _square(matrix) -> np.ndarray:
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise InvalidParameterError(f"a within-model CKA map is square, got shape {m.shape}")
    if not np.isfinite(m).all():
        raise InvalidParameterError("the CKA map holds non-finite values")
    return m


def mean_off_diagonal(matrix) -> float:
    """Mean of M[i, j] over i ≠ j (0 for a map of one layer)."""
    m = _square(matrix)
    n = m.shape[0]
    return float((m.sum() - np.trace(m)) / (n * (n - 1))) if n > 1 else 0.0


def block_contrast(matrix, blocks: Sequence[int]) -> tuple[float, float, float]:
    """(contrast, within, between) of ``matrix`` for contiguous blocks of the given sizes."""
    m = _square(matrix)
    if sum(blocks) != m.shape[0] or min(blocks) < 1:
        raise InvalidParameterError(f"block sizes {list(blocks)} do not partition {m.shape[0]} layers")
    label = np.repeat(np.arange(len(blocks)), blocks)
    same = label[:, None] == label[None, :]
    off = ~np.eye(m.shape[0], dtype=bool)
    within, between = m[same & off], m[~same]
    w = float(within.mean()) if within.size else 0.0
    b = float(between.mean()) if between.size else 0.0
    return w - b, w, b


def _partitions(n: int, max_blocks: int, min_size: int):
    """Sizes of every partition of n layers into 2..max_blocks contiguous blocks of >= min_size."""
    for k in range(2, max_blocks + 1):
        for cuts in itertools.combinations(range(min_size, n - min_size + 1), k - 1):
            sizes = np.diff((0, *cuts, n))
            if sizes.min() >= min_size:
                yield tuple(int(s) for s in sizes)


def block_structure(matrix, max_blocks: int = 4, min_size: int = 2) -> BlockStructure:
    """The block-structure score of a within-model CKA map (see the module docstring).

    Args:
        matrix: (L, L) CKA map of one model's layers, in depth order.
        max_blocks: the most blocks a partition may have (2..8).
        min_size: the fewest layers a block may hold (>= 1).

    Raises:
        InvalidParameterError: not a square finite map, or too few layers for two blocks.
    """
    m = _square(matrix)
    if not 2 <= max_blocks <= 8 or min_size < 1:
        raise InvalidParameterError("max_blocks must be in [2, 8] and min_size >= 1")
    if m.shape[0] < 2 * min_size:
        raise InvalidParameterError(f"a block-structure score needs at least {2 * min_size} layers, got {m.shape[0]}")
    best = max(((block_contrast(m, sizes), sizes) for sizes in _partitions(m.shape[0], max_blocks, min_size)),
               key=lambda item: item[0][0])
    (score, within, between), sizes = best
    return BlockStructure(score, sizes, within, between, mean_off_diagonal(m))


# ---------------------------------------------------------------------------------------------
# CKA across epochs


@dataclass(frozen=True)
class EpochCKA:
    """Each layer's CKA between the snapshots of one run and a reference snapshot.

    Attributes:
        epochs: the epochs of the rows.
        layers: the layer names of the columns.
        matrix: (len(epochs), len(layers)) CKA; with ``reference="final"`` row e compares epoch e
            with the last epoch (the last row is 1), with ``"consecutive"`` epoch e with the epoch
            before it (the first epoch has no row).
        reference: "final" or "consecutive".
        n: images used.
        seconds: wall time.
        warnings: diagnostics (constant layers, stopped early).
    """

    epochs: tuple[int, ...]
    layers: tuple[str, ...]
    matrix: np.ndarray
    reference: str
    n: int
    seconds: float
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"epochs": list(self.epochs), "layers": list(self.layers), "matrix": self.matrix.tolist(),
                "reference": self.reference, "n": self.n, "seconds": self.seconds,
                "warnings": list(self.warnings)}


REFERENCES = ("final", "consecutive")


def cka_across_epochs(
    snapshots: Sequence[tuple[int, nn.Module]],
    data,
    layers: Sequence[str] | None = None,
    reference: str = "final",
    n: int | None = None,
    batch_size: int = 200,
    kernel: str = "linear",
    pooling: str = "flatten",
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> EpochCKA:
    """Per-layer CKA between a run's snapshots (Cianfarani et al. 2022: robust overfitting shows
    in the deeper layers), in one minibatch pass with every snapshot on each batch.

    Args:
        snapshots: ``[(epoch, model), ...]`` of one run (same architecture), at least two.
        data: images (and labels) as for :func:`engine.similarity.compare_models`.
        layers: layer names (default: the model's default layers).
        reference: "final" (each epoch vs the last) or "consecutive" (each epoch vs the previous).
        n, batch_size, kernel, pooling, progress, should_stop: as for ``compare_models``.

    Raises:
        InvalidParameterError: fewer than two snapshots, unknown reference, or as ``compare_models``.
    """
    from engine.similarity.cka import _check_sizes, _resolve_layers, stream_cka
    from engine.data import dataset_size

    if reference not in REFERENCES:
        raise InvalidParameterError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    ordered = sorted(snapshots, key=lambda item: item[0])
    if len(ordered) < 2:
        raise InvalidParameterError("CKA across epochs needs at least two snapshots of the run")
    names = _resolve_layers(ordered[-1][1], layers)
    total = dataset_size(data) if n is None else min(int(n), dataset_size(data))
    _check_sizes(total, batch_size)
    started = time.perf_counter()
    parts = [(model, names) for _, model in ordered]
    labels = [f"{epoch}:{name}" for epoch, _ in ordered for name in names]
    cka, images, warnings = stream_cka(parts, labels, data, total, batch_size, kernel, None, pooling,
                                       None, progress, should_stop)
    count, width = len(ordered), len(names)

    def pair(e: int, other: int) -> list[float]:
        return [float(cka[e * width + i, other * width + i]) for i in range(width)]

    if reference == "final":
        rows, epochs = [pair(e, count - 1) for e in range(count)], [e for e, _ in ordered]
    else:
        rows, epochs = [pair(e, e - 1) for e in range(1, count)], [e for e, _ in ordered[1:]]
    return EpochCKA(tuple(epochs), tuple(names), np.array(rows), reference, images,
                    time.perf_counter() - started, tuple(warnings))
