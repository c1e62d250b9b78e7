"""Explanation-quality metrics: is an attribution map faithful to the model, sensitive to its
parameters, located on the object and stable under small input noise?

Every metric scores the same 2-D map the Saliency page draws: an attribution method's map for the
image's true label, reduced over channels (:func:`explainer`; ``abs_sum`` by default, before any
percentile clipping). The functions are pure functions on tensors: ``(model, images (N, C, H, W)
in [0, 1], labels (N,), explain, ...) -> per-image scores``, batched, seeded (the noise of image
``i`` depends on ``seed`` and ``i`` only, never on batching) and leaving the caller's random state
alone. Pass ``maps`` (N, H, W) to score maps computed earlier instead of calling ``explain``.

- **randomisation** (:func:`randomisation`): the model-parameter randomisation test (Adebayo et
  al. 2018), cascading from the top layer down; similarity of each randomised map to the original
  by :func:`ssim` and :func:`spearman`. Lower is better: the map depends on what the model learnt.
- **faithfulness**: ROAD (:func:`road`; Rong et al. 2022): accuracy after the most (MoRF) or least
  (LeRF) relevant pixels are replaced by noisy linear imputation (:func:`noisy_linear_imputation`);
  pixel flipping (:func:`pixel_flipping`; Bach et al. 2015, Samek et al. 2017): the true class's
  probability as the most relevant pixels are set to a baseline, and its area (:func:`flipping_auc`).
- **localisation** against foreground masks (:func:`dataset_masks`): the pointing game
  (:func:`pointing_game`; Zhang et al. 2018) and relevance-mass accuracy (:func:`relevance_mass`;
  Arras et al. 2022).
- **robustness**: max- and average-sensitivity (:func:`sensitivity`; Yeh et al. 2019), normalised
  by the original map's norm as Quantus defines them.

:func:`explanation_metrics` runs a choice of them for several models and methods (the
``saliency_metrics`` analysis, the CLI's ``saliency --metrics`` and the Saliency page call it);
its metric names are :data:`EVALUATORS`' keys. docs/EXPLANATION_METRICS.md has the definitions,
parameters and the agreement with Quantus 0.6.
"""
from __future__ import annotations

import copy
import functools
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.attribution.alignment import alignment_score
from engine.attribution.curves import pixel_order, top_mask
from engine.attribution.inputs import as_images, as_labels, predict
from engine.attribution.methods import UnsupportedModelError, _seeded, attribute, get_method, resolve_params
from engine.attribution.render import REDUCTIONS
from engine.catalogue import EXPLANATION_METRICS, LOCALISATION_METRICS, MetricOptions, require_names
from engine.errors import InvalidParameterError
from engine.models.state import model_device
from engine.runtime import Progress

#: ``explain(model, images (N, C, H, W), labels (N,)) -> maps (N, H, W)`` float64 on the CPU
Explain = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

#: ROAD's default fractions of pixels replaced (``MetricOptions``)
ROAD_FRACTIONS = MetricOptions.fractions
#: ROAD's orders: most relevant first, least relevant first
ROAD_ORDERS = ("morf", "lerf")
#: the conjugate-gradient solve of the imputation stops at this relative residual
_SOLVE_TOL = 1e-12
#: scikit-image's SSIM defaults (Wang et al. 2004): window side, K1, K2
SSIM_WINDOW, SSIM_K1, SSIM_K2 = 7, 0.01, 0.03
#: random streams (keys of the per-image seeds)
_ROAD_STREAM, _SENSITIVITY_STREAM = 1, 2


# ----------------------------------------------------------------------------- the explanation
def explainer(method: str = "saliency", params: dict | None = None, reduce: str = "abs_sum",
              batch_size: int = 32) -> Explain:
    """The explanation every metric scores: ``method``'s attribution (``engine.attribution.attribute``
    with ``params``) for the given labels, reduced over channels with ``reduce``.

    Raises:
        InvalidParameterError: an unknown method, parameter or reduction (before anything runs).
    """
    get_method(method)
    resolve_params(method, dict(params or {}))
    if reduce not in REDUCTIONS:
        raise InvalidParameterError(f"unknown reduction {reduce!r}; choose from {', '.join(REDUCTIONS)}")
    chosen = dict(params or {})

    def explain(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        result = attribute(model, images, labels, method, batch_size=batch_size, **chosen)
        return torch.from_numpy(REDUCTIONS[reduce](result.maps)).double()

    return explain


def _inputs(model: nn.Module, images, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked images (N, C, H, W) in [0, 1] and labels (N,) in the model's classes."""
    images = as_images(images)
    classes = predict(model, images[:1]).shape[1]
    return images, as_labels(labels, images.shape[0], classes)


def _maps_of(model, images, labels, explain: Explain, maps) -> torch.Tensor:
    """``maps`` (N, H, W) as float64, or ``explain``'s maps of ``images`` when None."""
    found = explain(model, images, labels) if maps is None else torch.as_tensor(np.asarray(maps))
    found = found.detach().cpu().double()
    if tuple(found.shape) != (images.shape[0], *images.shape[-2:]):
        raise InvalidParameterError(f"maps must have shape (N, H, W) = {(images.shape[0], *images.shape[-2:])}, "
                                    f"got {tuple(found.shape)}")
    return found


def _seed_of(*keys: int) -> int:
    """A well-mixed 32-bit seed for the tuple ``keys`` (e.g. seed, stream, image index)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def _per_image(shape: tuple[int, ...], keys: tuple[int, ...], draw: str) -> torch.Tensor:
    """Noise (N, ...) float64, image ``i`` drawn from its own generator seeded by ``keys + (i,)``:
    ``draw`` "normal" (standard normal) or "uniform" (in [-1, 1))."""
    out = torch.empty(shape, dtype=torch.float64)
    for i in range(shape[0]):
        generator = torch.Generator().manual_seed(_seed_of(*keys, i))
        sample = torch.rand if draw == "uniform" else torch.randn
        out[i] = sample(shape[1:], generator=generator, dtype=torch.float64)
    return out * 2 - 1 if draw == "uniform" else out


# ----------------------------------------------------------------------------- similarity
def spearman(a, b) -> torch.Tensor:
    """Spearman rank correlation of each pair of maps: (N, ...) x (N, ...) -> (N,) float64.

    Ranks are averaged over ties (as ``scipy.stats.spearmanr``); NaN where a map is constant.
    """
    ra, rb = _ranks(_flat(a)), _ranks(_flat(b))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denominator = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    return (ra * rb).sum(1) / denominator


def _flat(x) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).double()
    return x.reshape(x.shape[0], -1)


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..F of each row of ``x`` (N, F), tied values sharing their average rank."""
    values, order = torch.sort(x, dim=1, stable=True)
    n, f = x.shape
    new_group = torch.ones_like(values, dtype=torch.bool)
    new_group[:, 1:] = values[:, 1:] != values[:, :-1]
    group = new_group.long().cumsum(1) - 1 + torch.arange(n).unsqueeze(1) * f  # unique per row
    position = torch.arange(1, f + 1, dtype=torch.float64).expand(n, f).reshape(-1)
    total = torch.zeros(n * f, dtype=torch.float64).index_add_(0, group.reshape(-1), position)
    count = torch.zeros(n * f, dtype=torch.float64).index_add_(0, group.reshape(-1), torch.ones_like(position))
    average = (total / count.clamp(min=1))[group]
    return torch.empty_like(average).scatter_(1, order, average)


def ssim(a, b, window: int = SSIM_WINDOW) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) of each pair of 2-D maps: (N, H, W) x (N, H, W)
    -> (N,) float64, as scikit-image's ``structural_similarity`` computes it by default (a uniform
    ``window`` x ``window`` window, sample covariances, K1 = 0.01, K2 = 0.03, the mean over the
    positions where the window fits) with the data range of each pair = max - min over both maps
    (Quantus' ``ssim``). NaN where both maps are the same constant.

    Raises:
        InvalidParameterError: the maps differ in shape, are not 2-D, or are smaller than the window.
    """
    x, y = torch.as_tensor(np.asarray(a)).double(), torch.as_tensor(np.asarray(b)).double()
    if x.shape != y.shape or x.ndim != 3 or min(x.shape[-2:]) < window:
        raise InvalidParameterError(f"ssim needs two (N, H, W) maps of one shape, at least {window} pixels "
                                    f"high and wide, got {tuple(x.shape)} and {tuple(y.shape)}")
    both = torch.cat([x.flatten(1), y.flatten(1)], 1)
    data_range = (both.amax(1) - both.amin(1)).view(-1, 1, 1)
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mean = lambda t: F.avg_pool2d(t.unsqueeze(1), window, stride=1).squeeze(1)  # noqa: E731 (valid positions)
    mx, my = mean(x), mean(y)
    sample = window * window / (window * window - 1)
    vx, vy = sample * (mean(x * x) - mx * mx), sample * (mean(y * y) - my * my)
    cov = sample * (mean(x * y) - mx * my)
    index = (2 * mx * my + c1) * (2 * cov + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return index.mean(dim=(1, 2))


def normalise_by_max(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its largest absolute value (an all-zero map stays zero)."""
    scale = maps.abs().flatten(1).amax(1).view(-1, *([1] * (maps.ndim - 1)))
    return maps / torch.where(scale > 0, scale, torch.ones_like(scale))


# ----------------------------------------------------------------------------- randomisation
def randomisable_layers(model: nn.Module) -> list[str]:
    """The modules the randomisation test re-initialises, top (output side) first: every module
    with a ``reset_parameters`` method (convolutions, linear layers, normalisation layers), in
    reverse order of definition — Quantus' ``top_down`` order."""
    return [name for name, module in model.named_modules() if callable(getattr(module, "reset_parameters", None))][::-1]


def cascading_randomisation(model: nn.Module, seed: int = 0) -> Iterator[tuple[str, nn.Module]]:
    """A copy of ``model`` with one more layer re-initialised at each step, top layer first
    (Adebayo et al. 2018's cascading randomisation): yields ``(layer name, the copy)``; the copy is
    the same object, changed in place from one step to the next. Each layer is re-initialised by
    its own ``reset_parameters()`` with torch's generator seeded to ``seed`` (outside that, the
    caller's random state is left alone); ``model`` itself is never changed.
    """
    randomised = copy.deepcopy(model)
    modules = dict(randomised.named_modules())
    device = model_device(randomised)
    for name in randomisable_layers(randomised):
        with _seeded(int(seed), device), torch.no_grad():
            modules[name].reset_parameters()
        yield name, randomised


@dataclass(frozen=True)
class RandomisationScores:
    """The model-parameter randomisation test of one model and explanation.

    Attributes:
        layers: the layers randomised, cumulatively, top first (row ``l`` has layers[0..l] random).
        ssim, spearman: (L, N) float64: similarity of each image's map after each step to its
            original map (both divided by their maximum first).
    """

    layers: tuple[str, ...]
    ssim: np.ndarray
    spearman: np.ndarray


def randomisation(model: nn.Module, images, labels, explain: Explain, *, maps=None, seed: int = 0,
                  should_stop: Callable[[], bool] | None = None) -> RandomisationScores:
    """Model-parameter randomisation test (Adebayo et al. 2018), cascading from the top layer down.

    Each map (the original and each randomised model's) is divided by its maximum; the similarity
    of each randomised map to the original is measured by :func:`ssim` and :func:`spearman`. A map
    that stays similar while the model's weights are destroyed does not explain the model (lower
    is better); the last row (every layer random) is the test's summary.

    Args:
        model: a classifier on images in [0, 1] (left unchanged; a copy is randomised).
        images, labels: (N, C, H, W) in [0, 1] and the classes explained.
        explain: the explanation (:func:`explainer`); maps: its maps of ``model``, if known.
        seed: seeds every layer's re-initialisation (see :func:`cascading_randomisation`).
        should_stop: polled before each layer; True stops (the rows measured so far are returned).
    """
    images, labels = _inputs(model, images, labels)
    original = normalise_by_max(_maps_of(model, images, labels, explain, maps))
    layers, ssims, ranks = [], [], []
    for name, randomised in cascading_randomisation(model, seed):
        if should_stop is not None and should_stop():
            break
        changed = normalise_by_max(_maps_of(randomised, images, labels, explain, None))
        layers.append(name)
        ssims.append(ssim(original, changed).numpy())
        ranks.append(spearman(original, changed).numpy())
    empty = np.zeros((0, images.shape[0]))
    return RandomisationScores(tuple(layers), np.stack(ssims) if ssims else empty,
                               np.stack(ranks) if ranks else empty)


# ----------------------------------------------------------------------------- ROAD
def _spread(x: torch.Tensor) -> torch.Tensor:
    """Each pixel's weighted sum of its 8 neighbours, per channel, (B, C, H, W) -> (B, C, H, W): the
    4 direct neighbours weigh 1/6, the 4 diagonal ones 1/12 (Rong et al. 2022; they sum to 1), and
    pixels outside the image count as 0."""
    # the weights are ([1, 2, 1] ⊗ [1, 2, 1] - 4 at the centre) / 12: two 3-tap passes, then the centre
    rows = F.pad(x, (0, 0, 1, 1))
    rows = rows[..., :-2, :] + 2 * x + rows[..., 2:, :]
    both = F.pad(rows, (1, 1))
    both = both[..., :-2] + 2 * rows + both[..., 2:]
    return (both - 4 * x) / 12


def linear_imputation(images, removed) -> torch.Tensor:
    """Replace the ``removed`` pixels by the solution of Rong et al. 2022's linear system: each
    removed pixel equals the weighted mean of its 8 neighbours (4-neighbours weigh 1/6, diagonal
    ones 1/12, renormalised at the border), removed neighbours being unknowns too.

    Solved per image and channel by conjugate gradients (matrix-free, in float64, to a relative
    residual of 1e-12), so it runs batched on any device.

    Args:
        images: (B, C, H, W); removed: (B, 1, H, W) or (B, H, W) bool, True where a pixel is replaced.
            Each image must keep at least one pixel (else nothing determines the values).

    Returns:
        float64 (B, C, H, W): the kept pixels unchanged, the removed ones imputed.
    """
    x = torch.as_tensor(images).double()
    mask = torch.as_tensor(removed).to(x.device).bool().reshape(x.shape[0], 1, *x.shape[-2:])
    if bool((mask.flatten(1).all(1)).any()):
        raise InvalidParameterError("linear imputation needs at least one kept pixel per image")
    hole = mask.double()
    weight = _spread(torch.ones_like(hole))                           # (B, 1, H, W) neighbour weight sums
    rhs = hole * _spread(x * (1 - hole))                              # what the kept neighbours give
    solved = _conjugate_gradients(lambda u: hole * (weight * u - _spread(u)), rhs, rhs / weight)
    return torch.where(mask, solved, x)


def _conjugate_gradients(apply: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                         start: torch.Tensor) -> torch.Tensor:
    """Solve ``apply(u) = rhs`` for every (image, channel) system at once, from ``start``: the
    operator is symmetric positive definite on the removed pixels and keeps zero outside them."""
    u = start.clone()
    residual = rhs - apply(u)
    direction = residual.clone()
    rr = _dot(residual, residual)
    target = _SOLVE_TOL ** 2 * _dot(rhs, rhs)
    for _ in range(4 * rhs.shape[-1] * rhs.shape[-2]):
        if bool((rr <= target).all()):
            break
        step = apply(direction)
        curvature = _dot(direction, step)
        alpha = torch.where(curvature > 0, rr / torch.where(curvature > 0, curvature, 1.0), 0.0)
        u.add_(alpha * direction)
        residual.sub_(alpha * step)
        rr_next = _dot(residual, residual)
        direction = residual + torch.where(rr > 0, rr_next / torch.where(rr > 0, rr, 1.0), 0.0) * direction
        rr = rr_next
    return u


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-system inner products over the pixels: (B, C, H, W) -> (B, C, 1, 1)."""
    return (a * b).sum(dim=(-2, -1), keepdim=True)


def noisy_linear_imputation(images, removed, noise: float = 0.01, seed: int = 0,
                            stream: tuple[int, ...] = ()) -> torch.Tensor:
    """:func:`linear_imputation` plus Gaussian noise of standard deviation ``noise`` on the
    removed pixels (every channel): ROAD's imputation (Rong et al. 2022). Image ``i``'s noise is
    drawn from a generator seeded by ``(seed, *stream, i)``. Values are not clipped (as in ROAD)."""
    x = torch.as_tensor(images)
    imputed = linear_imputation(x, removed)
    mask = torch.as_tensor(removed).to(imputed.device).bool().reshape(imputed.shape[0], 1, *imputed.shape[-2:])
    draw = _per_image(tuple(imputed.shape), (int(seed), *stream), "normal").to(imputed.device)
    return torch.where(mask, imputed + float(noise) * draw, imputed)


@functools.lru_cache(maxsize=16)
def imputation_seconds(shape: tuple[int, int, int]) -> float:
    """Measured seconds of :func:`linear_imputation` per image of ``shape`` (C, H, W) with half of
    its pixels removed (two images on the CPU; cached per shape): the cost model's ROAD term."""
    generator = torch.Generator().manual_seed(0)
    images = torch.rand((2, *shape), generator=generator, dtype=torch.float64)
    removed = top_mask(pixel_order(torch.rand((2, *shape[-2:]), generator=generator)), 0.5, tuple(shape[-2:]))
    start = time.perf_counter()
    linear_imputation(images, removed)
    return (time.perf_counter() - start) / 2


def removed_count(pixels: int, fraction: float) -> int:
    """How many of ``pixels`` a ``fraction`` removes: ``floor(pixels * fraction)`` (Quantus' ``int``),
    exact for fractions written with few decimals."""
    return math.floor(pixels * float(fraction) + 1e-9)


def road(model: nn.Module, images, labels, explain: Explain, *, maps=None, fractions: Sequence[float] = ROAD_FRACTIONS,
         order: str = "morf", noise: float = 0.01, seed: int = 0, batch_size: int = 64) -> np.ndarray:
    """ROAD (Rong et al. 2022, *A Consistent and Efficient Evaluation Strategy for Attribution
    Methods*): whether the model still predicts the label once a fraction of the pixels, ranked by
    the map, is replaced by noisy linear imputation.

    Args:
        order: "morf" replaces the most relevant pixels first (a faithful map makes accuracy drop
            fast: lower is better), "lerf" the least relevant first (accuracy should stay: higher
            is better).
        fractions: shares of the pixels replaced, each in [0, 1) (floor(H*W*f) pixels).
        noise: standard deviation of the imputation noise, in pixel units.
        seed: the noise seed (image ``i``, fraction ``j``: its own generator).

    Returns:
        float64 (N, F): 1 where the model predicts the label at that fraction, else 0.
    """
    if order not in ROAD_ORDERS:
        raise InvalidParameterError(f"ROAD order must be one of {', '.join(ROAD_ORDERS)}, got {order!r}")
    values = _fractions(fractions)
    images, labels = _inputs(model, images, labels)
    heat = _maps_of(model, images, labels, explain, maps)
    ranking = pixel_order(heat if order == "morf" else -heat)   # (N, H*W), stable
    side = tuple(images.shape[-2:])
    correct = []
    for j, fraction in enumerate(values):
        removed = top_mask(ranking, removed_count(side[0] * side[1], fraction) / (side[0] * side[1]), side)
        stream = (_ROAD_STREAM, ROAD_ORDERS.index(order), j)
        imputed = noisy_linear_imputation(images, removed, noise, seed, stream).float()
        correct.append((predict(model, imputed, batch_size).argmax(1) == labels).double())
    return torch.stack(correct, 1).numpy()


def _fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(f) for f in fractions)
    if not values or not all(0.0 <= f < 1.0 for f in values):
        raise InvalidParameterError(f"ROAD fractions must be numbers in [0, 1) (some pixels must stay), "
                                    f"got {fractions!r}")
    return values


# ----------------------------------------------------------------------------- pixel flipping
def flip_schedule(pixels: int, steps: int) -> tuple[int, ...]:
    """The number of pixels flipped after each step: ``ceil(pixels / steps)`` more per step, the
    last step possibly fewer, ending at ``pixels``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InvalidParameterError(f"pixel-flipping steps must be an integer >= 1, got {steps!r}")
    per_step = math.ceil(pixels / steps)
    return tuple(min(k * per_step, pixels) for k in range(1, math.ceil(pixels / per_step) + 1))


def pixel_flipping(model: nn.Module, images, labels, explain: Explain, *, maps=None, steps: int = 50,
                   baseline: float = 0.0, batch_size: int = 64) -> np.ndarray:
    """Pixel flipping (Bach et al. 2015; Samek et al. 2017): the most relevant pixels (all channels)
    are set to ``baseline``, ``ceil(H*W / steps)`` more at each step (:func:`flip_schedule`), and the
    softmax probability of the label is read after each step. A faithful map makes it fall fast.

    Returns:
        float64 (N, S): the label's probability after each of the S steps (the last: every pixel
        flipped). :func:`flipping_auc` gives its area.
    """
    if not 0.0 <= float(baseline) <= 1.0:
        raise InvalidParameterError(f"pixel-flipping baseline must be in [0, 1], got {baseline!r}")
    images, labels = _inputs(model, images, labels)
    heat = _maps_of(model, images, labels, explain, maps)
    ranking = pixel_order(heat)
    side = tuple(images.shape[-2:])
    pixels = side[0] * side[1]
    fill = torch.full_like(images, float(baseline))
    curve = []
    for flipped in flip_schedule(pixels, steps):
        x = torch.where(top_mask(ranking, flipped / pixels, side), fill, images)
        probabilities = torch.softmax(predict(model, x, batch_size).double(), dim=1)
        curve.append(probabilities[torch.arange(len(labels)), labels])
    return torch.stack(curve, 1).numpy()


def flipping_auc(curve) -> np.ndarray:
    """Area under each pixel-flipping curve (N, S) -> (N,): the trapezoidal rule over its S steps
    spaced evenly on [0, 1] (Quantus' ``np.trapz(dx=1)`` divided by S - 1), so a flat curve's area
    is its value; one step: that value. Lower is better."""
    values = np.asarray(curve, dtype=np.float64)
    if values.shape[1] == 1:
        return values[:, 0].copy()
    return (values[:, 1:] + values[:, :-1]).sum(1) / (2 * (values.shape[1] - 1))


# ----------------------------------------------------------------------------- localisation
def dataset_masks(dataset, indices=None) -> torch.Tensor | None:
    """The foreground masks of a dataset's images, (n, 1, H, W) bool, or None when it has none.

    The interface: a dataset that knows its objects' masks has a method
    ``foreground_masks(indices=None)`` (``engine.data.shapes.ShapesDataset`` does); ``indices``
    are what ``engine.data.take_indices`` chose (None: every image). A ``engine.data.Sample``
    passes its own indices through.
    """
    inner = getattr(dataset, "dataset", None)
    if inner is not None and hasattr(dataset, "indices"):  # a Sample: the wrapped dataset's masks
        chosen = dataset.indices if indices is None else dataset.indices[torch.as_tensor(indices)]
        return dataset_masks(inner, chosen)
    getter = getattr(dataset, "foreground_masks", None)
    return None if getter is None else torch.as_tensor(getter(indices)).bool()


def _masks_for(masks, images: torch.Tensor) -> torch.Tensor:
    """``masks`` as (N, H, W) bool matching the images."""
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks).bool().cpu()
    if m.ndim == 4 and m.shape[1] == 1:
        m = m[:, 0]
    if tuple(m.shape) != (images.shape[0], *images.shape[-2:]):
        raise InvalidParameterError(f"masks must have shape (N, 1, H, W) or (N, H, W) matching the images "
                                    f"{(images.shape[0], *images.shape[-2:])}, got {tuple(m.shape)}")
    return m


def pointing_game(model: nn.Module, images, labels, explain: Explain, masks, *, maps=None) -> np.ndarray:
    """Pointing game (Zhang et al. 2018): 1 where the map's maximum lies on the object (any of its
    maximal pixels, when several tie; no tolerance margin, as in Quantus), else 0; NaN for an
    empty mask. Higher is better."""
    images, labels = _inputs(model, images, labels)
    heat = _maps_of(model, images, labels, explain, maps).flatten(1)
    inside = _masks_for(masks, images).flatten(1)
    hit = ((heat == heat.amax(1, keepdim=True)) & inside).any(1).double()
    return torch.where(inside.any(1), hit, torch.nan).numpy()


def relevance_mass(model: nn.Module, images, labels, explain: Explain, masks, *, maps=None) -> np.ndarray:
    """Relevance-mass accuracy (Arras et al. 2022): the share of the map's positive relevance that
    lies inside the object's mask, per image, in [0, 1]; NaN for an empty mask or a map with no
    positive relevance. Higher is better."""
    images, labels = _inputs(model, images, labels)
    heat = _maps_of(model, images, labels, explain, maps).clamp(min=0)
    inside = _masks_for(masks, images)
    scores = np.asarray(alignment_score(heat.numpy(), inside.numpy()), dtype=np.float64)
    return np.where(inside.flatten(1).any(1).numpy(), scores, np.nan)


# ----------------------------------------------------------------------------- robustness
@dataclass(frozen=True)
class SensitivityScores:
    """Max- and average-sensitivity of one model and explanation.

    Attributes:
        maximum, average: (N,) float64: the largest / mean ratio over the samples.
        ratios: (N, S): ``||map(x + δ) - map(x)|| / ||map(x)||`` (Frobenius norms) per sample.
    """

    maximum: np.ndarray
    average: np.ndarray
    ratios: np.ndarray


def sensitivity(model: nn.Module, images, labels, explain: Explain, *, maps=None, radius: float = 0.05,
                samples: int = 10, seed: int = 0) -> SensitivityScores:
    """Max- and average-sensitivity (Yeh et al. 2019, *On the (In)fidelity and Sensitivity of
    Explanations*), normalised as Quantus defines them: for ``samples`` draws δ uniform in the
    ℓ∞ ball of ``radius``, ``||map(x + δ) - map(x)|| / ||map(x)||``; its maximum and mean over the
    draws. Lower is better. The perturbed image is clipped to [0, 1] (Quantus does not clip); a map
    that does not change scores 0 even when it is all zeros (Quantus: NaN).

    Args:
        radius: the ℓ∞ radius, in pixel units ([0, 1] images), in (0, 1].
        samples: draws per image, >= 1; seed: image ``i``'s draws come from its own generator.
    """
    if isinstance(radius, bool) or not 0.0 < float(radius) <= 1.0:
        raise InvalidParameterError(f"sensitivity radius must be in (0, 1], got {radius!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise InvalidParameterError(f"sensitivity samples must be an integer >= 1, got {samples!r}")
    images, labels = _inputs(model, images, labels)
    original = _maps_of(model, images, labels, explain, maps).flatten(1)
    norm = original.norm(dim=1)
    ratios = []
    for s in range(samples):
        delta = float(radius) * _per_image(tuple(images.shape), (int(seed), _SENSITIVITY_STREAM, s), "uniform")
        moved = (images.double() + delta).clamp(0, 1).float()
        change = (_maps_of(model, moved, labels, explain, None).flatten(1) - original).norm(dim=1)
        ratios.append(torch.where(change > 0, change / norm, 0.0))
    table = torch.stack(ratios, 1).numpy()
    return SensitivityScores(table.max(1), table.mean(1), table)


def max_sensitivity(model, images, labels, explain: Explain, **options) -> np.ndarray:
    """Max-sensitivity per image (N,) (see :func:`sensitivity` for the options)."""
    return sensitivity(model, images, labels, explain, **options).maximum


def avg_sensitivity(model, images, labels, explain: Explain, **options) -> np.ndarray:
    """Average-sensitivity per image (N,) (see :func:`sensitivity` for the options)."""
    return sensitivity(model, images, labels, explain, **options).average


# ----------------------------------------------------------------------------- many models and methods


@dataclass(frozen=True)
class ScoreSet:
    """One score of one model's explanation by one method, per image.

    Attributes:
        model, method: the model's name and the attribution method.
        metric: the metric that gave it (a key of :data:`EVALUATORS`); score: which of its scores
            (e.g. ``road_morf``).
        values: (N,) float64, NaN where undefined for an image.
        curve: (N, K) float64 behind the score (ROAD accuracy per fraction, the pixel-flipping curve,
            similarity per randomised layer), or None.
        axis: the K positions of ``curve`` (fractions, or layer names), or None.
    """

    model: str
    method: str
    metric: str
    score: str
    values: np.ndarray
    curve: np.ndarray | None = None
    axis: tuple | None = None

    @property
    def mean(self) -> float:
        """The mean over the images where the score is defined (NaN when none is)."""
        finite = self.values[np.isfinite(self.values)]
        return float(finite.mean()) if finite.size else float("nan")

    @property
    def std(self) -> float:
        """The standard deviation over the images where the score is defined."""
        finite = self.values[np.isfinite(self.values)]
        return float(finite.std()) if finite.size else float("nan")

    @property
    def count(self) -> int:
        """The number of images where the score is defined."""
        return int(np.isfinite(self.values).sum())


@dataclass
class _Case:
    """What the evaluators of one (model, method) share: its inputs, its maps and a memo."""

    model: nn.Module
    images: torch.Tensor
    labels: torch.Tensor
    explain: Explain
    maps: torch.Tensor
    masks: torch.Tensor | None
    options: MetricOptions
    should_stop: Callable[[], bool] | None
    memo: dict = field(default_factory=dict)


def _randomisation_scores(case: _Case) -> list[tuple]:
    found = randomisation(case.model, case.images, case.labels, case.explain, maps=case.maps,
                          seed=case.options.seed, should_stop=case.should_stop)
    return [(score, table[-1] if len(table) else np.full(len(case.labels), np.nan), table.T, found.layers)
            for score, table in (("randomisation_ssim", found.ssim), ("randomisation_spearman", found.spearman))]


def _road_scores(case: _Case) -> list[tuple]:
    options, out = case.options, []
    for order in ROAD_ORDERS:
        correct = road(case.model, case.images, case.labels, case.explain, maps=case.maps, fractions=options.fractions,
                       order=order, noise=options.road_noise, seed=options.seed, batch_size=options.batch_size)
        out.append((f"road_{order}", correct.mean(1), correct, tuple(options.fractions)))
    return out


def _flipping_scores(case: _Case) -> list[tuple]:
    curve = pixel_flipping(case.model, case.images, case.labels, case.explain, maps=case.maps,
                           steps=case.options.flip_steps, baseline=case.options.flip_baseline,
                           batch_size=case.options.batch_size)
    pixels = case.images.shape[-1] * case.images.shape[-2]
    axis = tuple(k / pixels for k in flip_schedule(pixels, case.options.flip_steps))
    return [("pixel_flipping_auc", flipping_auc(curve), curve, axis)]


def _pointing_scores(case: _Case) -> list[tuple]:
    return [("pointing_game", pointing_game(case.model, case.images, case.labels, case.explain, case.masks,
                                            maps=case.maps), None, None)]


def _mass_scores(case: _Case) -> list[tuple]:
    return [("relevance_mass", relevance_mass(case.model, case.images, case.labels, case.explain, case.masks,
                                              maps=case.maps), None, None)]


def _sensitivity_of(case: _Case) -> SensitivityScores:
    """The case's sensitivity, computed once for both of its scores."""
    if "sensitivity" not in case.memo:
        case.memo["sensitivity"] = sensitivity(case.model, case.images, case.labels, case.explain, maps=case.maps,
                                               radius=case.options.radius, samples=case.options.samples,
                                               seed=case.options.seed)
    return case.memo["sensitivity"]


def _max_sensitivity_scores(case: _Case) -> list[tuple]:
    found = _sensitivity_of(case)
    return [("max_sensitivity", found.maximum, found.ratios, None)]


def _avg_sensitivity_scores(case: _Case) -> list[tuple]:
    found = _sensitivity_of(case)
    return [("avg_sensitivity", found.average, found.ratios, None)]


#: metric name -> evaluator of one (model, method): ``[(score, values (N,), curve | None, axis | None)]``
EVALUATORS: dict[str, Callable[[_Case], list[tuple]]] = {
    "randomisation": _randomisation_scores,
    "road": _road_scores,
    "pixel_flipping": _flipping_scores,
    "pointing_game": _pointing_scores,
    "relevance_mass": _mass_scores,
    "max_sensitivity": _max_sensitivity_scores,
    "avg_sensitivity": _avg_sensitivity_scores,
}
#: the metrics that need foreground masks
LOCALISATION = LOCALISATION_METRICS
require_names(EVALUATORS, EXPLANATION_METRICS, "engine.attribution.metrics.EVALUATORS vs engine.catalogue.EXPLANATION_METRICS")


@dataclass(frozen=True)
class MetricsResult:
    """What :func:`explanation_metrics` measured.

    Attributes:
        scores: every :class:`ScoreSet`, models outer, then methods, then metrics in the order asked.
        errors: ``(model, method, message)`` for each method that refused a model (guided backprop
            on functional ReLUs ...): its scores are missing.
        stopped: True when ``should_stop`` ended the run early (``scores`` is then incomplete).
    """

    scores: list[ScoreSet]
    errors: list[tuple[str, str, str]]
    stopped: bool = False


def check_metrics(metrics: Sequence[str], masks) -> tuple[str, ...]:
    """``metrics`` as a tuple once each is known and the localisation ones have ``masks``."""
    chosen = tuple(metrics)
    unknown = [m for m in chosen if m not in EVALUATORS]
    if not chosen or unknown:
        raise InvalidParameterError(f"unknown or no explanation metric(s) {unknown or list(chosen)}; choose from "
                                    f"{', '.join(EVALUATORS)}")
    if masks is None and any(m in LOCALISATION for m in chosen):
        raise InvalidParameterError("the localisation metrics (pointing_game, relevance_mass) need foreground masks")
    return chosen


def explanation_metrics(models: Mapping[str, nn.Module], images, labels, methods: Mapping[str, dict],
                        metrics: Sequence[str], masks=None, options: MetricOptions = MetricOptions(),
                        reduce: str = "abs_sum", progress: Progress | None = None,
                        should_stop: Callable[[], bool] | None = None) -> MetricsResult:
    """Score every model's explanation by every method with every metric, on the same images.

    Args:
        models: name -> classifier on images in [0, 1] (modes restored, weights never changed).
        images, labels: (N, C, H, W) in [0, 1] and the true classes (each map explains the label).
        methods: attribution method -> its parameters (``{}``: defaults), in display order.
        metrics: keys of :data:`EVALUATORS`, in display order.
        masks: (N, 1, H, W) foreground masks (:func:`dataset_masks`), needed by :data:`LOCALISATION`.
        options: the metrics' parameters; reduce: the maps' channel reduction.
        progress: ``progress(done, total)`` after each map and each metric.
        should_stop: polled before each step; True ends early with ``stopped=True``.

    Returns:
        :class:`MetricsResult`.

    Raises:
        InvalidParameterError: no models or methods, an unknown method, parameter or metric, or a
            localisation metric without masks.
    """
    chosen = check_metrics(metrics, masks)
    if not models or not methods:
        raise InvalidParameterError("choose at least one model and one attribution method")
    explains = {method: explainer(method, params, reduce, options.batch_size) for method, params in methods.items()}
    total, done = len(models) * len(methods) * (1 + len(chosen)), 0
    scores, errors = [], []
    for name, model in models.items():
        x, y = _inputs(model, images, labels)
        region = None if masks is None else _masks_for(masks, x)
        for method, explain in explains.items():
            if should_stop is not None and should_stop():
                return MetricsResult(scores, errors, True)
            try:
                maps = _maps_of(model, x, y, explain, None)
            except UnsupportedModelError as exc:
                errors.append((name, method, str(exc)))
                done += 1 + len(chosen)
                _report(progress, done, total)
                continue
            done += 1
            _report(progress, done, total)
            case = _Case(model, x, y, explain, maps, region, options, should_stop)
            for metric in chosen:
                if should_stop is not None and should_stop():
                    return MetricsResult(scores, errors, True)
                scores += [ScoreSet(name, method, metric, score, np.asarray(values, dtype=np.float64),
                                    None if curve is None else np.asarray(curve, dtype=np.float64), axis)
                           for score, values, curve, axis in EVALUATORS[metric](case)]
                done += 1
                _report(progress, done, total)
    return MetricsResult(scores, errors, should_stop is not None and should_stop())


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
