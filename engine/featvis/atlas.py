"""A unit atlas: every unit of a layer, each with its feature visualisation, its top-k dataset
images and its statistics — OpenAI Microscope's view, for a robust model beside a standard one.

Two pieces, both batched:

- :func:`scan_layers`: ONE streamed pass over N images through one or two models (the same batch
  feeds both) gives, for every unit of the chosen layer — and for K random directions of it, the
  baseline row — its top-k images with the spatial argmax (a conv unit's score on an image is its
  largest activation over positions: Microscope's "dataset examples"), mean and max activation,
  sparsity, class-conditional means and class selectivity; with two models also the correlation of
  every unit of A with every unit of B over the images (spatially averaged activations; Li et al.
  2016, "Convergent learning"), from running sums. Memory: one batch of activations plus
  (units × k) scores and (U_A × U_B) sums, whatever N.
- :func:`render_units`: lucent visualisations of many units in one optimisation (one image per
  unit in a batch, each with its own objective; ``engine.featvis.render.visualise``), so a batch
  of 32 units costs about one optimisation of a 32-image batch instead of 32 optimisations. Every
  batch element starts from the same seeded image and the random transforms are drawn once per
  step for the whole batch, so a unit's image does not depend on the batch it is rendered in (up
  to floating-point summation order; the tests bound the difference).

Definitions (per unit u, over images x₁..x_N, activation map a_n = φ_u(x_n)):

- score (top-k): max over positions of a_n (a linear layer's activation itself);
- mean: the mean over images of the spatial mean of a_n; max: the largest a_n value seen;
- sparsity: the share of all activation values (images × positions) that are ≤ 0;
- selectivity (Morcos et al. 2018): (μ_max − μ_rest) / (μ_max + μ_rest), with μ_c the mean over
  class-c images of the spatial-mean activation, μ_max the largest μ_c and μ_rest the mean of the
  other classes' μ_c; NaN when the denominator is not positive (e.g. a unit with negative output);
- match: for each unit of A the unit of B whose spatial-mean activation correlates best (Pearson
  over the images) and that correlation; NaN for a constant unit.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from engine.errors import InvalidParameterError
from engine.featvis.atlas_data import MAX_ATLAS_UNITS, UnitTable, selectivity
from engine.featvis.config import VisConfig
from engine.featvis.targets import direction_target, unit_target
from engine.models.hooks import record_activations, resolve_layer
from engine.models.state import frozen_eval, model_device
from engine.runtime import Progress, ShouldStop


@dataclass
class LayerScan:
    """What :func:`scan_layers` found for one model's layer.

    Attributes:
        units: :class:`UnitTable` of the layer's units; directions: of the random directions.
        grid: (height, width) of the layer's output (1, 1 for a linear layer).
    """

    units: UnitTable
    directions: UnitTable
    grid: tuple[int, int]


class _Accumulator:
    """Running top-k, sums and class sums of one set of scored channels (units or directions)."""

    def __init__(self, count: int, k: int, classes: int):
        self.k, self.classes = k, classes
        self.best_score = torch.full((count, 0), float("-inf"))
        self.best_index = torch.zeros((count, 0), dtype=torch.long)
        self.best_pos = torch.zeros((count, 0), dtype=torch.long)
        self.best_label = torch.zeros((count, 0), dtype=torch.long)
        self.mean_sum = torch.zeros(count, dtype=torch.float64)
        self.max = torch.full((count,), float("-inf"), dtype=torch.float64)
        self.nonpositive = torch.zeros(count, dtype=torch.float64)
        self.values = 0
        self.class_sum = torch.zeros((count, classes), dtype=torch.float64)
        self.class_count = torch.zeros(classes, dtype=torch.float64)

    def add(self, maps: torch.Tensor, labels: torch.Tensor, start: int) -> None:
        """Fold in one batch of activation maps (B, U, H, W) of images ``start..start+B`` (reduced in
        float32, summed over batches in float64)."""
        flat = maps.flatten(2)                                            # (B, U, P)
        peak, where = flat.max(dim=2)                                     # (B, U)
        spatial_mean = flat.mean(dim=2).double()                          # (B, U)
        index = torch.arange(start, start + len(maps)).expand(peak.shape[1], -1)    # (U, B)
        scores = torch.cat([self.best_score, peak.T.float()], dim=1)
        order = torch.sort(-scores, dim=1, stable=True).indices[:, : self.k]
        self.best_score = scores.gather(1, order)
        self.best_index = torch.cat([self.best_index, index], dim=1).gather(1, order)
        self.best_pos = torch.cat([self.best_pos, where.T], dim=1).gather(1, order)
        label_rows = labels.long().expand(peak.shape[1], -1)                          # (U, B)
        self.best_label = torch.cat([self.best_label, label_rows], dim=1).gather(1, order)
        self.mean_sum += spatial_mean.sum(dim=0)
        self.max = torch.maximum(self.max, peak.max(dim=0).values.double())
        self.nonpositive += (flat <= 0).sum(dim=(0, 2))
        self.values += flat.shape[0] * flat.shape[2]
        onehot = torch.nn.functional.one_hot(labels.long(), self.classes).double()   # (B, classes)
        self.class_sum += spatial_mean.T @ onehot
        self.class_count += onehot.sum(dim=0)

    def table(self, width: int) -> UnitTable:
        """The finished :class:`UnitTable` (``width``: the layer grid's width, to split positions)."""
        images = max(float(self.class_count.sum()), 1.0)
        class_mean = self.class_sum / self.class_count.clamp(min=1.0)
        pos = torch.stack([self.best_pos // width, self.best_pos % width], dim=2)
        return UnitTable(self.best_index.numpy().astype(np.int64), self.best_score.numpy().astype(np.float32),
                         pos.numpy().astype(np.int32), self.best_label.numpy().astype(np.int64),
                         (self.mean_sum / images).numpy().astype(np.float32),
                         self.max.numpy().astype(np.float32),
                         (self.nonpositive / max(self.values, 1)).numpy().astype(np.float32),
                         selectivity(class_mean[:, self.class_count > 0].numpy()).astype(np.float32),
                         class_mean.numpy().astype(np.float32))


class _Correlation:
    """Running sums for the Pearson correlation of every unit of A with every unit of B."""

    def __init__(self):
        self.n = 0
        self.sum_a = self.sum_b = self.sum_aa = self.sum_bb = self.sum_ab = None

    def add(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Fold in spatial-mean activations a (B, U_A) and b (B, U_B)."""
        a, b = a.double(), b.double()
        parts = (a.sum(0), b.sum(0), (a * a).sum(0), (b * b).sum(0), a.T @ b)
        if self.sum_a is None:
            self.sum_a, self.sum_b, self.sum_aa, self.sum_bb, self.sum_ab = parts
        else:
            for name, part in zip(("sum_a", "sum_b", "sum_aa", "sum_bb", "sum_ab"), parts):
                setattr(self, name, getattr(self, name) + part)
        self.n += len(a)

    def matrix(self) -> np.ndarray:
        """(U_A, U_B) Pearson correlations (NaN for a constant unit)."""
        n = float(self.n)
        cov = self.sum_ab - torch.outer(self.sum_a, self.sum_b) / n
        var_a = (self.sum_aa - self.sum_a ** 2 / n).clamp(min=0)
        var_b = (self.sum_bb - self.sum_b ** 2 / n).clamp(min=0)
        scale = torch.outer(var_a.sqrt(), var_b.sqrt())
        corr = torch.where(scale > 1e-12 * max(n, 1.0), cov / scale.clamp(min=1e-300), torch.tensor(float("nan"),
                                                                                                   dtype=cov.dtype))
        return corr.clamp(-1, 1).numpy()


def _as_maps(output: torch.Tensor, layer: str) -> torch.Tensor:
    """A layer output as (B, U, H, W) maps (a linear layer's (B, U) as 1×1 maps)."""
    if not isinstance(output, torch.Tensor) or output.ndim not in (2, 4):
        raise InvalidParameterError(f"layer {layer!r} must output (N, C, H, W) or (N, C) for an atlas")
    return output[:, :, None, None] if output.ndim == 2 else output


def _projected(maps: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Direction maps ⟨φ(x)[:, y, x], v⟩ for each direction v: (B, D, H, W)."""
    return torch.einsum("buhw,du->bdhw", maps, vectors)


def layer_units(model: torch.nn.Module, layer: str, input_shape: Sequence[int]) -> tuple[int, tuple[int, int]]:
    """(units, (grid height, width)) of ``layer``, from one forward pass of a grey image."""
    device = model_device(model)
    with frozen_eval(model, freeze=False), torch.no_grad(), record_activations(model, layer) as rec:
        model(torch.full((1, *input_shape), 0.5, device=device))
        maps = _as_maps(rec.outputs[layer], layer)
    return int(maps.shape[1]), (int(maps.shape[2]), int(maps.shape[3]))


def scan_layers(
    models: Sequence[tuple[torch.nn.Module, str]],
    data,
    k: int,
    classes: int,
    directions: Sequence[np.ndarray] = (),
    batch_size: int = 64,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> tuple[list[LayerScan], np.ndarray | None]:
    """One streamed pass over ``data`` through every ``(model, layer)``: each layer's
    :class:`LayerScan` and, for two models, the (U_A, U_B) unit correlation matrix.

    Args:
        models: one or two ``(model, layer name)`` pairs (each model on its own device, eval mode,
            restored afterwards).
        data: an ``(images, labels)`` pair or a Dataset of (image, label) (read batch by batch).
        k: top-k images per unit (1 <= k <= N).
        classes: the number of labels (for the class-conditional means).
        directions: per model, a (D, U) array of direction vectors (rows), or empty for none.
        progress: ``progress(done images, N)``; should_stop: polled per batch (InterruptedError).
    """
    from engine.data import dataset_size, slice_batch
    from engine.featvis.inputs import as_image_tensor

    total = dataset_size(data)
    if not 1 <= int(k) <= total:
        raise InvalidParameterError(f"k must be between 1 and the number of images ({total}), got {k}")
    if not 1 <= len(models) <= 2:
        raise InvalidParameterError("an atlas scans one or two models")
    accumulators: list[tuple[_Accumulator, _Accumulator | None]] = []
    grids: list[tuple[int, int]] = []
    correlation = _Correlation() if len(models) == 2 else None
    vectors = [torch.as_tensor(np.asarray(d, dtype=np.float32)) if len(d) else None
               for d in (list(directions) or [()] * len(models))]
    with _recording(models) as recorders:
        for start in range(0, total, int(batch_size)):
            if should_stop is not None and should_stop():
                raise InterruptedError("atlas scan stopped")
            stop = min(start + int(batch_size), total)
            images, labels = slice_batch(data, start, stop)
            batch = as_image_tensor(images)
            means = []
            for index, ((model, layer), rec) in enumerate(zip(models, recorders)):
                _forward_to_layer(model, batch.to(model_device(model)))
                maps = _as_maps(rec.outputs.pop(layer), layer).float().cpu()
                if len(accumulators) <= index:
                    accumulators.append(_new_accumulators(maps, vectors[index], k, classes))
                    grids.append((int(maps.shape[2]), int(maps.shape[3])))
                units, dirs = accumulators[index]
                units.add(maps, labels, start)
                if dirs is not None:
                    dirs.add(_projected(maps, vectors[index]), labels, start)
                means.append(maps.mean(dim=(2, 3)))
            if correlation is not None:
                correlation.add(*means)
            if progress is not None:
                progress(stop, total)
    scans = [LayerScan(units.table(grid[1]), dirs.table(grid[1]) if dirs is not None else _empty_table(k, classes),
                       grid)
             for (units, dirs), grid in zip(accumulators, grids)]
    return scans, (correlation.matrix() if correlation is not None else None)


def _new_accumulators(maps: torch.Tensor, vectors: torch.Tensor | None, k: int, classes: int):
    units = maps.shape[1]
    if units > MAX_ATLAS_UNITS:
        raise InvalidParameterError(f"the layer has {units:,} units; an atlas covers at most {MAX_ATLAS_UNITS:,}")
    if vectors is not None and vectors.shape[1] != units:
        raise InvalidParameterError(f"directions have {vectors.shape[1]} entries but the layer has {units} units")
    return _Accumulator(units, k, classes), (_Accumulator(len(vectors), k, classes) if vectors is not None else None)


def _empty_table(k: int, classes: int) -> UnitTable:
    """The table of no directions (an atlas asked for none)."""
    return UnitTable(np.zeros((0, k), np.int64), np.zeros((0, k), np.float32), np.zeros((0, k, 2), np.int32),
                     np.zeros((0, k), np.int64), *(np.zeros(0, np.float32) for _ in range(4)),
                     np.zeros((0, classes), np.float32))


class _LayerReached(Exception):
    """Raised by a forward hook once the scanned layer's output is recorded: the layers after it
    are not needed, so the scan's forward pass stops there."""


def _stop_here(_module, _inputs, _output):
    raise _LayerReached


def _calls(model: torch.nn.Module, layer: str) -> int:
    """How often ``layer`` runs in one forward pass of ``model`` (one grey image; 0 for a module with
    no ``input_shape`` to make one from: then the whole forward pass runs)."""
    if getattr(model, "input_shape", None) is None:
        return 0
    count = []
    handle = resolve_layer(model, layer).register_forward_hook(lambda *_: count.append(1))
    try:
        model(torch.full((1, *model.input_shape), 0.5, device=model_device(model)))
    finally:
        handle.remove()
    return len(count)


def _forward_to_layer(model: torch.nn.Module, batch: torch.Tensor) -> None:
    """Run ``model`` on ``batch`` up to the hooked layer (see :class:`_recording`)."""
    try:
        model(batch)
    except _LayerReached:
        pass


class _recording:
    """``with _recording(models) as recorders``: each model in eval mode with no gradients, its
    layer recorded and its forward pass stopped right after that layer; all restored on exit."""

    def __init__(self, models):
        from contextlib import ExitStack

        self.models, self.stack = models, ExitStack()

    def __enter__(self):
        self.stack.enter_context(torch.no_grad())
        recorders = []
        for model, layer in self.models:
            self.stack.enter_context(frozen_eval(model, freeze=False))
            recorders.append(self.stack.enter_context(record_activations(model, layer)))
            if _calls(model, layer) == 1:   # a module run twice per pass (a shared ReLU) must run to the end
                handle = resolve_layer(model, layer).register_forward_hook(_stop_here)   # after the recorder's
                self.stack.callback(handle.remove)
        return recorders

    def __exit__(self, *exc) -> bool:
        self.stack.__exit__(*exc)
        return False


def render_units(
    model: torch.nn.Module,
    layer: str,
    units: Sequence[int] = (),
    vectors: np.ndarray | None = None,
    config: VisConfig = VisConfig(),
    input_shape: tuple[int, int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: ShouldStop | None = None,
) -> np.ndarray:
    """lucent images of ``units`` (or of the directions ``vectors``, rows) of ``layer``, all in
    ONE optimisation (``visualise`` with one objective per batch element): (B, H, W, C) uint8.

    Raises:
        InterruptedError: ``should_stop()`` returned True (nothing partial is returned).
    """
    from engine.featvis.render import visualise

    targets = ([unit_target(int(u)) for u in units] if vectors is None
               else [direction_target(vectors.shape[1], vector=v) for v in vectors])
    found = visualise(model, layer, targets, config, input_shape=input_shape, progress=progress,
                      should_stop=should_stop)
    if found.stopped:
        raise InterruptedError("atlas rendering stopped")
    return np.clip(np.rint(found.images * 255.0), 0, 255).astype(np.uint8)


def scanned_images(dataset: str, split: str = "test") -> Callable[[Sequence[int]], np.ndarray]:
    """``images_of(indices) -> (N, H, W, C) uint8``: images of a dataset split by index (an atlas'
    top-k images, read one by one when shown or exported)."""
    from engine import data as edata

    found = edata.load_dataset(dataset, split=split)

    def images_of(indices: Sequence[int]) -> np.ndarray:
        pictures = np.stack([np.asarray(found[int(i)][0], dtype=np.float32) for i in indices])   # (N, C, H, W)
        return np.clip(np.rint(pictures.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8)

    return images_of


def render_variants(model: torch.nn.Module, layer: str, unit: int, config: VisConfig = VisConfig(),
                    starts: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A unit's negative image (the input that drives it down: the direction −eᵢ) and its images
    from ``starts`` other random starting points (seeds ``config.seed + 1 ...``): ((H, W, C),
    (starts, H, W, C)) uint8. The other starts show how much of the visualisation is the unit's
    and how much the starting noise's."""
    from dataclasses import replace

    units, _ = layer_units(model, layer, tuple(model.input_shape))
    negative = -np.eye(units, dtype=np.float32)[int(unit):int(unit) + 1]
    low = render_units(model, layer, vectors=negative, config=config)[0]
    others = np.concatenate([render_units(model, layer, [int(unit)], config=replace(config, seed=config.seed + s))
                             for s in range(1, starts + 1)]) if starts else np.zeros((0, *low.shape), np.uint8)
    return low, others
