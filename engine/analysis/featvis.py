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

import numpy as np

from engine.analysis.base import AnalysisCancelled, Payload, card_json, finite
from engine.analysis.requests import check_vis_pixels


def run(request, ctx) -> Payload:
    """Render the request's targets (see the module docstring)."""
    from engine import featvis
    from engine.analysis.topk import feature_targets

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
    size = request.size or tuple(card_json(request.model.path).get("input_shape") or ())[1:]
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
