"""Feature visualisation as an analysis: :class:`~engine.analysis.requests.FeatVisRequest` -> stored
lucent images.

``run`` renders every target of the request in one batch with ``engine.featvis.visualise`` (the
call, parameterisation and seed ``python -m engine featvis`` and the Features page make), so the
stored images are those of a direct call with the same request. The stored result keeps the
images as float16 ``(T, H, W, C)`` in [0, 1] and each target's objective at every step (float32
``(steps, T)``); ``decode`` gives back the ``engine.featvis.VisResult`` the page shows. A stopped
render raises :class:`~engine.analysis.base.AnalysisCancelled` and stores nothing.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite
from engine.analysis.fields import (
    MAX_VIS_SIDE,
    MAX_VIS_STEPS,
    check_bool,
    check_int,
    check_layer_targets,
    check_positive,
    check_vis_pixels,
)
from engine.analysis.registry import register
from engine.analysis.schema import Array, Schema
from engine.errors import InvalidParameterError


@register(title="Feature visualisations (lucent)", page="features")
@dataclass(frozen=True)
class FeatVisRequest(Request):
    """Feature visualisation: lucent's optimised image of each unit / random direction of one layer
    (``engine.featvis.visualise``), every target with the same parameterisation and seed, so units
    and directions compare (Szegedy et al. 2013; Olah et al. 2017).

    Attributes:
        model: the model; layer: dotted layer name.
        targets: ``(("unit", i), ("direction", seed), ...)`` as in the ``featvis_topk`` request, at most
            :data:`MAX_TARGETS`; position: ``(y, x)``: one neuron per channel instead of the
            spatial mean.
        steps: Adam steps on the image parameters (1 to :data:`MAX_VIS_STEPS`); lr: its learning
            rate, in (0, 10].
        seed: seeds the starting image and the random transforms.
        size: ``(height, width)`` of the images (None: the model's input size), at most
            :data:`MAX_VIS_SIDE` per side and :data:`MAX_VIS_PIXELS` pixels over all targets.
        fft: Fourier (True) or pixel parameterisation; decorrelate: lucent's colour
            decorrelation (RGB models only); transforms: lucent's pad/jitter/scale/rotate
            robustness transforms; sd: standard deviation of the starting parameters, in (0, 1].
    """

    kind = "featvis"
    MODEL_FIELDS = ("model",)

    model: ModelRef
    layer: str
    targets: tuple[tuple[str, int], ...]
    position: tuple[int, int] | None = None
    steps: int = 128
    lr: float = 0.05
    seed: int = 0
    size: tuple[int, int] | None = None
    fft: bool = True
    decorrelate: bool = True
    transforms: bool = True
    sd: float = 0.01

    def _check(self) -> None:
        check_layer_targets(self.layer, self.targets, self.position)
        check_int("steps", self.steps, 1, MAX_VIS_STEPS)
        check_positive("lr", self.lr, 10.0)
        check_int("seed", self.seed, 0, 2**31 - 1)
        if self.size is not None:
            if not (isinstance(self.size, tuple) and len(self.size) == 2):
                raise InvalidParameterError(f"size must be (height, width), got {self.size!r}")
            for side in self.size:
                check_int("image side", side, 1, MAX_VIS_SIDE)
            check_vis_pixels(len(self.targets), *self.size)
        for name in ("fft", "decorrelate", "transforms"):
            check_bool(name, getattr(self, name), optional=False)
        check_positive("sd", self.sd, 1.0)

    def config(self) -> dict:
        """The ``engine.featvis.VisConfig`` fields (steps, lr, seed, fft, decorrelate, transforms, sd)."""
        return {"steps": self.steps, "lr": self.lr, "seed": self.seed, "fft": self.fft,
                "decorrelate": self.decorrelate, "transforms": self.transforms, "sd": self.sd}

    def describe(self) -> str:
        return (f"{super().describe()} · {self.layer} · lucent, {len(self.targets)} target(s) · "
                f"{self.steps} steps, seed {self.seed}")


def run(request, ctx) -> Payload:
    """Render the request's targets (see the module docstring)."""
    from engine import featvis
    from engine.analysis.kinds.topk import feature_targets

    loaded = ctx.load(request.model)
    targets, dim = feature_targets(request, loaded.model)
    config = featvis.VisConfig(**request.config())
    found = featvis.visualise(loaded.model, request.layer, targets, config, input_shape=_image_shape(request, loaded),
                              progress=ctx.report, should_stop=ctx.stopped)
    if found.stopped:
        raise AnalysisCancelled("feature visualisation stopped before it finished; nothing was stored")
    meta = {"labels": [t.label for t in targets], "keys": [t.key for t in targets], "dim": dim,
            "config": config.as_dict(), "device": ctx.device}
    return Payload({"images": found.images.astype(np.float16), "trajectories": found.trajectories.astype(np.float32)},
                   finite(meta))


def _image_shape(request, loaded) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the images: the model's channels at the request's size (None: the model's
    own input shape)."""
    if request.size is None:
        return None
    return (int(loaded.card.input_shape[0]), *request.size)


def check(request) -> None:
    """Before a job is queued: the images of all targets stay within ``MAX_VIS_PIXELS`` (at the
    model's input size, read from its card, when the request names no size). Torch-free."""
    size = request.size or tuple(request.model.card().input_shape)[1:]
    if len(size) == 2:
        check_vis_pixels(len(request.targets), int(size[0]), int(size[1]))


def decode(result, **_options):
    """The ``engine.featvis.VisResult`` of the stored images: float32 ``(T, H, W, C)`` in [0, 1]
    and the objective trajectories ``(steps, T)``."""
    from engine.featvis import VisResult

    trajectories = np.asarray(result.arrays["trajectories"], dtype=np.float32)
    return VisResult(np.asarray(result.arrays["images"], dtype=np.float32), trajectories, len(trajectories), False)


def report(result) -> dict:
    """The CLI's JSON of a visualisation result (torch-free): per target its first and final
    objective and its image's shape ``(H, W, C)``."""
    request, meta = result.request, result.meta
    images, trajectories = np.asarray(result.arrays["images"]), np.asarray(result.arrays["trajectories"])
    return finite({
        "checkpoint": request.model.path, "sha256": request.model.sha256, "layer": request.layer,
        "position": request.position, "config": meta["config"], "size": list(images.shape[1:3]),
        "steps_done": len(trajectories),
        "targets": [{"label": label, "key": key, "objective_first": float(trajectories[0, i]),
                     "objective_final": float(trajectories[-1, i]), "image_shape": list(images.shape[1:])}
                    for i, (label, key) in enumerate(zip(meta["labels"], meta["keys"]))],
        "seconds": round(result.seconds, 3),
    })


def rows(result) -> list[dict]:
    """One row per target and step (CSV): the objective's trajectory."""
    trajectories = np.asarray(result.arrays["trajectories"], dtype=float)
    return [{"target": label, "key": key, "step": step + 1, "objective": float(trajectories[step, i])}
            for i, (label, key) in enumerate(zip(result.meta["labels"], result.meta["keys"]))
            for step in range(len(trajectories))]


#: seconds of lucent's own work per optimisation step besides the model (the parameterisation's
#: inverse FFT, the jitter/scale/rotate transforms): a fixed part per step and a part per
#: megapixel of each target's image (fitted with ``bench/estimates.py`` on 28-px MNIST and 224-px
#: ImageNet images)
STEP_OVERHEAD_S = 0.005
STEP_OVERHEAD_S_PER_MPIXEL = 0.15


def passes(request, per, loaded) -> tuple[float, int]:
    """Cost model per target: a forward and a backward pass per optimisation step, scaled by the
    image's pixels over the model's input size, plus lucent's per-step image work (in units of the
    model's forward time)."""
    from engine.analysis.cost import GRADIENT_STEP

    shape = tuple(getattr(loaded[0].model, "input_shape", None) or (3, 32, 32))
    height, width = request.size or shape[1:]
    scale = (height * width) / (shape[1] * shape[2])
    per_target_s = STEP_OVERHEAD_S / len(request.targets) + STEP_OVERHEAD_S_PER_MPIXEL * height * width * shape[0] / 1e6
    overhead = per_target_s / max(sum(per), 1e-9)
    return request.steps * (GRADIENT_STEP * scale + overhead), len(request.targets)


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"labels": [str], "keys": [str], "dim": int, "config": dict, "device": str},
    arrays={"images": Array("f", 4), "trajectories": Array("f", 2)},
    rule=lambda meta, arrays: None if len(arrays["images"]) == len(meta["labels"]) == len(meta["keys"])
    == np.shape(arrays["trajectories"])[1] else "the images, targets and trajectories differ in number",
)
