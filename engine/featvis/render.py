"""Optimisation-based feature visualisation through lucent, with hooks and device under control.

Units (lucent's ``channel``/``neuron`` objectives) and directions (the projection ⟨φ(x), v⟩) are
optimised with one identical parameterisation: a Fourier-space image (Olah et al. 2017), colour
decorrelation for RGB models, and lucent's pad/jitter/scale/rotate transforms scaled to the
model's input size. That is the comparison of Szegedy et al. 2013 done with optimisation instead
of dataset examples.

lucent's own ``render_vis`` hooks every module and never unhooks, and keeps a module-level device
picked at import. Here the render loop is ours: the layer is hooked with
``engine.models.hooks.record_activations`` (always removed), lucent's module device is switched to
the model's device only while an image is built and transformed (under a lock, then restored), and
the model's mode and ``requires_grad`` flags are restored afterwards.
"""
from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

with warnings.catch_warnings():
    # lucent imports kornia, whose import scripts functions with ``torch.jit.script``; torch now
    # warns that this is deprecated, on every CLI call and page load. Only that warning, raised
    # from torch's jit module during this import, is silenced.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning,
                            module=r"torch\.jit\._script")
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=DeprecationWarning,
                            module=r"torch\.jit\._script")
    from lucent.optvis import objectives as lucent_objectives
    from lucent.optvis import transform as lucent_transform
    from lucent.optvis.param import color as lucent_color
    from lucent.optvis.param import spatial as lucent_spatial

from engine.errors import InvalidParameterError
from engine.models.state import frozen_eval, model_device
from engine.featvis.targets import FeatureTarget
from engine.featvis.config import MAX_VIS_PIXELS, MAX_VIS_SIDE, MAX_VIS_TARGETS, VisConfig, VisResult
from engine.models.hooks import record_activations

#: lucent's device globals are process-wide; one visualisation at a time may switch them.
_LUCENT_LOCK = threading.RLock()


@lucent_objectives.wrap_objective()
def projection(layer, vector, position=None, batch=None):
    """lucent objective: maximise ⟨φ(x), v⟩ (spatial mean, or at ``position=(y, x)``).

    With v = eᵢ this equals lucent's ``channel(layer, i)`` (or ``neuron``) exactly; unlike lucent's
    ``direction`` objective (cosine similarity) it rewards magnitude the way a unit objective does.
    """

    @lucent_objectives.handle_batch(batch)
    def inner(T):
        acts = _at_position(T(layer), position)
        weights = vector.view(1, -1, *([1] * (acts.ndim - 2)))
        return -(acts * weights).sum(dim=1).mean()

    return inner


def objective_for(layer: str, target: FeatureTarget, batch: int | None = None):
    """The lucent objective of one target (``channel``, ``neuron`` or :func:`projection`).

    The direction's vector must already be a tensor on the model's device (see
    :func:`visualise`); ``batch`` picks one image of a batched render.
    """
    if target.kind == "channel":
        return lucent_objectives.channel(layer, target.channel, batch=batch)
    if target.kind == "neuron":
        y, x = target.position
        return lucent_objectives.neuron(layer, target.channel, x=x, y=y, batch=batch)
    return projection(layer, target.vector, target.position, batch=batch)


def visualise(
    model: torch.nn.Module,
    layer: str,
    targets: Sequence[FeatureTarget],
    config: VisConfig = VisConfig(),
    input_shape: tuple[int, int, int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> VisResult:
    """Optimise one image per target to maximise it, all with the same parameterisation.

    Args:
        model: classifier taking (B, C, H, W) images in [0, 1] (no extra normalisation is applied);
            run on its own device in eval mode with frozen parameters, restored afterwards.
        layer: dotted layer name (see ``engine.models.list_layers``).
        targets: units and/or directions of that layer (:mod:`engine.featvis.targets`).
        config: :class:`VisConfig` (steps, lr, seed, parameterisation).
        input_shape: (C, H, W) of the images; default ``model.input_shape``. Any channel count
            works (1-channel 28x28 models get a 1-channel image).
        progress: ``progress(done_steps, total_steps)``, called about 50 times.
        should_stop: polled every step; returning ``True`` ends the run with the current images.

    Returns:
        :class:`VisResult` with images (B, H, W, C) in [0, 1] and per-step objective values.

    References:
        Olah, Mordvintsev & Schubert 2017, "Feature Visualization"; Szegedy et al. 2013.
    """
    config = config.validate()
    targets = list(targets)
    if not targets:
        raise InvalidParameterError("visualise needs at least one target")
    shape = _input_shape(model, input_shape)
    check_batch_size(len(targets), shape)
    device = model_device(model)
    with _lucent_device(device), _seeded(config.seed, device):
        params, image_f = image_param((len(targets), *shape), config, device)
        transform_f = _transforms(shape[1:], config)
        with frozen_eval(model), record_activations(model, layer, detach=False) as rec:
            dim = _layer_channels(model, rec, layer, image_f)
            objectives = [objective_for(layer, _on_device(t, dim, device), i) for i, t in enumerate(targets)]
            return _optimise(model, rec, objectives, params, image_f, transform_f, config, progress, should_stop)


def image_param(shape: tuple[int, int, int, int], config: VisConfig, device: torch.device):
    """lucent's fft (or pixel) image of ``shape`` (B, C, H, W), valid in [0, 1].

    Every batch element starts from the same seeded parameters, so a target's result does not
    depend on which other targets share the batch. RGB images are colour-decorrelated (lucent's
    matrix, applied on ``device``); other channel counts only go through the sigmoid.

    Returns:
        (params, image_f): the leaf tensors to optimise and a function giving (B, C, H, W) images.
    """
    batch, channels, height, width = shape
    make = lucent_spatial.fft_image if config.fft else lucent_spatial.pixel_image
    params, raw_f = make([batch, channels, height, width], sd=config.sd)
    generator = torch.Generator().manual_seed(int(config.seed))
    start = torch.randn(params[0].shape[1:], generator=generator) * config.sd  # one element's init
    with torch.no_grad():
        params[0][:] = start.to(params[0].device)
    decorrelate = config.decorrelate and channels == 3
    matrix = torch.tensor(lucent_color.color_correlation_normalized.T, device=device)

    def image_f() -> torch.Tensor:
        image = raw_f()  # (B, C, H, W), unbounded
        if decorrelate:
            image = torch.einsum("bchw,cd->bdhw", image, matrix)
        return torch.sigmoid(image)

    return params, image_f


def _optimise(model, rec, objectives, params, image_f, transform_f, config, progress, should_stop):
    """The render loop: Adam on the image parameters, one value per target per step."""
    optimizer = torch.optim.Adam(params, lr=config.lr)
    hook = lambda name: rec.outputs[name]  # noqa: E731 - lucent's "T" accessor
    values, stopped = [], False
    every = max(1, config.steps // 50)
    for step in range(1, config.steps + 1):
        if should_stop is not None and should_stop():
            stopped = True
            break
        optimizer.zero_grad()
        model(transform_f(image_f()))
        losses = torch.stack([objective(hook) for objective in objectives])  # (B,)
        losses.sum().backward()
        optimizer.step()
        values.append((-losses.detach()).float().cpu().numpy())
        if progress is not None and (step % every == 0 or step == config.steps):
            progress(step, config.steps)
    with torch.no_grad():
        images = image_f().detach().float().cpu().permute(0, 2, 3, 1).numpy()
    trajectories = np.stack(values) if values else np.zeros((0, len(objectives)), np.float32)
    return VisResult(images.astype(np.float32), trajectories.astype(np.float32), len(values), stopped)


def _transforms(size: tuple[int, int], config: VisConfig):
    """lucent's standard transforms scaled from 224 px to ``size``, then fit back to ``size``."""
    height, width = size
    steps = []
    if config.transforms:
        side = min(height, width)
        steps = [
            lucent_transform.pad(max(1, round(side * 12 / 224)), mode="constant", constant_value=0.5),
            lucent_transform.jitter(max(2, round(side * 8 / 224))),
            lucent_transform.random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
            lucent_transform.random_rotate(list(range(-10, 11)) + 5 * [0]),
            lucent_transform.jitter(max(2, round(side * 4 / 224))),
        ]
    return lucent_transform.compose(steps + [_fit(height, width)])


def _fit(height: int, width: int):
    """Centre-crop (or pad with grey) an image batch to (height, width)."""

    def inner(image: torch.Tensor) -> torch.Tensor:
        dh, dw = image.shape[2] - height, image.shape[3] - width
        if dh < 0 or dw < 0:
            ph, pw = max(0, -dh), max(0, -dw)
            image = F.pad(image, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], value=0.5)
            dh, dw = image.shape[2] - height, image.shape[3] - width
        top, left = dh // 2, dw // 2
        return image[:, :, top:top + height, left:left + width]

    return inner


def _at_position(acts: torch.Tensor, position) -> torch.Tensor:
    if position is None:
        return acts
    if acts.ndim != 4:
        raise InvalidParameterError("a position needs a layer with spatial output (N, C, H, W)")
    y, x = position
    return acts[:, :, y:y + 1, x:x + 1]


def _on_device(target: FeatureTarget, dim: int, device: torch.device) -> FeatureTarget:
    """Check a target against the layer's channel count; directions get a tensor on ``device``."""
    weights = target.weights(dim)  # raises InvalidParameterError on a bad unit or length
    if target.kind != "direction":
        return target
    return target._replace(vector=torch.as_tensor(weights, device=device))


def _layer_channels(model, rec, layer: str, image_f) -> int:
    """Run one probe pass and return the layer's channel count (dimension 1 of its output)."""
    with torch.no_grad():
        model(image_f()[:1])
    output = rec.outputs.get(layer)
    if not isinstance(output, torch.Tensor) or output.ndim not in (2, 4):
        raise InvalidParameterError(f"layer {layer!r} must output (N, C, H, W) or (N, C) to be visualised")
    rec.clear()
    return int(output.shape[1])


def _input_shape(model, input_shape) -> tuple[int, int, int]:
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None or len(shape) != 3 or min(int(s) for s in shape) < 1:
        raise InvalidParameterError(
            f"need the model's input shape (C, H, W); got {shape!r} (pass input_shape=...)"
        )
    shape = tuple(int(s) for s in shape)
    if max(shape[1:]) > MAX_VIS_SIDE or shape[0] > 4:
        raise InvalidParameterError(
            f"feature visualisation renders images of at most {MAX_VIS_SIDE}×{MAX_VIS_SIDE} pixels "
            f"with 1-4 channels; got (C, H, W) = {shape}"
        )
    return shape


def check_batch_size(n_targets: int, shape: tuple[int, int, int]) -> None:
    """Refuse more targets than :data:`MAX_VIS_TARGETS`, or a batch over :data:`MAX_VIS_PIXELS`."""
    if n_targets > MAX_VIS_TARGETS:
        raise InvalidParameterError(f"at most {MAX_VIS_TARGETS} targets per visualisation, got {n_targets}")
    pixels = n_targets * shape[1] * shape[2]
    if pixels > MAX_VIS_PIXELS:
        raise InvalidParameterError(
            f"{n_targets} targets of {shape[1]}×{shape[2]} pixels are {pixels:,} pixels in one batch; "
            f"the limit is {MAX_VIS_PIXELS:,}: visualise fewer targets at a time"
        )


@contextmanager
def _lucent_device(device: torch.device) -> Iterator[None]:
    """Point lucent's module-level devices at ``device`` (under a lock), restoring them after."""
    with _LUCENT_LOCK:
        saved = lucent_spatial.device, lucent_transform.device
        lucent_spatial.device = lucent_transform.device = device
        try:
            yield
        finally:
            lucent_spatial.device, lucent_transform.device = saved


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and numpy (lucent's transforms draw from numpy) and restore both RNGs after."""
    numpy_state = np.random.get_state()
    devices = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(int(seed))
            np.random.seed(int(seed) % 2**32)
            yield
    finally:
        np.random.set_state(numpy_state)
