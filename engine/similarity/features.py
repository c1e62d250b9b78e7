"""Activation capture for CKA: batches of images -> one (n, d) feature matrix per chosen layer.

Hooks come from :func:`engine.models.hooks.record_activations` (always removed, also on error);
models are put in eval mode for the forward pass and restored afterwards.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

from engine.data.registry import dataset_size, slice_batch
from engine.errors import InvalidParameterError
from engine.models.state import model_device
from engine.models.hooks import record_activations

#: A per-batch input transform (attack, distortion): (images (B,C,H,W) in [0,1], labels (B,))
#: -> images of the same shape in [0, 1].
Transform = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _flatten(output: torch.Tensor) -> torch.Tensor:
    """(B, ...) -> (B, prod(...)): every activation is one feature."""
    return output.reshape(output.shape[0], -1)


def _average_pool(output: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) by averaging over space; other shapes are flattened."""
    if output.ndim > 2:
        return output.reshape(output.shape[0], output.shape[1], -1).mean(dim=2)
    return _flatten(output)


#: Pooling registry: name -> function(layer output (B, ...)) -> features (B, d).
POOLINGS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "flatten": _flatten,
    "avg": _average_pool,
}


def to_features(output, pooling: str = "flatten") -> torch.Tensor:
    """Turn one layer's output into a (B, d) feature matrix.

    Args:
        output: the layer output (B, ...) — a tensor, or a tuple/list whose first item is one.
        pooling: "flatten" (every activation a feature) or "avg" (global average pool of spatial
            maps: (B, C, H, W) -> (B, C)).
    """
    if pooling not in POOLINGS:
        raise InvalidParameterError(
            f"unknown pooling {pooling!r}; choose one of: {', '.join(POOLINGS)}"
        )
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise InvalidParameterError(f"layer output is not a tensor ({type(output).__name__})")
    return POOLINGS[pooling](output)


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put the models in eval mode inside the block; restore each module's ``training`` flag."""
    saved = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for module, training in saved:
            module.training = training


def batch_bounds(total: int, batch_size: int, min_last: int = 4) -> list[tuple[int, int]]:
    """Split ``range(total)`` into [start, stop) batches of ``batch_size``.

    A last batch smaller than ``min_last`` images is merged into the one before it (the unbiased
    HSIC estimator needs more than 3 images per batch).
    """
    if batch_size < 1:
        raise InvalidParameterError(f"batch size must be >= 1, got {batch_size}")
    bounds = [(s, min(s + batch_size, total)) for s in range(0, total, batch_size)]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < min_last:
        last = bounds.pop()
        bounds[-1] = (bounds[-1][0], last[1])
    return bounds


def prepare_inputs(
    images: torch.Tensor,
    labels: torch.Tensor | None,
    transform: Transform | None,
    device: torch.device,
) -> torch.Tensor:
    """Move a batch to ``device`` as float32 and apply ``transform`` (attack/distortion) if any."""
    images = images.to(device=device, dtype=torch.float32)
    if transform is None:
        return images
    if labels is None:
        raise InvalidParameterError("an input transform (e.g. an attack) needs the labels too")
    out = transform(images, labels.to(device))
    if not isinstance(out, torch.Tensor) or out.shape != images.shape:
        raise InvalidParameterError(
            "the input transform must return images of the same shape "
            f"{tuple(images.shape)}, got {getattr(out, 'shape', type(out).__name__)}"
        )
    return out.detach().to(device=device, dtype=torch.float32)


def _checked(name: str, feats: torch.Tensor) -> torch.Tensor:
    """Return ``feats`` or raise if any activation of layer ``name`` is NaN or infinite."""
    if not torch.isfinite(feats).all():
        raise InvalidParameterError(
            f"layer {name!r} produced non-finite activations (NaN or inf); "
            "check the model weights and inputs"
        )
    return feats


def forward_features(
    models_layers: Sequence[tuple[nn.Module, Sequence[str]]],
    images: torch.Tensor,
    pooling: str = "flatten",
) -> list[torch.Tensor]:
    """One forward pass per model on ``images``; return the features of every requested layer.

    Args:
        models_layers: [(model, layer names), ...]; each model runs once on ``images``.
        images: (B, C, H, W) in [0, 1], already on the models' device.
        pooling: see :func:`to_features`.

    Returns:
        A list of (B, d_l) tensors in the order the (model, layer) pairs were given.

    Raises:
        InvalidParameterError: a layer did not run during the forward pass, or produced
            non-finite activations.
    """
    features: list[torch.Tensor] = []
    for model, layers in models_layers:
        with torch.no_grad(), record_activations(model, layers) as recorder:
            model(images)
        for name in layers:
            if name not in recorder.outputs:
                raise InvalidParameterError(f"layer {name!r} did not run in the forward pass")
            features.append(_checked(name, to_features(recorder.outputs.pop(name), pooling)))
    return features


def capture_activations(
    model: nn.Module,
    data,
    layers: Sequence[str],
    n: int | None = None,
    batch_size: int = 200,
    pooling: str = "flatten",
    transform: Transform | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``model`` over ``data`` and keep every chosen layer's features for all images.

    Holds N × d values per layer: use it for full-batch CKA on small N; for large N use
    :func:`engine.similarity.compare_models`, whose memory does not grow with N.

    Args:
        model: classifier taking images in [0, 1].
        data: (images (N,C,H,W), labels (N,)) pair, an images tensor, or a Dataset of
            (image, label).
        layers: dotted layer names (``engine.models.list_layers``).
        n: use the first n images (default: all).
        batch_size: images per forward pass.
        pooling: "flatten" or "avg" (see :func:`to_features`).
        transform: optional ``transform(images, labels) -> images`` (attack, distortion).

    Returns:
        ``{layer name: (N, d) float32 CPU tensor}``, in the order of ``layers``.
    """
    layers = list(dict.fromkeys(layers))
    total = dataset_size(data) if n is None else min(int(n), dataset_size(data))
    device = model_device(model)
    chunks: list[list[torch.Tensor]] = []
    with eval_mode(model):
        for start, stop in batch_bounds(total, batch_size, min_last=1):
            images, labels = slice_batch(data, start, stop)
            x = prepare_inputs(images, labels, transform, device)
            chunks.append([f.cpu() for f in forward_features([(model, layers)], x, pooling)])
    return {name: torch.cat([c[i] for c in chunks]) for i, name in enumerate(layers)}
