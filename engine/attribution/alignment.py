"""How object-shaped attributions are: the share of attribution mass inside the object mask
(exactly known on the synthetic ``shapes`` dataset), and the ε-vs-interpretability trade-off
across checkpoints trained at several ε (Kim & Seo 2019)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from engine.attribution.methods import attribute
from engine.attribution.render import REDUCTIONS, _as_array
from engine.models.state import model_device
from engine.errors import InvalidParameterError
from engine.evaluation import accuracy
from engine.selection import robust_threat, training_method

ALIGNMENT_DATASET = "shapes"
#: Datasets whose objects sit on an exactly black background: the object mask is "pixel > 0".
FOREGROUND_DATASETS = ("mnist", "fashion-mnist")
#: Datasets the alignment score and the ε-vs-interpretability view can use.
ALIGNMENT_DATASETS = (ALIGNMENT_DATASET, *FOREGROUND_DATASETS)


def alignment_score(heatmaps, masks) -> np.ndarray:
    """Share of attribution mass inside the object mask, per image.

    Args:
        heatmaps: non-negative maps (B, H, W) or (H, W) (e.g. ``to_heatmap`` output or an
            absolute channel sum), array or tensor.
        masks: object masks of the same shape, or (B, 1, H, W); truthy inside the object.

    Returns:
        float64 array (B,) (or a 0-d array for one map): sum(h * mask) / sum(h), in [0, 1];
        NaN for a map with no mass at all. A map spread uniformly scores the mask's area share
        (the chance level, :func:`mask_area`).

    Raises:
        InvalidParameterError: shapes differ, or a heatmap has negative or non-finite values.
    """
    h = _as_array(heatmaps).astype(np.float64)
    m = _as_array(masks).astype(bool)
    if m.ndim == h.ndim + 1 and m.shape[-3] == 1:
        m = m[..., 0, :, :] if m.ndim == 4 else m[0]
    if h.shape != m.shape or h.ndim not in (2, 3):
        raise InvalidParameterError(f"heatmaps {h.shape} and masks {m.shape} must both be (B, H, W) or (H, W)")
    if not np.isfinite(h).all() or (h < 0).any():
        raise InvalidParameterError("heatmaps must be finite and non-negative (reduce signed maps with to_heatmap)")
    total = h.sum(axis=(-2, -1))
    inside = (h * m).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)


def mask_area(masks) -> np.ndarray:
    """Fraction of pixels inside each mask, (B,): the alignment of a uniform map (chance level)."""
    m = _as_array(masks).astype(bool)
    return m.reshape(m.shape[0], -1).mean(axis=1) if m.ndim >= 3 else np.asarray(m.mean())


def training_epsilon(card) -> float | None:
    """The ε a model card's deployed model was trained to resist: 0 for standard training and for
    AdvProp (whose deployed main-BN model only saw clean images: a clean model, not a point on
    the ℓ∞ curve at its crafting ε), ``training.eps`` for adversarial training, ``None`` when the
    card does not say."""
    _, eps = robust_threat(card)
    return None if eps is None else float(eps)


@dataclass(frozen=True)
class TradeoffPoint:
    """One checkpoint on the ε-vs-interpretability plot.

    Attributes:
        name, path: the checkpoint.
        method: its training method; norm: its training threat model ("linf"/"l2"; "" at ε = 0).
        epsilon: training ε (0 for standard training and AdvProp, see :func:`training_epsilon`).
        clean_accuracy: top-1 accuracy on the evaluation images.
        alignment: mean share of attribution mass inside the object mask.
        alignment_std: its standard deviation over images.
        chance: mean mask area (the alignment of a uniform map).
        n: number of images.
    """

    name: str
    path: str
    method: str
    norm: str
    epsilon: float
    clean_accuracy: float
    alignment: float
    alignment_std: float
    chance: float
    n: int

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def with_training_epsilon(checkpoints: Sequence) -> list:
    """The checkpoints (anything with ``.card``) whose card records a training ε, in order."""
    return [c for c in checkpoints if training_epsilon(c.card) is not None]


def epsilon_tradeoff(
    checkpoints: Sequence,
    images,
    labels,
    masks,
    method: str = "saliency",
    method_params: dict | None = None,
    reduce: str = "abs_sum",
    batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[TradeoffPoint]:
    """Clean accuracy and gradient alignment of each checkpoint, sorted by training ε.

    Kim & Seo 2019: larger training ε gives more object-shaped (interpretable) gradients and lower
    clean accuracy. Attributions are taken for the true label.

    Args:
        checkpoints: ``LoadedCheckpoint``-like objects (``.model``, ``.card``, ``.path``) whose
            cards record a training ε (see :func:`training_epsilon`).
        images: (N, C, H, W) in [0, 1]; labels: (N,); masks: (N, 1, H, W) or (N, H, W) object
            masks (``engine.data.shapes.make_shapes`` gives them).
        method, method_params, reduce: attribution method, its parameters, channel reduction.
        progress: ``progress(done, total)`` after each checkpoint.
        should_stop: polled before each checkpoint; True ends early with the points measured so far.

    Returns:
        One :class:`TradeoffPoint` per checkpoint measured, sorted by ε (then name).

    Raises:
        InvalidParameterError: no checkpoints, or a card without a training ε.
    """
    if not checkpoints:
        raise InvalidParameterError("give at least one checkpoint for the ε-vs-interpretability view")
    if reduce not in REDUCTIONS:
        raise InvalidParameterError(f"unknown reduction {reduce!r}; choose from {', '.join(REDUCTIONS)}")
    images = torch.as_tensor(images)
    labels = torch.as_tensor(labels)
    chance = float(np.mean(mask_area(masks)))
    points = []
    for i, ckpt in enumerate(checkpoints):
        if should_stop is not None and should_stop():
            break
        points.append(_tradeoff_point(ckpt, images, labels, masks, method, method_params, reduce, batch_size, chance))
        if progress is not None:
            progress(i + 1, len(checkpoints))
    return sorted(points, key=lambda p: (p.epsilon, p.name))


def _tradeoff_point(ckpt, images, labels, masks, method, method_params, reduce, batch_size, chance) -> TradeoffPoint:
    """Measure one checkpoint: accuracy, and alignment of its attribution maps with the masks."""
    card = ckpt.card
    eps = training_epsilon(card)
    path = str(getattr(ckpt, "path", ""))
    if eps is None:
        raise InvalidParameterError(f"checkpoint {path or '?'} has no training ε in its model card")
    result = attribute(ckpt.model, images, labels, method, batch_size=batch_size, **(method_params or {}))
    scores = alignment_score(REDUCTIONS[reduce](result.maps), masks)
    acc = accuracy(ckpt.model, images, labels, batch_size=batch_size, device=model_device(ckpt.model)).accuracy
    norm, _ = robust_threat(card)
    name = card.name or (path.rsplit("/", 1)[-1].rsplit(".", 1)[0] if path else "model")
    return TradeoffPoint(
        str(name), path, training_method(card), str(norm or "") if eps else "",
        eps, acc, float(np.nanmean(scores)), float(np.nanstd(scores)), chance, int(images.shape[0]),
    )


class MaskedImages(NamedTuple):
    """Images (N, C, H, W) in [0, 1], labels (N,) and object masks (N, 1, H, W) bool."""

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor


def shapes_evaluation_set(n: int = 64, seed: int = 0, image_size: int = 32) -> MaskedImages:
    """The first ``n`` held-out (test split) ``shapes`` images with their exact object masks."""
    from engine.data import take
    from engine.data.shapes import load_shapes

    if int(n) < 1:
        raise InvalidParameterError(f"number of images must be >= 1, got {n}")
    dataset = load_shapes("test", n=int(n), seed=int(seed), image_size=int(image_size))
    images, labels = take(dataset, int(n))
    return MaskedImages(images, labels, dataset.masks[: int(n)])


def foreground_masks(images) -> torch.Tensor:
    """Object masks of images on a black background: (N, C, H, W) -> (N, 1, H, W), True where any
    channel is above 0 (MNIST digits, Fashion-MNIST items)."""
    images = torch.as_tensor(images)
    if images.ndim != 4:
        raise InvalidParameterError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    return images.amax(dim=1, keepdim=True) > 0


def evaluation_set(dataset: str, n: int = 64, seed: int = 0, image_size: int = 32) -> MaskedImages:
    """``n`` held-out images of ``dataset`` with object masks, for alignment scores.

    ``shapes`` gives its exact masks (generated with ``seed`` and ``image_size``); MNIST and
    Fashion-MNIST (objects on a black background) give their first ``n`` test images and the
    non-zero pixels as masks.

    Raises:
        InvalidParameterError: a dataset without object masks, or ``n`` < 1.
        DatasetNotFoundError (from the loader): the dataset's files are missing.
    """
    if dataset == ALIGNMENT_DATASET:
        return shapes_evaluation_set(n, seed=seed, image_size=image_size)
    if dataset not in FOREGROUND_DATASETS:
        raise InvalidParameterError(
            f"`{dataset}` has no object masks; the alignment score needs one of {', '.join(ALIGNMENT_DATASETS)}")
    if int(n) < 1:
        raise InvalidParameterError(f"number of images must be >= 1, got {n}")
    from engine.data import load_dataset, take

    images, labels = take(load_dataset(dataset, split="test"), int(n))
    return MaskedImages(images, labels, foreground_masks(images))
