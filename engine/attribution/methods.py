"""Gradient attribution methods (captum adapters) returning image-space arrays.

Every method maps a batch of images (B, C, H, W) in [0, 1] and target classes to an attribution
array of the same shape. Methods are registered in the plain dict :data:`METHODS`, whose
parameter specs also fill the dashboard's widgets and the CLI's options; its names are also
``engine.catalogue.ATTRIBUTION_METHODS`` (checked when this module is imported).

References: Simonyan et al. 2013 (vanilla gradient); Shrikumar et al. 2016 (input x gradient);
Smilkov et al. 2017 (SmoothGrad); Sundararajan et al. 2017 (Integrated Gradients);
Springenberg et al. 2014 (guided backprop); Kim & Seo 2019 (robust gradients are interpretable).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np
import torch
from captum.attr import GuidedBackprop, InputXGradient, IntegratedGradients, NoiseTunnel, Saliency
from torch import nn
from torch.overrides import TorchFunctionMode

from engine.attribution.inputs import as_images, as_labels, predict
from engine.models.state import frozen_eval, model_device
from engine.catalogue import ATTRIBUTION_METHODS, require_names
from engine.errors import InvalidParameterError


class UnsupportedModelError(InvalidParameterError):
    """A method cannot be applied to this model (e.g. guided backprop on functional ReLUs)."""


@dataclass(frozen=True)
class ParamSpec:
    """One method parameter: its default (whose type is the parameter's type), range or choices."""

    name: str
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class MethodSpec:
    """A registered attribution method.

    Attributes:
        name: registry key.
        label: human-readable name.
        description: one line on what the map shows.
        params: the method's parameters (plus :data:`COMMON_PARAMS`, added by :func:`method_params`).
        run: ``run(forward_module, images, targets, params, start) -> (maps, delta | None)`` on one
            chunk whose first image has index ``start`` in the whole batch (seeds per-image noise).
    """

    name: str
    label: str
    description: str
    params: tuple[ParamSpec, ...]
    run: Callable[[nn.Module, torch.Tensor, torch.Tensor, dict, int], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True)
class Attribution:
    """The result of :func:`attribute`.

    Attributes:
        maps: float32 array (B, C, H, W), same shape as the input images.
        method: the registry name of the method used.
        params: every parameter actually used (defaults filled in).
        delta: Integrated Gradients' convergence delta per image, (B,) float32
            (sum of attributions minus (f(x) - f(baseline))); ``None`` for other methods.
        targets: the attributed class per image, (B,) int64.
    """

    maps: np.ndarray
    method: str
    params: dict = field(default_factory=dict)
    delta: np.ndarray | None = None
    targets: np.ndarray | None = None


#: Parameters shared by every method.
COMMON_PARAMS = (
    ParamSpec(
        "output", "logit",
        "what is differentiated: the target's logit, or its log-probability (= -loss, Kim & Seo's ∇ₓL up to sign)",
        choices=("logit", "log_prob"),
    ),
)


class _LogProb(nn.Module):
    """Wraps a classifier so that its output is log-softmax (the negative cross-entropy loss)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(self.model(x), dim=1)


def _saliency(forward, images, targets, p, start):
    return Saliency(forward).attribute(images, target=targets, abs=p["abs"]), None


def _input_x_gradient(forward, images, targets, p, start):
    return InputXGradient(forward).attribute(images, target=targets), None


def _smoothgrad(forward, images, targets, p, start):
    tunnel = NoiseTunnel(Saliency(forward))
    maps = []
    for i in range(images.shape[0]):  # per-image seeds: the noise does not depend on chunking
        with _seeded(_image_seed(p["seed"], start + i), images.device):
            maps.append(tunnel.attribute(
                images[i : i + 1], nt_type="smoothgrad", nt_samples=p["n_samples"],
                nt_samples_batch_size=min(p["n_samples"], 128), stdevs=float(p["stdev"]),
                target=targets[i : i + 1], abs=p["abs"],
            ))
    return torch.cat(maps), None


def _image_seed(seed: int, index: int) -> int:
    """A well-mixed seed for image ``index`` of a batch attributed with noise ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def _integrated_gradients(forward, images, targets, p, start):
    baseline = make_baseline(images, p["baseline"])
    maps, delta = IntegratedGradients(forward).attribute(
        images, baselines=baseline, target=targets, n_steps=p["steps"],
        internal_batch_size=max(2 * images.shape[0], 128), return_convergence_delta=True,
    )
    return maps, delta


def _guided_backprop(forward, images, targets, p, start):
    check_module_relus(forward, images[:1].detach())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        return GuidedBackprop(forward).attribute(images, target=targets), None


#: Registered attribution methods, name -> spec.
METHODS: dict[str, MethodSpec] = {
    "saliency": MethodSpec(
        "saliency", "Vanilla gradient",
        "gradient of the class score with respect to the pixels (Simonyan et al. 2013)",
        (ParamSpec("abs", True, "absolute value of the gradient (False keeps its sign)"),),
        _saliency,
    ),
    "input_x_gradient": MethodSpec(
        "input_x_gradient", "Input × gradient",
        "gradient times the input: a global, first-order contribution per pixel",
        (), _input_x_gradient,
    ),
    "smoothgrad": MethodSpec(
        "smoothgrad", "SmoothGrad",
        "gradient averaged over noisy copies of the image (Smilkov et al. 2017)",
        (
            ParamSpec("n_samples", 16, "number of noisy copies", low=1, high=512),
            ParamSpec("stdev", 0.15, "noise standard deviation in pixel units ([0, 1] images)", low=0.0, high=1.0),
            ParamSpec("abs", True, "average absolute gradients (False keeps signs)"),
            ParamSpec("seed", 0, "noise seed", low=0, high=2**31 - 1),
        ),
        _smoothgrad,
    ),
    "integrated_gradients": MethodSpec(
        "integrated_gradients", "Integrated Gradients",
        "path integral of gradients from a baseline image (Sundararajan et al. 2017)",
        (
            ParamSpec("baseline", "black", "black image or the image's mean colour", choices=("black", "mean")),
            ParamSpec("steps", 32, "integration steps (Gauss-Legendre)", low=2, high=1024),
        ),
        _integrated_gradients,
    ),
    "guided_backprop": MethodSpec(
        "guided_backprop", "Guided backprop",
        "gradient with negative signals zeroed at every ReLU (Springenberg et al. 2014); needs nn.ReLU modules",
        (), _guided_backprop,
    ),
}


require_names(METHODS, ATTRIBUTION_METHODS, "engine.attribution.METHODS vs engine.catalogue.ATTRIBUTION_METHODS")


def method_params(method: str) -> tuple[ParamSpec, ...]:
    """All parameters of ``method`` (its own, then :data:`COMMON_PARAMS`)."""
    return get_method(method).params + COMMON_PARAMS


def get_method(method: str) -> MethodSpec:
    """Return the spec of ``method``; unknown names raise ``InvalidParameterError`` listing the names."""
    if method not in METHODS:
        raise InvalidParameterError(f"unknown attribution method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method]


def resolve_params(method: str, params: dict) -> dict:
    """Fill defaults into ``params`` and check every value's type and range.

    Raises:
        InvalidParameterError: an unknown parameter name, a wrong type, or a value out of range.
    """
    specs = {s.name: s for s in method_params(method)}
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise InvalidParameterError(
            f"unknown parameter(s) {', '.join(unknown)} for {method!r}; allowed: {', '.join(specs) or 'none'}"
        )
    return {name: _check_param(method, spec, params.get(name, spec.default)) for name, spec in specs.items()}


def _check_param(method: str, spec: ParamSpec, value):
    """Coerce one value to its spec's type and check range/choices."""
    where = f"{method}: parameter {spec.name!r}"
    kind = type(spec.default)
    if kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            raise InvalidParameterError(f"{where} must be true or false, got {value!r}")
        return bool(value)
    if kind is str:
        if value not in spec.choices:
            raise InvalidParameterError(f"{where} must be one of {', '.join(spec.choices)}, got {value!r}")
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InvalidParameterError(f"{where} must be a number, got {value!r}")
    if kind is int and float(value) != int(value):
        raise InvalidParameterError(f"{where} must be a whole number, got {value!r}")
    value = kind(value)
    if not np.isfinite(value) or (spec.low is not None and value < spec.low) or (
        spec.high is not None and value > spec.high
    ):
        raise InvalidParameterError(f"{where} must be in [{spec.low}, {spec.high}], got {value!r}")
    return value


def attribute(
    model: nn.Module,
    images,
    targets=None,
    method: str = "saliency",
    *,
    batch_size: int = 32,
    **params,
) -> Attribution:
    """Attribute the model's class score to the input pixels with one registered method.

    Args:
        model: a classifier taking images in [0, 1] (it normalises inside) and returning logits.
            Its train/eval mode and its parameters' ``requires_grad`` are restored on return;
            attribution itself runs in eval mode.
        images: tensor or array (B, C, H, W), float in [0, 1]; moved to the model's device.
        targets: class per image: ``None`` (the model's prediction), one int, or B ints.
        method: a key of :data:`METHODS`.
        batch_size: images attributed per chunk (memory bound; results do not depend on it).
        **params: method parameters (see :func:`method_params`); defaults are filled in.

    Returns:
        :class:`Attribution` with ``maps`` (B, C, H, W) float32 on the CPU, the parameters used,
        Integrated Gradients' convergence ``delta`` (B,) and the attributed ``targets`` (B,).

    Raises:
        InvalidParameterError: bad images, targets, method or parameters; guided backprop on a
            model whose ReLUs are functional calls rather than ``nn.ReLU`` modules.
    """
    spec = get_method(method)
    used = resolve_params(method, params)
    if int(batch_size) < 1:
        raise InvalidParameterError(f"batch_size must be >= 1, got {batch_size!r}")
    images = as_images(images)
    logits = predict(model, images if targets is None else images[:1])  # (B or 1, K)
    chosen = logits.argmax(1) if targets is None else targets
    targets = as_labels(chosen, images.shape[0], logits.shape[1], name="targets")
    device = model_device(model)
    forward = _LogProb(model) if used["output"] == "log_prob" else model
    maps, deltas = [], []
    with frozen_eval(model):
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device).clone().requires_grad_(True)  # (b, C, H, W)
            t = targets[start : start + batch_size].to(device)
            chunk_maps, chunk_delta = spec.run(forward, x, t, used, start)
            maps.append(chunk_maps.detach().float().cpu())
            deltas.append(None if chunk_delta is None else chunk_delta.detach().float().cpu().reshape(-1))
    delta = None if deltas[0] is None else torch.cat(deltas).numpy()
    return Attribution(torch.cat(maps).numpy(), method, used, delta, targets.numpy())


def make_baseline(images: torch.Tensor, kind: str) -> torch.Tensor:
    """An Integrated Gradients baseline (B, C, H, W): ``"black"`` zeros or ``"mean"`` per-image colour."""
    if kind == "black":
        return torch.zeros_like(images)
    if kind == "mean":
        return images.mean(dim=(2, 3), keepdim=True).expand_as(images).contiguous()
    raise InvalidParameterError(f"baseline must be 'black' or 'mean', got {kind!r}")


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Fork the RNG (CPU and ``device``'s GPU) and seed it: reproducible noise, caller's state untouched."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _ReluCounter(TorchFunctionMode):
    """Counts every relu call (functional, tensor method or inside an ``nn.ReLU`` module)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("relu", "relu_"):
            self.calls += 1
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def count_relus(model: nn.Module, images: torch.Tensor) -> tuple[int, int]:
    """Run one forward pass and count ReLU calls: ``(module calls, functional calls)``.

    Module calls are forward passes of ``nn.ReLU`` submodules; functional calls are
    ``F.relu``/``torch.relu``/``Tensor.relu`` made directly in some ``forward``, which captum's
    guided backprop cannot see. Hooks are removed on return.
    """
    module_calls = [0]

    def hook(*_):
        module_calls[0] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with frozen_eval(model), _ReluCounter() as counter:
            model(images)
    finally:
        for handle in handles:
            handle.remove()
    return module_calls[0], counter.calls - module_calls[0]


def check_module_relus(model: nn.Module, images: torch.Tensor) -> None:
    """Refuse models on which guided backprop would silently equal a plain gradient or be wrong.

    Raises:
        UnsupportedModelError: (an ``InvalidParameterError``) the model calls ReLU functionally (``F.relu`` in a forward),
            has no ``nn.ReLU`` module at all, runs one ReLU module more than once (shared modules), or runs other
            non-linearities (GELU, SiLU/Swish, sigmoid gates, attention softmax; see
            ``engine.models.guided_backprop_problem``).
    """
    module_calls, functional_calls = count_relus(model, images)
    if functional_calls:
        raise UnsupportedModelError(
            f"guided backprop needs ReLUs as nn.ReLU modules, but this model makes {functional_calls} functional "
            "relu call(s) (F.relu / torch.relu / Tensor.relu) that captum cannot hook; guided backprop would be "
            "silently wrong. Use another method, or rewrite the model with nn.ReLU modules."
        )
    if module_calls == 0:
        raise UnsupportedModelError(
            "guided backprop needs nn.ReLU modules, and this model runs none; it would equal the plain gradient. "
            "Use 'saliency' instead."
        )
    from engine.models.activations import guided_backprop_problem

    problem = guided_backprop_problem(model, images)
    if problem is not None:  # shared ReLU modules, GELU/SiLU/attention ... (torchvision:/timm: nets)
        raise UnsupportedModelError(f"guided backprop would be silently wrong on this model: {problem}. "
                                    "Use another method (saliency, integrated_gradients, smoothgrad).")
