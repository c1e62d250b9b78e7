"""Centered Kernel Alignment (CKA) between layer representations, within and across models.

CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) · HSIC(L, L))  (Kornblith et al. 2019), with linear or
RBF kernels and a biased or unbiased HSIC estimator. :func:`compare_models` streams over the data
with the minibatch estimator of Nguyen, Raghu & Kornblith 2021: per batch, the unbiased HSIC of
every layer pair (all layers of both models stacked, one matrix product) is added to a float64
running sum; CKA is the ratio of the averaged terms. Memory depends on the batch size and the
layers, never on the number of images.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from engine.errors import InvalidParameterError
from engine.similarity.features import (
    Transform,
    batch_bounds,
    dataset_size,
    eval_mode,
    forward_features,
    model_device,
    prepare_inputs,
    slice_batch,
)
from engine.similarity.hsic import MIN_UNBIASED_N, get_estimator, hsic_unbiased_matrix
from engine.similarity.kernels import get_kernel

#: Self-HSIC at or below this fraction of the largest self-HSIC marks a representation as
#: constant (CKA undefined).
_CONSTANT_TOL = 1e-12


@dataclass(frozen=True)
class CKAResult:
    """A CKA map between two lists of layers.

    Attributes:
        matrix: (len(rows), len(cols)) float64 array of CKA values; entries whose CKA is
            undefined (a constant representation) are 0 and named in ``warnings``.
        rows, cols: layer names of the rows and columns.
        kernel: "linear" or "rbf".
        estimator: "biased", "unbiased" (full batch) or "minibatch" (averaged unbiased HSIC).
        n: number of images used.
        warnings: human-readable diagnostics (constant layers, stopped early, ...).
    """

    matrix: np.ndarray
    rows: tuple[str, ...]
    cols: tuple[str, ...]
    kernel: str
    estimator: str
    n: int
    warnings: tuple[str, ...] = ()

    def to_csv(self) -> str:
        """The matrix as CSV text: a header of column names, one row per row layer."""
        lines = [",".join(["layer"] + [_csv_cell(c) for c in self.cols])]
        for name, row in zip(self.rows, self.matrix):
            lines.append(",".join([_csv_cell(name)] + [f"{v:.6f}" for v in row]))
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict:
        """A JSON-friendly dict of this result."""
        return {
            "rows": list(self.rows),
            "cols": list(self.cols),
            "matrix": self.matrix.tolist(),
            "kernel": self.kernel,
            "estimator": self.estimator,
            "n": self.n,
            "warnings": list(self.warnings),
        }


def _csv_cell(text: str) -> str:
    """Quote a CSV cell when it contains a comma or a quote."""
    return f'"{text.replace(chr(34), chr(34) * 2)}"' if ("," in text or '"' in text) else text


@dataclass(frozen=True)
class CKAComparison:
    """Within- and across-model CKA maps computed in one pass over the data.

    Attributes:
        within_a: A×A map.
        within_b: B×B map, or None when no model B was given.
        across: A×B map (rows: A's layers, columns: B's layers), or None without model B.
        inputs: label of the inputs used ("clean", or what the transform was).
        batch_size: images per batch.
        seconds: wall time of the computation.
        warnings: diagnostics shared by all maps.
    """

    within_a: CKAResult
    within_b: CKAResult | None
    across: CKAResult | None
    inputs: str
    batch_size: int
    seconds: float
    warnings: tuple[str, ...] = field(default=())


def hsic_to_cka(hsic: torch.Tensor, names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Normalise an (L, L) HSIC matrix into CKA; diagnose representations with no variance.

    Args:
        hsic: (L, L) HSIC matrix (any estimator), float64.
        names: the L layer names (for the warnings).

    Returns:
        (cka (L, L) float64 array, warnings). Rows/columns of a layer whose self-HSIC is <= 0
        (relative to the largest one) are set to 0 with a warning instead of NaN.
    """
    diag = hsic.diagonal().clone()
    scale = diag.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
    bad = diag <= _CONSTANT_TOL * scale
    warnings = [
        f"layer {names[i]!r}: its representation does not vary across the images "
        "(constant features, or too few images for the unbiased estimator); CKA with it is "
        "undefined and shown as 0"
        for i in torch.nonzero(bad).flatten().tolist()
    ]
    root = torch.where(bad, torch.ones_like(diag), diag).sqrt()
    cka = hsic / (root[:, None] * root[None, :])
    cka[bad, :] = 0.0
    cka[:, bad] = 0.0
    return cka.cpu().numpy(), warnings


def _stack_grams(features: Sequence[torch.Tensor], kernel: str, sigma_fraction) -> torch.Tensor:
    """(L, n, n) stack of Gram matrices of L feature matrices of the same n images."""
    gram = get_kernel(kernel)
    return torch.stack([gram(f, sigma_fraction) for f in features])


def _as_matrix(x, name: str) -> torch.Tensor:
    """Coerce features to an (n, d) float tensor; reject non-finite values."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim < 2:
        raise InvalidParameterError(f"{name}: expected features of shape (n, d), got {tuple(t.shape)}")
    t = t.reshape(t.shape[0], -1)
    if not t.is_floating_point():
        t = t.float()
    if not torch.isfinite(t).all():
        raise InvalidParameterError(f"{name}: features contain NaN or inf")
    return t


def cka_matrix(
    rows: Sequence,
    cols: Sequence | None = None,
    kernel: str = "linear",
    estimator: str = "biased",
    sigma_fraction: float | None = None,
    row_names: Sequence[str] | None = None,
    col_names: Sequence[str] | None = None,
) -> CKAResult:
    """Full-batch CKA between every pair of feature matrices (all pairs in one matrix product).

    Args:
        rows: feature matrices (n, d_i) of the same n images (tensors or arrays; extra dims are
            flattened). float64 input is computed in float64 throughout.
        cols: a second list (default: ``rows``, giving a within map).
        kernel: "linear" or "rbf".
        estimator: "biased" (Kornblith et al. 2019) or "unbiased" (Song et al. 2012; n > 3).
        sigma_fraction: RBF bandwidth as a fraction of the median pairwise distance.
        row_names, col_names: labels (default "0", "1", ...).

    Returns:
        :class:`CKAResult` of shape (len(rows), len(cols)).
    """
    row_feats = [_as_matrix(f, f"row {i}") for i, f in enumerate(rows)]
    col_feats = row_feats if cols is None else [_as_matrix(f, f"col {i}") for i, f in enumerate(cols)]
    if not row_feats or not col_feats:
        raise InvalidParameterError("cka_matrix needs at least one feature matrix on each side")
    n = row_feats[0].shape[0]
    if any(f.shape[0] != n for f in row_feats + col_feats):
        raise InvalidParameterError("all feature matrices must have the same number of rows (images)")
    row_names = [str(i) for i in range(len(row_feats))] if row_names is None else list(row_names)
    col_names = (row_names if cols is None else [str(i) for i in range(len(col_feats))]) \
        if col_names is None else list(col_names)
    feats = row_feats if cols is None else row_feats + col_feats
    names = row_names if cols is None else row_names + col_names
    hsic = get_estimator(estimator)(_stack_grams(feats, kernel, sigma_fraction))
    cka, warnings = hsic_to_cka(hsic, names)
    r = len(row_feats)
    block = cka if cols is None else cka[:r, r:]
    return CKAResult(block, tuple(row_names), tuple(col_names), kernel, estimator, n, tuple(warnings))


def cka(x, y, kernel: str = "linear", estimator: str = "biased", sigma_fraction=None) -> float:
    """CKA between two representations of the same n images.

    Args:
        x: (n, d1) features; y: (n, d2) features (tensors or arrays).
        kernel, estimator, sigma_fraction: see :func:`cka_matrix`.

    Returns:
        CKA in [0, 1] (the unbiased estimator may leave this range slightly).

    Raises:
        InvalidParameterError: different n, non-finite values, n <= 3 for the unbiased
            estimator, or a constant representation (CKA undefined).
    """
    result = cka_matrix([x, y], kernel=kernel, estimator=estimator, sigma_fraction=sigma_fraction,
                        row_names=["x", "y"])
    if result.warnings:
        raise InvalidParameterError("; ".join(result.warnings))
    return float(result.matrix[0, 1])


class MinibatchCKA:
    """Running minibatch CKA over L stacked layers (Nguyen, Raghu & Kornblith 2021).

    Each :meth:`update` adds the (L, L) unbiased HSIC of one batch to a float64 sum; every batch
    counts equally. :meth:`cka` returns the ratio of the averaged terms. Memory: O(L²).
    """

    def __init__(self, names: Sequence[str]):
        self.names = list(names)
        self.total: torch.Tensor | None = None
        self.batches = 0
        self.images = 0

    def update(self, grams: torch.Tensor) -> None:
        """Add one batch: ``grams`` is (L, n, n), n > 3, in the order of ``names``."""
        if grams.shape[0] != len(self.names):
            raise InvalidParameterError(f"expected {len(self.names)} Gram matrices, got {grams.shape[0]}")
        hsic = hsic_unbiased_matrix(grams)
        if self.total is not None and self.total.device != hsic.device:   # restored on the CPU
            self.total = self.total.to(hsic.device)
        self.total = hsic if self.total is None else self.total + hsic
        self.batches += 1
        self.images += grams.shape[1]

    def state(self) -> dict:
        """The running sums as plain values (``{"total": (L, L) float64 array, "batches",
        "images", "names"}``), to save and :meth:`restore` later (resume after a crash)."""
        total = None if self.total is None else self.total.detach().cpu().numpy().copy()
        return {"total": total, "batches": self.batches, "images": self.images, "names": list(self.names)}

    def restore(self, state: dict) -> None:
        """Continue from a :meth:`state` of an accumulator over the same layers."""
        if list(state.get("names", [])) != self.names:
            raise InvalidParameterError("saved CKA state is for other layers; it cannot be resumed")
        total = state.get("total")
        if total is not None and tuple(np.shape(total)) != (len(self.names), len(self.names)):
            raise InvalidParameterError("saved CKA state has the wrong shape; it cannot be resumed")
        self.total = None if total is None else torch.as_tensor(np.asarray(total, dtype=np.float64))
        self.batches, self.images = int(state["batches"]), int(state["images"])

    def cka(self) -> tuple[np.ndarray, list[str]]:
        """(L, L) CKA from the batches so far, and warnings (see :func:`hsic_to_cka`)."""
        if self.total is None:
            raise InvalidParameterError("no batch was processed, so there is no CKA to report")
        return hsic_to_cka(self.total / self.batches, self.names)


def _default_layers(model: nn.Module) -> list[str]:
    """engine.models.default_layers(model), with a readable error if it is unavailable."""
    try:
        from engine.models import default_layers
    except ImportError:
        raise InvalidParameterError("no layers given and engine.models.default_layers is unavailable") from None
    return list(default_layers(model))


def _resolve_layers(model: nn.Module, layers: Sequence[str] | None) -> list[str]:
    """The requested layer names (deduplicated), or the model's default layers."""
    names = _default_layers(model) if layers is None else list(dict.fromkeys(layers))
    if not names:
        raise InvalidParameterError("choose at least one layer")
    return names


def _check_sizes(total: int, batch_size: int) -> None:
    """Reject runs too small for the unbiased minibatch estimator."""
    if batch_size < MIN_UNBIASED_N:
        raise InvalidParameterError(
            f"batch size must be at least {MIN_UNBIASED_N} for the unbiased HSIC estimator, got {batch_size}"
        )
    if total < MIN_UNBIASED_N:
        raise InvalidParameterError(f"need at least {MIN_UNBIASED_N} images, got {total}")


def compare_models(
    model_a: nn.Module,
    model_b: nn.Module | None,
    data,
    layers_a: Sequence[str] | None = None,
    layers_b: Sequence[str] | None = None,
    n: int | None = None,
    batch_size: int = 200,
    kernel: str = "linear",
    sigma_fraction: float | None = None,
    pooling: str = "flatten",
    transform: Transform | None = None,
    inputs: str = "clean",
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    forward_batch: int | None = None,
    state: dict | None = None,
    save_state: Callable[[dict], None] | None = None,
) -> CKAComparison:
    """Minibatch CKA maps A×A, B×B and A×B in one pass (one forward per model per batch).

    Per batch, the Gram matrices of all L_A + L_B layers are stacked and the unbiased HSIC of
    every pair comes from one matrix product (:func:`hsic_unbiased_matrix`), accumulated in
    float64 (Nguyen, Raghu & Kornblith 2021). Models are run in eval mode and restored; hooks are
    always removed.

    Args:
        model_a, model_b: classifiers taking images in [0, 1] (model_b may be None: A×A only).
            Both must live on the same device.
        data: (images (N,C,H,W) in [0,1], labels (N,)) pair, an images tensor, or a Dataset
            yielding (image, label).
        layers_a, layers_b: layer names; default ``engine.models.default_layers``.
        n: use the first n images (default all).
        batch_size: images per batch, >= 4; a last batch of fewer than 4 images is merged into
            the previous one.
        kernel: "linear" or "rbf" (bandwidth: ``sigma_fraction`` × median distance per batch).
        pooling: "flatten" or "avg" for spatial maps.
        transform: optional ``transform(images, labels) -> images`` applied per batch before the
            forward passes: an attack crafted on A or B, or a distortion (needs labels).
        inputs: a label for the inputs, stored in the result ("clean", "adversarial (PGD on A)").
        progress: called as ``progress(images_done, images_total)`` after each batch.
        should_stop: polled before each batch; when it returns True the result covers the
            batches done so far and says so in ``warnings``.
        forward_batch: run each model (and the transform) on at most this many images at a time
            and assemble the batch's features from the pieces (same numbers; peak memory of the
            forward pass bounded independently of ``batch_size``). ``None``: the whole batch.
        state: a ``save_state`` snapshot of an earlier run of the same computation: batches it
            covered are skipped (resume after a crash).
        save_state: called as ``save_state(snapshot)`` after each batch (the caller decides
            whether to write it; :meth:`MinibatchCKA.state` plus ``"done"`` batches).

    Returns:
        :class:`CKAComparison` with estimator "minibatch".

    Raises:
        InvalidParameterError: unknown kernel/pooling/layer, too few images, non-finite
            activations, models on different devices, stopped before the first batch.
    """
    get_kernel(kernel)
    total = dataset_size(data) if n is None else min(int(n), dataset_size(data))
    _check_sizes(total, batch_size)
    names_a = _resolve_layers(model_a, layers_a)
    names_b = [] if model_b is None else _resolve_layers(model_b, layers_b)
    if model_b is not None and model_device(model_b) != model_device(model_a):
        raise InvalidParameterError("models A and B must be on the same device")
    parts = [(model_a, names_a)] + ([] if model_b is None else [(model_b, names_b)])
    names = [f"A:{x}" for x in names_a] + [f"B:{x}" for x in names_b]
    start_time = time.perf_counter()
    cka, images, warnings = stream_cka(parts, names, data, total, batch_size, kernel, sigma_fraction,
                                       pooling, transform, progress, should_stop, forward_batch=forward_batch,
                                       state=state, save_state=save_state)
    return _comparison(cka, names_a, names_b, kernel, images, inputs, batch_size,
                       time.perf_counter() - start_time, tuple(warnings))


def stream_cka(parts, names: Sequence[str], data, total: int, batch_size: int, kernel: str,
               sigma_fraction, pooling: str, transform=None, progress=None, should_stop=None,
               forward_batch: int | None = None, state: dict | None = None, save_state=None):
    """The minibatch CKA among every (model, layer) of ``parts`` in one pass over the data.

    Args:
        parts: [(model, layer names), ...]; each model runs once per batch.
        names: one label per (model, layer), in order (for warnings).
        total: images to use; the rest (``forward_batch``, ``state``, ``save_state``) as in
            :func:`compare_models`.

    Returns:
        (CKA (L, L) float64 array over all layers of all parts, images used, warnings).
    """
    acc = MinibatchCKA(names)
    if state is not None:
        acc.restore(state)
    warnings: list[str] = []
    device = model_device(parts[0][0])
    step = None if forward_batch is None else max(1, int(forward_batch))
    with eval_mode(*(m for m, _ in parts)):
        for index, (start, stop) in enumerate(batch_bounds(total, batch_size)):
            if index < acc.batches:                            # covered by the resumed state
                continue
            if should_stop is not None and should_stop():
                warnings.append(f"stopped early: used {acc.images} of {total} images")
                break
            images, labels = slice_batch(data, start, stop)
            x = _prepared(images, labels, transform, device, step)
            grams = [g for part in parts for g in _part_grams(part, x, pooling, kernel, sigma_fraction, step)]
            acc.update(torch.stack(grams))
            del grams, x
            if save_state is not None:
                save_state(acc.state())
            if progress is not None:
                progress(stop, total)
    cka, cka_warnings = acc.cka()
    return cka, acc.images, warnings + cka_warnings


def _prepared(images, labels, transform, device, step: int | None) -> torch.Tensor:
    """The batch on ``device``, transformed (attack/distortion) ``step`` images at a time."""
    if step is None or step >= len(images) or transform is None:
        return prepare_inputs(images, labels, transform, device)
    return torch.cat([prepare_inputs(images[i:i + step], None if labels is None else labels[i:i + step],
                                     transform, device) for i in range(0, len(images), step)])


def _part_grams(part, images: torch.Tensor, pooling: str, kernel: str, sigma_fraction,
                step: int | None = None) -> list[torch.Tensor]:
    """Gram matrices (n, n) of one model's layers on one batch (activations freed as we go).

    With ``step``, the model runs on ``step`` images at a time and each layer's (n, d) feature
    matrix is filled piece by piece (one buffer per layer, no concatenation copies).
    """
    if step is None or step >= len(images):
        features = forward_features([part], images, pooling)
    else:
        features = []
        for i in range(0, len(images), step):
            pieces = forward_features([part], images[i:i + step], pooling)
            if not features:
                features = [p.new_empty((len(images), p.shape[1])) for p in pieces]
            for buffer, piece in zip(features, pieces):
                buffer[i:i + len(piece)] = piece
            del pieces
    gram = get_kernel(kernel)
    owned = step is not None and step < len(images)     # our own buffers: centre them in place
    grams = []
    while features:
        grams.append(gram(features.pop(0), sigma_fraction, inplace=owned) if owned else
                     gram(features.pop(0), sigma_fraction))
    return grams


def _comparison(cka: np.ndarray, names_a, names_b, kernel, n, inputs, batch_size, seconds, warnings):
    """Slice the stacked (L_A+L_B)² CKA into the A×A, B×B and A×B results."""
    la = len(names_a)

    def result(block, rows, cols):
        return CKAResult(np.ascontiguousarray(block), tuple(rows), tuple(cols), kernel, "minibatch", n, warnings)

    within_a = result(cka[:la, :la], names_a, names_a)
    if not names_b:
        return CKAComparison(within_a, None, None, inputs, batch_size, seconds, warnings)
    return CKAComparison(
        within_a,
        result(cka[la:, la:], names_b, names_b),
        result(cka[:la, la:], names_a, names_b),
        inputs, batch_size, seconds, warnings,
    )


def corresponding_depths(across: CKAResult) -> tuple[np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """CKA between layers of A and B at the same relative depth.

    Row i of A (depth i/(L_A-1)) is paired with the column of B nearest that relative depth.

    Returns:
        (relative depths in [0, 1] (L_A,), CKA values (L_A,), [(layer A, layer B), ...]).
    """
    la, lb = across.matrix.shape
    depth = np.linspace(0.0, 1.0, la) if la > 1 else np.zeros(1)
    cols = np.floor(depth * (lb - 1) + 0.5).astype(int)       # round half up
    values = across.matrix[np.arange(la), cols]
    return depth, values, [(across.rows[i], across.cols[j]) for i, j in enumerate(cols)]
