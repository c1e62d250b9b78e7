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

    Forward passes per image: CKA one per model (+ about 3 per attack step on the crafting model
    for adversarial inputs); OOD one per model per cell (clean, distortion × severity, the shapes
    sets and shape bias); top-k one.
    """
    per = [seconds_per_image(m.model) for m in loaded]
    total_per_image = sum(per)
    kind = request.kind
    if kind == "cka":
        passes = 1.0
        if request.inputs == "adv":
            steps = request.steps or 10
            crafted = per[0] if request.craft_on == "a" else per[-1]
            passes += 3 * steps * crafted / max(total_per_image, 1e-12)
        images = request.n
    elif kind == "ood":
        from engine.data.distortions import DISTORTIONS

        cells = 1 + len(request.distortions or DISTORTIONS) * len(request.severities)
        cells += 4 if request.dataset == "shapes" else 0
        passes, images = float(cells), request.n
    else:
        passes, images = 1.0, request.n
    seconds = total_per_image * passes * images
    how = (f"measured {total_per_image * 1000:.1f} ms per image for {len(per)} model(s) on "
           f"{_device(loaded)} × {passes:.0f} pass(es) × {images} images")
    return CostEstimate(seconds, total_per_image, passes, how)


def _device(loaded) -> str:
    from engine.models.state import model_device

    return str(model_device(loaded[0].model)) if loaded else "?"
