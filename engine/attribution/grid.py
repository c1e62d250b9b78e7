"""A grid of attribution maps: several methods x several models on one image (the Saliency page's
and the CLI's one engine call)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from engine.attribution.methods import Attribution, UnsupportedModelError, attribute, get_method
from engine.attribution.render import to_heatmap
from engine.attribution.inputs import as_images, predict
from engine.errors import InvalidParameterError


@dataclass(frozen=True)
class GridCell:
    """One (model, method) cell.

    Attributes:
        model, method: the model's name and the method's registry name.
        attribution: the :class:`Attribution` of the one image (maps (1, C, H, W)); ``None`` when
            the method refused this model (see ``error``).
        heatmap: (H, W) float32 in [0, 1] (channel-reduced, percentile-normalised), or ``None``.
        target: the attributed class; predicted / probability: the model's top-1 class and its
            softmax probability on the image.
        error: the refusal message (e.g. guided backprop on functional ReLUs), else ``None``.
    """

    model: str
    method: str
    attribution: Attribution | None
    heatmap: np.ndarray | None
    target: int
    predicted: int
    probability: float
    error: str | None = None


def attribution_grid(
    models: Mapping[str, nn.Module],
    image,
    methods: Mapping[str, dict],
    target: int | None = None,
    reduce: str = "abs_sum",
    percentile: float = 99.0,
    progress: Callable[[int, int], None] | None = None,
) -> list[GridCell]:
    """Attribute one image with every method for every model.

    Args:
        models: name -> classifier (images in [0, 1]); modes are restored.
        image: (C, H, W) or (1, C, H, W) in [0, 1].
        methods: method name -> its parameters (``{}`` for the defaults), in display order.
        target: the class to attribute; ``None``: each model's own prediction.
        reduce, percentile: heatmap options (see :func:`to_heatmap`).
        progress: ``progress(done, total)`` after each cell.

    Returns:
        Cells in row-major order (methods outer, models inner). A method that refuses a model
        gives a cell with ``error`` set instead of raising; other bad input raises.

    Raises:
        InvalidParameterError: no models/methods, an unknown method or parameter, a bad image.
    """
    if not models or not methods:
        raise InvalidParameterError("choose at least one model and one attribution method")
    for name in methods:
        get_method(name)
    x = torch.as_tensor(image)
    x = as_images(x[None] if x.ndim == 3 else x)
    if x.shape[0] != 1:
        raise InvalidParameterError(f"attribution_grid takes one image, got a batch of {x.shape[0]}")
    predictions = {}
    for name, model in models.items():
        probs = torch.softmax(predict(model, x), dim=1)[0]  # (K,)
        predictions[name] = (int(probs.argmax()), probs)
    cells, total = [], len(models) * len(methods)
    for method, params in methods.items():
        for name, model in models.items():
            predicted, probs = predictions[name]
            chosen = predicted if target is None else int(target)
            cells.append(_cell(model, name, x, method, dict(params or {}), chosen, predicted, probs, reduce, percentile))
            if progress is not None:
                progress(len(cells), total)
    return cells


def _cell(model, name, x, method, params, target, predicted, probs, reduce, percentile) -> GridCell:
    """Compute one cell; a method's refusal of this model becomes the cell's ``error``."""
    if not 0 <= target < probs.shape[0]:
        raise InvalidParameterError(f"target class {target} is outside [0, {probs.shape[0] - 1}] for model {name}")
    try:
        result = attribute(model, x, target, method, **params)
    except UnsupportedModelError as exc:
        return GridCell(name, method, None, None, target, predicted, float(probs[predicted]), str(exc))
    heat = to_heatmap(result.maps, reduce, percentile)[0]
    return GridCell(name, method, result, heat, target, predicted, float(probs[predicted]))
