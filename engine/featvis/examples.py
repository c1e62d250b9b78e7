"""Dataset examples: the held-out images that maximise a unit or a direction (Szegedy et al. 2013).

For a layer φ and images I, a unit i is scored by ⟨φ(x), eᵢ⟩ and a direction v by ⟨φ(x), v⟩,
where φ(x) is the channel vector of the layer — spatially averaged for convolutional layers (or
taken at one ``position``, a single neuron). One forward pass gives the (N, C) feature matrix;
every unit and direction is then a column or a projection of it.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from engine.errors import InvalidParameterError
from engine.featvis.inputs import as_image_tensor
from engine.models.state import frozen_eval, model_device
from engine.featvis.targets import FeatureTarget, direction_target, unit_target
from engine.models.hooks import record_activations
from engine.runtime import Progress



class TopK(NamedTuple):
    """The k best images for one target.

    Attributes:
        indices: int64 array (k,), indices into the image set, best first.
        scores: float32 array (k,), ⟨φ(x), w⟩ of those images, descending.
    """

    indices: np.ndarray
    scores: np.ndarray


def layer_features(
    model: torch.nn.Module,
    layer: str,
    images,
    position: tuple[int, int] | None = None,
    batch_size: int = 256,
    device=None,
    progress: Progress | None = None,
) -> np.ndarray:
    """The channel vector φ(x) of ``layer`` for every image, in one pass.

    Args:
        model: a classifier taking images in [0, 1] (it normalises inside). It runs in eval mode
            on its own device; its mode and ``requires_grad`` flags are left as found.
        layer: dotted layer name (``engine.models.list_layers``); output (N, C, H, W) or (N, C).
        images: (N, C, H, W) float tensor/array in [0, 1].
        position: ``(y, x)`` to read one neuron per channel instead of the spatial mean.
        batch_size: images per forward pass.
        device: must be ``None`` or the model's device (the model is never moved).
        progress: ``progress(done, total)`` after each batch.

    Returns:
        float32 array (N, C).
    """
    images = as_image_tensor(images)
    where = _check_device(model, device)
    if int(batch_size) < 1:
        raise InvalidParameterError(f"batch_size must be >= 1, got {batch_size}")
    chunks = []
    total = images.shape[0]
    with frozen_eval(model, freeze=False), torch.no_grad(), record_activations(model, layer) as rec:
        for start in range(0, total, int(batch_size)):
            model(images[start:start + int(batch_size)].to(where))
            chunks.append(_reduce(rec.outputs[layer], position).float().cpu())
            if progress is not None:
                progress(min(start + int(batch_size), total), total)
    return torch.cat(chunks).numpy()


def unit_scores(model, layer: str, images, batch_size: int = 256, device=None, progress=None) -> np.ndarray:
    """Per-channel spatial means of ``layer`` for every image: float32 (N, C), one pass.

    Column i is the unit-i score ⟨φ(x), eᵢ⟩ that :func:`top_k` ranks (Szegedy et al. 2013); reuse
    it for unit statistics such as label entropy among a unit's top-k images.
    """
    return layer_features(model, layer, images, None, batch_size, device, progress)


def target_scores(features: np.ndarray, target: FeatureTarget) -> np.ndarray:
    """⟨φ(x), w⟩ for every row of ``features`` (N, C): float32 (N,)."""
    return (np.asarray(features, dtype=np.float32) @ target.weights(features.shape[1])).astype(np.float32)


def rank(scores: np.ndarray, k: int) -> TopK:
    """The k largest scores (ties broken by the lower index), best first."""
    scores = np.asarray(scores, dtype=np.float32)
    if not 1 <= int(k) <= len(scores):
        raise InvalidParameterError(f"k must be between 1 and the number of images ({len(scores)}), got {k}")
    order = np.argsort(-scores, kind="stable")[: int(k)]
    return TopK(order.astype(np.int64), scores[order])


def top_k_many(
    model, layer: str, images, targets: Sequence[FeatureTarget], k: int,
    batch_size: int = 64, device=None, progress: Progress | None = None,
) -> list[TopK]:
    """:func:`top_k` for several targets with one streamed pass per distinct position.

    ``images`` may also be a Dataset (or an ``(images, labels)`` pair): see :func:`stream_top_k`.
    """
    if isinstance(images, np.ndarray):
        images = as_image_tensor(images)
    out: dict[int, TopK] = {}
    for position in dict.fromkeys(t.position for t in targets):
        group = [i for i, t in enumerate(targets) if t.position == position]
        found = stream_top_k(model, layer, images, [targets[i] for i in group], k, position=position,
                             batch_size=batch_size, device=device, progress=progress)
        out.update(zip(group, found))
    return [out[i] for i in range(len(targets))]


def stream_top_k(
    model, layer: str, data, targets: Sequence, k: int, position: tuple[int, int] | None = None,
    batch_size: int = 64, device=None, progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[TopK]:
    """The top-k images per target in one pass, keeping only the k best per target as it goes.

    Memory is one batch of images and activations plus (targets × k) scores, whatever the number
    of images: nothing of size N is held (the (N, C) feature matrix of :func:`layer_features`
    is never formed). Ties are broken by the lower index, as in :func:`rank`.

    Args:
        model: classifier taking images in [0, 1] (eval mode on its own device, mode restored).
        layer: dotted layer name with output (N, C, H, W) or (N, C).
        data: images (N, C, H, W), an ``(images, labels)`` pair, or a Dataset of (image, label)
            read batch by batch.
        targets: :class:`FeatureTarget` values, or callables ``dim -> FeatureTarget`` for targets
            that need the layer's channel count (random directions); all at ``position``.
        k: images per target (1 <= k <= N).
        position: ``(y, x)`` to score one neuron per channel (else the spatial mean).
        batch_size: images per forward pass.
        device: ``None`` or the model's device; progress: ``progress(done, total)``.
        should_stop: polled before each batch; True raises ``InterruptedError``.

    Returns:
        One :class:`TopK` per target (indices into ``data``, best first).
    """
    from engine.data import dataset_size, slice_batch

    where = _check_device(model, device)
    total = dataset_size(data)
    if int(batch_size) < 1:
        raise InvalidParameterError(f"batch_size must be >= 1, got {batch_size}")
    if not 1 <= int(k) <= total:
        raise InvalidParameterError(f"k must be between 1 and the number of images ({total}), got {k}")
    best_scores = best_index = weights = None
    with frozen_eval(model, freeze=False), torch.no_grad(), record_activations(model, layer) as rec:
        for start in range(0, total, int(batch_size)):
            if should_stop is not None and should_stop():
                raise InterruptedError("top-k search stopped")
            stop = min(start + int(batch_size), total)
            images, _ = slice_batch(data, start, stop)
            model(as_image_tensor(images).to(where))
            feats = _reduce(rec.outputs.pop(layer), position).float().cpu()      # (B, C)
            if weights is None:
                resolved = [t(feats.shape[1]) if callable(t) else t for t in targets]
                weights = torch.as_tensor(np.stack([t.weights(feats.shape[1]) for t in resolved], axis=1))  # (C, T)
            scores = feats @ weights                                              # (B, T)
            index = torch.arange(start, stop).expand(len(resolved), -1)          # (T, B)
            cand_scores = scores.T if best_scores is None else torch.cat([best_scores, scores.T], dim=1)
            cand_index = index if best_index is None else torch.cat([best_index, index], dim=1)
            order = torch.sort(-cand_scores, dim=1, stable=True).indices[:, : int(k)]
            best_scores, best_index = cand_scores.gather(1, order), cand_index.gather(1, order)
            if progress is not None:
                progress(stop, total)
    return [TopK(best_index[i].numpy().astype(np.int64), best_scores[i].numpy().astype(np.float32))
            for i in range(len(resolved))]


def top_k(
    model,
    layer: str,
    images,
    k: int,
    unit: int | None = None,
    direction=None,
    position: tuple[int, int] | None = None,
    batch_size: int = 256,
    device=None,
    progress: Progress | None = None,
) -> TopK:
    """The top-k images of ``images`` for a unit eᵢ or a direction v of ``layer``.

    Szegedy et al. 2013: images maximising ⟨φ(x), eᵢ⟩ look no more coherent than those maximising
    ⟨φ(x), v⟩ for a random v (draw one with :func:`random_direction`, same unit norm as eᵢ).

    Args:
        model: classifier taking (N, C, H, W) images in [0, 1]; left in the mode it was found.
        layer: dotted layer name.
        images: (N, C, H, W) float tensor/array in [0, 1] (held-out images).
        k: how many images (1 <= k <= N).
        unit: channel index i (exactly one of ``unit`` / ``direction``).
        direction: (C,) vector v.
        position: ``(y, x)``: score a single neuron (or the direction at that location) instead
            of the spatial mean of each channel.
        batch_size, device, progress: see :func:`layer_features`.

    Returns:
        :class:`TopK` (indices best first, their scores).
    """
    if (unit is None) == (direction is None):
        raise InvalidParameterError("give exactly one of unit or direction")
    features = layer_features(model, layer, images, position, batch_size, device, progress)
    if unit is not None:
        target = unit_target(unit, position)
    else:
        target = direction_target(features.shape[1], vector=direction, position=position)
    return rank(target_scores(features, target), k)


def _reduce(output: torch.Tensor, position) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) by spatial mean or at ``position``; transformer tokens (B, T, C) ->
    (B, C) by the mean over tokens; (B, C) passes through."""
    if not isinstance(output, torch.Tensor) or output.ndim not in (2, 3, 4):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
        raise InvalidParameterError(f"layer output must be (N, C, H, W), (N, tokens, C) or (N, C), got {shape}")
    if output.ndim == 3:
        if position is not None:
            raise InvalidParameterError("a position needs a layer with spatial output (N, C, H, W)")
        return output.mean(dim=1)
    if output.ndim == 2:
        if position is not None:
            raise InvalidParameterError("a position needs a layer with spatial output (N, C, H, W)")
        return output
    if position is None:
        return output.mean(dim=(2, 3))
    y, x = position
    if y >= output.shape[2] or x >= output.shape[3]:
        raise InvalidParameterError(
            f"position {position} outside the layer's {output.shape[2]}x{output.shape[3]} grid"
        )
    return output[:, :, y, x]


def _check_device(model, device) -> torch.device:
    where = model_device(model)
    if device is not None and torch.device(device) != where and str(device) != "auto":
        requested = torch.device(device)
        if requested.type != where.type or (requested.index is not None and requested != where):
            raise InvalidParameterError(
                f"model is on {where} but device {device} was requested; load the model there"
            )
    return where
