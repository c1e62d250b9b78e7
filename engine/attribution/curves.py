"""Keep/remove curves: accuracy as the top-attributed pixels are kept (the rest replaced) or
removed (replaced), for one or several models.

Without retraining this is the "no-retrain" variant of KAR/ROAR (Hooker et al. 2019, used by
Kim & Seo 2019): the same model is evaluated on the perturbed images. Retraining plugs in through
the ``retrain`` callable: for each fraction it receives a :class:`RetrainRequest` (including a
``perturb`` function that masks any batch exactly as the evaluation images are masked) and
returns the model to evaluate, e.g. one trained from scratch on perturbed training images
(:func:`engine.attribution.retrain.engine_retrainer` does that through ``engine.training``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.attribution.methods import attribute
from engine.attribution.render import REDUCTIONS
from engine.attribution.inputs import as_images, as_labels, predict
from engine.models.state import model_device
from engine.errors import InvalidParameterError
from engine.evaluation import accuracy
from engine.runtime import Progress

MODES = ("keep", "remove")
DEFAULT_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)



def mean_fill(images: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """Each image's mean colour everywhere: (B, C, H, W) -> (B, C, H, W)."""
    return images.mean(dim=(2, 3), keepdim=True).expand_as(images).contiguous()


def blur_fill(images: torch.Tensor, sigma: float | None = None) -> torch.Tensor:
    """A Gaussian-blurred copy (separable, replicate padding); ``sigma`` in pixels, default
    max(H, W) / 8."""
    sigma = float(sigma) if sigma is not None else max(images.shape[-2:]) / 8.0
    if sigma <= 0:
        raise InvalidParameterError(f"blur sigma must be > 0 pixels, got {sigma}")
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()  # (K,)
    c = images.shape[1]
    out = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(c, 1, 1, -1).contiguous(), groups=c)
    out = F.conv2d(out, kernel.view(1, 1, -1, 1).expand(c, 1, -1, 1).contiguous(), groups=c)
    return out


#: How removed pixels are filled: name -> fill(images (B,C,H,W), sigma) -> (B,C,H,W).
REPLACEMENTS: dict[str, Callable[[torch.Tensor, float | None], torch.Tensor]] = {
    "mean": mean_fill,
    "blur": blur_fill,
}


@dataclass(frozen=True)
class RetrainRequest:
    """What a ``retrain`` callable gets for one point of a curve (KAR when mode is "keep", ROAR
    when "remove").

    Attributes:
        name: the model's name in the comparison (e.g. "A").
        model: the original model, whose attributions rank the pixels.
        mode: "keep" or "remove".
        fraction: share of pixels kept/removed, in [0, 1].
        replacement: the fill used ("mean" or "blur").
        perturb: ``perturb(images (N,C,H,W), labels (N,)) -> images`` masking any batch (e.g. the
            training set) with the original model's attributions, exactly like the curve does.
    """

    name: str
    model: nn.Module
    mode: str
    fraction: float
    replacement: str
    perturb: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


#: ``retrain(request) -> model`` to evaluate at that point (trained on perturbed data).
Retrain = Callable[[RetrainRequest], nn.Module]


class RetrainStopped(Exception):
    """Raised by a ``retrain`` callable when a stop was requested mid-retraining: the curve ends
    there (``stopped=True``) instead of evaluating a half-trained model."""


@dataclass(frozen=True)
class CurveResult:
    """One keep/remove curve.

    Attributes:
        name: the model's name in the comparison.
        mode: "keep" (accuracy when only the top fraction is kept) or "remove".
        fractions: the fractions of pixels kept/removed, ascending, in [0, 1].
        accuracy: top-1 accuracy at each fraction (same length; shorter if stopped).
        clean_accuracy: accuracy on the unperturbed images.
        method, params: the attribution method ranking the pixels and its parameters.
        replacement: "mean" or "blur".
        retrained: whether the accuracy comes from models returned by ``retrain``.
        n: number of images.
        stopped: True when ``should_stop`` ended the curve early.
    """

    name: str
    mode: str
    fractions: tuple[float, ...]
    accuracy: tuple[float, ...]
    clean_accuracy: float
    method: str
    params: dict = field(default_factory=dict)
    replacement: str = "mean"
    retrained: bool = False
    n: int = 0
    stopped: bool = False

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return asdict(self)


def pixel_order(heatmaps: torch.Tensor) -> torch.Tensor:
    """Pixel indices sorted by decreasing attribution: (B, H, W) -> (B, H*W) long (stable ties)."""
    flat = heatmaps.reshape(heatmaps.shape[0], -1)
    return torch.sort(flat, dim=1, descending=True, stable=True).indices


def top_mask(order: torch.Tensor, fraction: float, shape: tuple[int, int]) -> torch.Tensor:
    """Boolean mask (B, 1, H, W) that is True on the top ``round(fraction * H*W)`` pixels."""
    k = int(round(fraction * shape[0] * shape[1]))
    mask = torch.zeros(order.shape, dtype=torch.bool)
    mask.scatter_(1, order[:, :k], True)
    return mask.view(order.shape[0], 1, *shape)


def perturb_images(images: torch.Tensor, fill: torch.Tensor, top: torch.Tensor, mode: str) -> torch.Tensor:
    """Keep the ``top`` pixels and fill the rest ("keep"), or fill the ``top`` pixels ("remove")."""
    return torch.where(top, images, fill) if mode == "keep" else torch.where(top, fill, images)


def _check_curve_args(mode: str, fractions: Sequence[float], replacement: str) -> tuple[float, ...]:
    """Validate the curve options; returns the sorted, de-duplicated fractions."""
    if mode not in MODES:
        raise InvalidParameterError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if replacement not in REPLACEMENTS:
        raise InvalidParameterError(f"replacement must be one of {', '.join(REPLACEMENTS)}, got {replacement!r}")
    values = sorted({float(f) for f in fractions})
    if not values or values[0] < 0 or values[-1] > 1:
        raise InvalidParameterError(f"fractions must be a non-empty list of numbers in [0, 1], got {list(fractions)}")
    return tuple(values)


class _Ranker:
    """Ranks the pixels of batches by one model's attribution map (channel-reduced)."""

    def __init__(self, model, method, method_params, reduce, batch_size):
        if reduce not in REDUCTIONS:
            raise InvalidParameterError(f"unknown reduction {reduce!r}; choose from {', '.join(REDUCTIONS)}")
        self.model, self.method, self.params = model, method, dict(method_params or {})
        self.reduce, self.batch_size = reduce, batch_size

    def order(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """(pixel order (B, H*W), parameters used), attributing each image's ``labels`` class."""
        result = attribute(self.model, images, labels, self.method, batch_size=self.batch_size, **self.params)
        heat = torch.from_numpy(REDUCTIONS[self.reduce](result.maps))  # (B, H, W)
        return pixel_order(heat), result.params


def _perturber(ranker: _Ranker, mode, fraction, replacement, sigma):
    """A ``perturb(images, labels)`` closure for retraining, masking like the curve does."""

    def perturb(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = as_images(images)
        order, _ = ranker.order(images, labels)
        fill = REPLACEMENTS[replacement](images, sigma)
        return perturb_images(images, fill, top_mask(order, fraction, images.shape[-2:]), mode)

    return perturb


def keep_remove_curves(
    models: Mapping[str, nn.Module],
    images,
    labels,
    mode: str = "keep",
    method: str = "saliency",
    method_params: dict | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    replacement: str = "mean",
    blur_sigma: float | None = None,
    reduce: str = "abs_sum",
    batch_size: int = 64,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    retrain: Retrain | None = None,
) -> dict[str, CurveResult]:
    """Accuracy vs fraction of top-attributed pixels kept or removed, for each model.

    Each model ranks pixels (spatial positions, all channels together) by its own attribution
    map for the true label, reduced over channels with ``reduce``. At fraction f the top
    ``round(f*H*W)`` pixels are kept and the others filled ("keep"), or those pixels are filled
    ("remove"). So keep@1 and remove@0 equal the clean accuracy, and keep@0 equals remove@1 (the
    fully filled image). A steep "remove" drop / quick "keep" rise means the attribution found
    the evidence the model uses (Hooker et al. 2019; Kim & Seo 2019).

    Args:
        models: name -> classifier taking images in [0, 1]; modes are restored afterwards.
        images: (N, C, H, W) float in [0, 1]; labels: (N,) true classes.
        mode: "keep" or "remove".
        method, method_params: attribution method (a key of ``METHODS``) and its parameters.
        fractions: fractions of pixels in [0, 1] (sorted, duplicates dropped).
        replacement: "mean" (each image's mean colour) or "blur" (Gaussian, ``blur_sigma`` px).
        reduce: channel reduction of the maps ("abs_sum" or "max").
        batch_size: images per forward/backward pass.
        progress: ``progress(done, total)`` after the attribution and after each fraction.
        should_stop: polled before each step; True ends early with ``stopped=True``.
        retrain: optional ``retrain(RetrainRequest) -> model`` (KAR/ROAR): the returned model is
            evaluated at that fraction instead of the original one; it may raise
            :class:`RetrainStopped` to end the curve early. ``None``: no retraining. The engine's
            implementation is :func:`engine.attribution.retrain.engine_retrainer`.

    Returns:
        name -> :class:`CurveResult`, in the order of ``models``.
    """
    fractions = _check_curve_args(mode, fractions, replacement)
    if not models:
        raise InvalidParameterError("give at least one model for a keep/remove curve")
    images = as_images(images)
    steps_per_model = 1 + len(fractions)
    total, done, results = steps_per_model * len(models), 0, {}
    retrain_stopped = False  # a RetrainStopped ends every remaining curve too
    fill = REPLACEMENTS[replacement](images, blur_sigma)  # (N, C, H, W)
    for name, model in models.items():
        y = as_labels(labels, images.shape[0], predict(model, images[:1]).shape[1])
        ranker = _Ranker(model, method, method_params, reduce, batch_size)
        stopped = retrain_stopped or (should_stop is not None and should_stop())
        accs, used = [], dict(method_params or {})
        if not stopped:
            order, used = ranker.order(images, y)
            done += 1
            _report(progress, done, total)
        for f in fractions:
            stopped = stopped or (should_stop is not None and should_stop())
            if stopped:
                break
            x = perturb_images(images, fill, top_mask(order, f, images.shape[-2:]), mode)
            try:
                evaluated = model if retrain is None else retrain(
                    RetrainRequest(name, model, mode, f, replacement, _perturber(ranker, mode, f, replacement, blur_sigma))
                )
            except RetrainStopped:
                stopped = retrain_stopped = True
                break
            accs.append(accuracy(evaluated, x, y, batch_size=batch_size, device=model_device(evaluated)).accuracy)
            done += 1
            _report(progress, done, total)
        clean = accuracy(model, images, y, batch_size=batch_size, device=model_device(model)).accuracy
        results[name] = CurveResult(
            name, mode, fractions, tuple(accs), clean, method, used, replacement,
            retrain is not None, images.shape[0], stopped,
        )
    return results


def keep_remove_curve(model: nn.Module, images, labels, mode: str = "keep", name: str = "model", **options) -> CurveResult:
    """One model's keep/remove curve; see :func:`keep_remove_curves` for the options."""
    return keep_remove_curves({name: model}, images, labels, mode, **options)[name]


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)
