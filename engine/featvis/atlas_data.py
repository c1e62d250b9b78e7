"""What an atlas holds, torch-free (the result store, the page and the HTML export read it without
torch): the per-unit table, class selectivity, best matches across models and the image crop shown
for a unit's top activation. The definitions are in ``engine.featvis.atlas``'s docstring."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: most units (channels) an atlas covers per layer (a ResNet-50's layer4 has 2,048)
MAX_ATLAS_UNITS = 2048
#: units optimised together in one render batch by default (bench/atlas.py: 8.0× faster per unit than one at a time on this CPU, 4.7× at 32)
RENDER_BATCH = 64
#: matches kept per unit (best first)
MATCHES = 3


#: the arrays of a :class:`UnitTable`, in order
TABLE_FIELDS = ("topk_index", "topk_score", "topk_pos", "topk_label", "mean", "max", "sparsity", "selectivity",
                "class_mean")


class UnitTable(NamedTuple):
    """Statistics of every unit (or direction) of a layer over the scanned images; arrays have one
    row per unit (U).

    Attributes:
        topk_index: (U, k) int64 image indices (into the scanned images), best first.
        topk_score: (U, k) float32 their scores (max over positions).
        topk_pos: (U, k, 2) int32 (y, x) of that max in the layer's grid ((0, 0): a linear layer's 1×1 grid).
        topk_label: (U, k) int64 the labels of those images.
        mean, max, sparsity, selectivity: (U,) float32 (see the module docstring).
        class_mean: (U, classes) float32 mean spatial-mean activation per class.
    """

    topk_index: np.ndarray
    topk_score: np.ndarray
    topk_pos: np.ndarray
    topk_label: np.ndarray
    mean: np.ndarray
    max: np.ndarray
    sparsity: np.ndarray
    selectivity: np.ndarray
    class_mean: np.ndarray


def selectivity(class_mean: np.ndarray) -> np.ndarray:
    """Class selectivity index per row of ``class_mean`` (U, classes) (Morcos et al. 2018): NaN
    where μ_max + μ_rest is not positive or there is only one class."""
    if class_mean.shape[1] < 2:
        return np.full(len(class_mean), np.nan)
    top = class_mean.max(axis=1)
    rest = (class_mean.sum(axis=1) - top) / (class_mean.shape[1] - 1)
    denominator = top + rest
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, (top - rest) / np.where(denominator > 0, denominator, 1.0), np.nan)


def best_matches(corr: np.ndarray, top: int = MATCHES) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``corr`` (U_A, U_B): the ``top`` best-correlated columns, best first, and
    their correlations ((U_A, top) int64 and float32; NaN correlations rank last, ties by the
    lower index)."""
    top = min(int(top), corr.shape[1])
    ranked = np.where(np.isnan(corr), -np.inf, corr)
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :top]
    return order.astype(np.int64), np.take_along_axis(corr, order, axis=1).astype(np.float32)


def crop_box(position: tuple[int, int], grid: tuple[int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the image region shown for a unit's activation at
    ``position`` of a layer ``grid`` on an image of ``size`` (H, W): a square of three grid cells
    (at least half the image) centred on the cell — an approximation of the receptive field, not
    its exact extent. A linear layer (1×1 grid, or position (-1, -1)) shows the whole image."""
    height, width = size
    if grid == (1, 1) or position[0] < 0:
        return 0, 0, height, width
    cell_h, cell_w = height / grid[0], width / grid[1]
    side_h = int(min(height, max(height // 2, round(3 * cell_h))))
    side_w = int(min(width, max(width // 2, round(3 * cell_w))))
    centre_y, centre_x = (position[0] + 0.5) * cell_h, (position[1] + 0.5) * cell_w
    top = int(min(max(round(centre_y - side_h / 2), 0), height - side_h))
    left = int(min(max(round(centre_x - side_w / 2), 0), width - side_w))
    return top, left, side_h, side_w


class AtlasModel(NamedTuple):
    """One model's side of an atlas.

    Attributes:
        name: the checkpoint's name; layer: the layer; grid: its output's (height, width).
        units, directions: :class:`UnitTable` of the units and of the random directions.
        images: (U, H, W, C) uint8 visualisation of each unit; direction_images: (D, H, W, C).
        direction_vectors: (D, U) float32 unit-norm directions (rows).
        rendered: units whose image is done (all of them in a finished atlas; fewer while a job
            is still rendering — the images after that are blank).
    """

    name: str
    layer: str
    grid: tuple[int, int]
    units: UnitTable
    directions: UnitTable
    images: np.ndarray
    direction_images: np.ndarray
    direction_vectors: np.ndarray
    rendered: int


class Atlas(NamedTuple):
    """Every unit of a layer of one or two models (``engine.analysis.kinds.atlas`` decodes it).

    Attributes:
        models: one or two :class:`AtlasModel` (A, B).
        matches: for two models ``{"ab": (index (U_A, m), corr (U_A, m)), "ba": (...)}``: each unit's
            best-correlated units in the other model, best first; else None.
        dataset, split, n: the scanned images (the first ``n`` of the split); k: top-k per unit.
        class_names: label names; image_shape: (C, H, W) of the images.
    """

    models: list
    matches: dict | None
    dataset: str
    split: str
    n: int
    k: int
    class_names: list
    image_shape: tuple[int, int, int]

    def match(self, side: int, unit: int) -> list[tuple[int, float]]:
        """``[(unit of the other model, correlation), ...]`` best first for ``unit`` of model
        ``side`` (0: A, 1: B); empty for a one-model atlas."""
        if self.matches is None:
            return []
        index, corr = self.matches["ab" if side == 0 else "ba"]
        return [(int(j), float(c)) for j, c in zip(index[unit], corr[unit])]

    def best_match_correlations(self, side: int = 0) -> np.ndarray:
        """Each unit's best-match correlation (NaN for a constant unit): the distribution that says
        how much the two models' units correspond."""
        if self.matches is None:
            return np.zeros(0, np.float32)
        return self.matches["ab" if side == 0 else "ba"][1][:, 0]
