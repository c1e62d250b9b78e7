"""Measured cost estimates: time a probe batch on the actual models and device, then scale.

The dashboard runs an analysis in the background by default when :func:`estimate` says it takes
longer than :data:`BACKGROUND_ABOVE_S`. The estimate is measured, not looked up: each model runs
once on a small random batch of its input shape on its own device (after one warm-up pass), and
the seconds per image are multiplied by the forward passes the request needs.
"""
from __future__ import annotations

import time
from typing import NamedTuple

#: analyses estimated above this many seconds default to "Run in background" on the pages
BACKGROUND_ABOVE_S = 20.0
#: images in the timed probe batch
PROBE_IMAGES = 4


class CostEstimate(NamedTuple):
    """Seconds an analysis is expected to take, and how that was measured."""

    seconds: float
    per_image_s: float
    passes: float
    how: str

    @property
    def background(self) -> bool:
        """Whether the pages run it in the background by default."""
        return self.seconds > BACKGROUND_ABOVE_S

    def describe(self) -> str:
        return f"≈ {self.seconds:.0f} s ({self.how})"


def seconds_per_image(model, images: int = PROBE_IMAGES) -> float:
    """Measured forward seconds per image of ``model`` on its device (eval mode, restored)."""
    import torch

    from engine.models.state import frozen_eval, model_device

    shape = tuple(getattr(model, "input_shape", None) or (3, 32, 32))
    device = model_device(model)
    x = torch.rand((images, *shape), device=device)
    with frozen_eval(model, freeze=False), torch.no_grad():
        model(x[:1])                                     # warm-up (allocations, kernels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / images


def estimate(request, loaded) -> CostEstimate:
    """The measured cost of ``request`` with its models already ``loaded`` (in request order).

    Each model's forward seconds per image is measured on a probe batch
    (:func:`seconds_per_image`); the kind's cost model (``passes(request, per)`` in its module,
    ``engine.analysis.registry``) turns them into forward-equivalent passes per image (in units of
    all the models' forward passes together) and the number of images.
    """
    from engine.analysis.registry import get_analysis

    per = [seconds_per_image(m.model) for m in loaded]
    total_per_image = sum(per)
    passes, images = get_analysis(request.kind).passes(request, per, loaded)
    seconds = total_per_image * passes * images
    how = (f"measured {total_per_image * 1000:.1f} ms per image for {len(per)} model(s) on "
           f"{_device(loaded)} × {passes:.0f} pass(es) × {images} images")
    return CostEstimate(seconds, total_per_image, passes, how)


def share(per: list[float], index: int) -> float:
    """Model ``index``'s share of all the models' forward time (``per``: seconds per image each):
    converts passes of one model into units of all the models' passes."""
    return per[index] / max(sum(per), 1e-12)


def method_passes(method: str, params: dict) -> float:
    """Forward-equivalent passes of one attribution map of ``method`` with ``params`` (defaults
    filled in): a forward and a backward pass per gradient it takes (SmoothGrad's noisy copies,
    Integrated Gradients' steps)."""
    from engine.attribution.methods import resolve_params

    full = resolve_params(method, params)
    return GRADIENT_STEP * int(full.get("n_samples", full.get("steps", 1)))


#: forward-equivalent passes of one gradient step (a forward and a backward pass)
GRADIENT_STEP = 3.0


def attack_passes(name: str, params: dict) -> float:
    """Forward-equivalent passes per image of attack ``name`` with ``params`` (unset: the attack's
    defaults, ``engine.attacks.default_params``): gradient steps × restarts or targets × searches;
    Square's queries; AutoAttack the sum of its members'."""
    from engine.attacks import AUTOATTACK_VERSIONS, default_params

    given = {k: v for k, v in params.items() if v is not None}
    if name == "autoattack":
        version = given.get("version", "standard")
        members = given.get("attacks") or AUTOATTACK_VERSIONS.get(version, ())
        shared = {k: v for k, v in given.items() if k in ("steps", "queries", "n_target_classes")}
        shared["restarts"] = 5 if version == "plus" else 1
        return sum(attack_passes(m, shared) for m in members) * (20 if version == "rand" else 1)
    full = {**default_params(name), **given}
    if name == "square":
        return float(full["queries"]) * full.get("restarts", 1)
    steps = full.get("steps") or full.get("max_iter") or 1
    repeats = full["n_target_classes"] if "n_target_classes" in full else full.get("restarts", 1)
    return GRADIENT_STEP * steps * repeats * full.get("search_steps", 1)


def _device(loaded) -> str:
    from engine.models.state import model_device

    return str(model_device(loaded[0].model)) if loaded else "?"
