"""Per-unit statistics of a layer: spatial roughness and label complexity (Agarwal & Chen 2020).

Adversarial training makes units (channels) (1) *smoother*: their activation maps vary less from
pixel to pixel, and (3) *simpler*: each responds to fewer kinds of input. For every channel u of
a convolutional layer, over images x_1..x_N with activation maps a_n = φ_u(x_n) (H x W):

* **roughness** (normalised total variation)
  ``Σ_n TV(a_n) / Σ_n Σ_ij |a_n[i, j]|`` with ``TV(a) = Σ |a[i+1, j] - a[i, j]| + Σ |a[i, j+1]
  - a[i, j]|``: the mean absolute change between neighbouring positions per unit of activation.
  0 for a constant map, up to 4 for a map of isolated spikes; lower = smoother. Summing numerator
  and denominator over images weights each image by how strongly the unit fires on it, so maps
  where the unit is almost silent do not dominate.
* **high-frequency share** ``Σ_n Σ_{|f| > f_c} |A_n(f)|² / Σ_n Σ_f |A_n(f)|²`` where A_n is the
  2-D DFT of a_n, |f| the radial frequency in cycles/pixel and f_c = 0.25 (half the Nyquist
  frequency); the DC term counts in the denominator. In [0, 1]; lower = smoother.
* **complexity**: the unit's top-k images (largest spatial-mean activation, ranked by
  ``engine.featvis.examples.rank``); the number of distinct labels among them and the Shannon
  entropy (bits) of their label histogram. Fewer labels / lower entropy = simpler.

Units of a fully connected layer (output (N, U)) get NaN smoothness and valid complexity; a unit
that never fires gets NaN smoothness.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from engine.data import dataset_size, iter_batches
from engine.errors import InvalidParameterError
from engine.evaluation import eval_mode
from engine.models.state import model_device
from engine.models.hooks import record_activations
from engine.runtime import Progress


#: Radial frequency (cycles/pixel) above which energy counts as high-frequency.
HIGH_FREQUENCY_CUTOFF = 0.25

#: Statistic columns of :func:`units_frame`, with "lower = smoother/simpler" for all of them.
STATISTICS = ("roughness", "high_freq_share", "label_entropy", "distinct_labels")


class UnitStats(NamedTuple):
    """Statistics of every unit (channel) of one layer; arrays have one entry per unit (U,).

    Attributes:
        layer: dotted layer name.
        roughness: normalised total variation (see module doc); NaN for non-spatial layers.
        high_freq_share: share of spectral energy above :data:`HIGH_FREQUENCY_CUTOFF`.
        label_entropy: entropy (bits) of the labels of the unit's top-k images.
        distinct_labels: number of distinct labels among them (int).
        mean_activation: spatial-mean activation averaged over the images.
        top_indices: (U, k) indices of each unit's top-k images, best first.
        active: bool (U,), False for a dead unit whose score never varies over the images (its
            top-k is arbitrary; summaries skip it).
    """

    layer: str
    roughness: np.ndarray
    high_freq_share: np.ndarray
    label_entropy: np.ndarray
    distinct_labels: np.ndarray
    mean_activation: np.ndarray
    top_indices: np.ndarray
    active: np.ndarray


@dataclass(frozen=True)
class UnitReport:
    """Result of :func:`unit_statistics` for one model: ``layers`` maps name -> :class:`UnitStats`;
    ``n_images`` images were used; ``stopped`` is True when ``should_stop`` ended it early (then
    ``layers`` is empty)."""

    layers: dict[str, UnitStats]
    n_images: int
    top_k: int
    stopped: bool = False


# ------------------------------------------------------------------------- smoothness (pure)


def _check_maps(maps: torch.Tensor) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.ndim != 4:
        raise InvalidParameterError("activation maps must be a tensor (N, U, H, W)")
    return maps.detach().to(torch.float64)


def _tv_sums(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-unit (Σ_n TV(a_n), Σ_n Σ|a_n|), each (U,), for maps (N, U, H, W)."""
    dy = (maps[:, :, 1:, :] - maps[:, :, :-1, :]).abs().sum(dim=(0, 2, 3))
    dx = (maps[:, :, :, 1:] - maps[:, :, :, :-1]).abs().sum(dim=(0, 2, 3))
    return dy + dx, maps.abs().sum(dim=(0, 2, 3))


def _spectrum_sums(maps: torch.Tensor, cutoff: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-unit (high-frequency energy, total energy), each (U,), for maps (N, U, H, W)."""
    power = torch.fft.fft2(maps).abs().pow(2)  # (N, U, H, W)
    fy = torch.fft.fftfreq(maps.shape[2], device=maps.device).view(-1, 1)
    fx = torch.fft.fftfreq(maps.shape[3], device=maps.device).view(1, -1)
    high = (fy.pow(2) + fx.pow(2)).sqrt() > cutoff  # (H, W)
    return (power * high).sum(dim=(0, 2, 3)), power.sum(dim=(0, 2, 3))


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> np.ndarray:
    """numerator / denominator per unit, NaN where the denominator is 0."""
    out = torch.full_like(numerator, float("nan"))
    nonzero = denominator > 0
    out[nonzero] = numerator[nonzero] / denominator[nonzero]
    return out.cpu().numpy()


def spatial_roughness(maps: torch.Tensor) -> np.ndarray:
    """Normalised total variation per unit (see module doc): float (U,), lower = smoother.

    Args:
        maps: activation maps (N, U, H, W) of N images and U units.
    """
    return _ratio(*_tv_sums(_check_maps(maps)))


def high_frequency_share(maps: torch.Tensor, cutoff: float = HIGH_FREQUENCY_CUTOFF) -> np.ndarray:
    """Share of spectral energy above ``cutoff`` cycles/pixel per unit: float (U,) in [0, 1].

    Args:
        maps: activation maps (N, U, H, W).
        cutoff: radial frequency threshold in (0, 0.71).
    """
    return _ratio(*_spectrum_sums(_check_maps(maps), cutoff))


# ------------------------------------------------------------------------- complexity (pure)


def label_complexity(top_labels) -> tuple[np.ndarray, np.ndarray]:
    """Label entropy (bits) and number of distinct labels per row of ``top_labels`` (U, k).

    Returns:
        (entropy float (U,), distinct int (U,)). A unit whose k images share one label has
        entropy 0 and 1 distinct label; k different labels give log2(k) and k.
    """
    labels = np.asarray(top_labels)
    if labels.ndim != 2 or labels.shape[1] == 0:
        raise InvalidParameterError("top_labels must be a (units, k) array with k >= 1")
    entropy = np.zeros(len(labels))
    distinct = np.zeros(len(labels), dtype=np.int64)
    for u, row in enumerate(labels):
        _, counts = np.unique(row, return_counts=True)
        p = counts / counts.sum()
        entropy[u] = float(-(p * np.log2(p)).sum()) + 0.0
        distinct[u] = len(counts)
    return entropy, distinct


# ------------------------------------------------------------------------- one pass over images


class _RunningTopK:
    """Each unit's k best scores so far, their image indices and labels (U, k), merged batch by
    batch exactly as :func:`~engine.featvis.examples.rank` over all images would order them
    (float32 scores, ties to the lower index: earlier candidates come first in a stable sort)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.scores = self.index = self.labels = None

    def add(self, scores: torch.Tensor, start: int, labels: torch.Tensor) -> None:
        """Merge a batch's scores (B, U) of images ``start .. start+B-1`` with labels (B,)."""
        units, batch = scores.shape[1], scores.shape[0]
        new = (scores.T.float(), torch.arange(start, start + batch).expand(units, -1),
               labels.long().expand(units, -1))
        if self.scores is not None:
            new = tuple(torch.cat([old, part], dim=1) for old, part in zip((self.scores, self.index, self.labels), new))
        order = torch.sort(-new[0], dim=1, stable=True).indices[:, :self.k]
        self.scores, self.index, self.labels = (part.gather(1, order) for part in new)


class _LayerSums:
    """Running sums for one layer over batches: nothing of size N is kept (memory is one batch
    plus (U, k) top-k entries)."""

    def __init__(self, k: int) -> None:
        self.sums: list[torch.Tensor] | None = None  # tv, mass, high, energy (U,)
        self.top = _RunningTopK(k)
        self.total = self.low = self.high = None      # Σ, min, max of the spatial means (U,)
        self.seen = 0

    def add(self, output: torch.Tensor, labels: torch.Tensor) -> None:
        if not isinstance(output, torch.Tensor) or output.ndim not in (2, 4):
            raise InvalidParameterError(
                "unit statistics need a layer whose output is (N, C, H, W) or (N, C)")
        if output.ndim == 2:
            scores = output.float().cpu()
        else:
            maps = output.detach().to(torch.float64)
            scores = maps.mean(dim=(2, 3)).float().cpu()
            parts = [*_tv_sums(maps), *_spectrum_sums(maps, HIGH_FREQUENCY_CUTOFF)]
            self.sums = parts if self.sums is None else [a + b for a, b in zip(self.sums, parts)]
        self.top.add(scores, self.seen, labels)
        batch = (scores.double().sum(0), scores.min(0).values, scores.max(0).values)
        if self.total is None:
            self.total, self.low, self.high = batch
        else:
            self.total = self.total + batch[0]
            self.low, self.high = torch.minimum(self.low, batch[1]), torch.maximum(self.high, batch[2])
        self.seen += len(scores)

    def finish(self, layer: str) -> UnitStats:
        units = len(self.total)
        if self.sums is None:
            roughness = high = np.full(units, np.nan)
        else:
            tv, mass, high_energy, energy = self.sums
            roughness, high = _ratio(tv, mass), _ratio(high_energy, energy)
        entropy, distinct = label_complexity(self.top.labels.numpy())
        active = (self.high > self.low).numpy()
        mean = (self.total / self.seen).float().numpy()
        return UnitStats(layer, roughness, high, entropy, distinct, mean, self.top.index.numpy().astype(np.int64),
                         active)


def _check_unit_args(images, labels, layers, top_k, batch_size) -> tuple[list[str], object]:
    """The layer names and the data to stream: ``(images, labels)`` or a Dataset (``labels`` None)."""
    if labels is None and not isinstance(images, torch.Tensor):
        data, n = images, dataset_size(images)
    else:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            raise InvalidParameterError("images must be a non-empty tensor (N, C, H, W) in [0, 1]")
        if len(torch.as_tensor(labels)) != len(images):
            raise InvalidParameterError("labels must have one entry per image")
        data, n = (images, torch.as_tensor(labels)), len(images)
    if n == 0:
        raise InvalidParameterError("images must be a non-empty tensor (N, C, H, W) in [0, 1]")
    names = [layers] if isinstance(layers, str) else list(layers)
    if not names:
        raise InvalidParameterError("choose at least one layer")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= n:
        raise InvalidParameterError(f"top_k must be an integer in 1..{n}, got {top_k!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive integer, got {batch_size!r}")
    return names, data


@torch.no_grad()
def unit_statistics(
    model: nn.Module,
    images,
    labels=None,
    layers: str | Sequence[str] = (),
    top_k: int = 10,
    batch_size: int = 128,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> UnitReport:
    """Roughness, high-frequency share and label complexity of every unit of ``layers``.

    One forward pass per batch records all layers (``engine.models.hooks.record_activations``);
    the model runs in eval mode on its own device and its mode is restored.

    Args:
        model: classifier taking (N, C, H, W) images in [0, 1].
        images: (N, C, H, W) held-out images in [0, 1] with ``labels`` (N,) their classes; or, with
            ``labels`` None, a Dataset of (image, label) such as ``engine.data.Sample``, read one
            batch at a time (memory is one batch plus (units × top_k) entries, whatever N).
        layers: one dotted layer name or several (``engine.models.list_layers``).
        top_k: images per unit for the complexity statistics (1 <= top_k <= N).
        batch_size: images per forward pass.
        progress: ``progress(done_images, N)`` after each batch.
        should_stop: polled before each batch; True returns an empty, ``stopped`` report.

    Returns:
        :class:`UnitReport` with one :class:`UnitStats` per layer.

    Raises:
        InvalidParameterError: unknown layer, bad sizes, or a layer with an unusable output.
    """
    names, data = _check_unit_args(images, labels, layers, top_k, batch_size)
    total = dataset_size(data)
    sums = {name: _LayerSums(top_k) for name in names}
    device = model_device(model)
    with eval_mode(model), record_activations(model, names) as rec:
        for x, y in iter_batches(data, batch_size):
            if should_stop is not None and should_stop():
                return UnitReport({}, 0, top_k, stopped=True)
            model(x.to(device))
            for name in names:
                sums[name].add(rec.outputs[name], y)
            if progress is not None:
                progress(sums[names[0]].seen, total)
    stats = {name: sums[name].finish(name) for name in names}
    return UnitReport(stats, total, top_k)


def compare_units(
    models: Mapping[str, nn.Module],
    images,
    labels=None,
    layers: Mapping[str, Sequence[str]] | Sequence[str] = (),
    top_k: int = 10,
    batch_size: int = 128,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, UnitReport]:
    """:func:`unit_statistics` for several models (e.g. A and B) on the same images.

    Args:
        layers: the same layer names for every model, or model name -> its layer names.
        progress: ``progress(done, total)`` counted in images over all models.

    Returns:
        model name -> :class:`UnitReport` (models after a stop get ``stopped`` reports).
    """
    reports, n = {}, dataset_size(images)
    for i, (name, model) in enumerate(models.items()):
        wanted = layers[name] if isinstance(layers, Mapping) else layers
        step = None if progress is None else (lambda done, _t, i=i: progress(i * n + done, len(models) * n))
        reports[name] = unit_statistics(model, images, labels, wanted, top_k, batch_size, step, should_stop)
    return reports


def units_frame(reports: Mapping[str, UnitReport]) -> pd.DataFrame:
    """Tidy table of every unit: model, layer, unit, :data:`STATISTICS`, mean_activation, active."""
    frames = [
        pd.DataFrame({
            "model": model, "layer": layer, "unit": np.arange(len(s.roughness)),
            "roughness": s.roughness, "high_freq_share": s.high_freq_share,
            "label_entropy": s.label_entropy, "distinct_labels": s.distinct_labels,
            "mean_activation": s.mean_activation, "active": s.active,
        })
        for model, report in reports.items() for layer, s in report.layers.items()
    ]
    columns = ["model", "layer", "unit", *STATISTICS, "mean_activation", "active"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
