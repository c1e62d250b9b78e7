"""Measured cost estimates: time a probe batch on the actual models and device, scale by the
kind's cost model, and correct by what the same kind actually took before.

The dashboard runs an analysis in the background by default when :func:`estimate` says it takes
longer than :data:`BACKGROUND_ABOVE_S`. The estimate is measured, not looked up:

1. each model runs on a random batch of its input shape on its own device (after a warm-up pass):
   :data:`PROBE_IMAGES` images, then :data:`PROBE_BATCH` when that is cheap, since analyses run
   batched and a small batch's time per image overstates a batched pass's (cached per model and
   device for the process);
2. the kind's cost model (``passes(request, per, loaded)`` in its module) gives forward-equivalent
   passes per image and the number of images;
3. every computed result records its actual seconds beside this raw figure
   (``<results>/timings.jsonl``, :func:`record_actual`), and the estimate is multiplied by the
   median ratio actual ÷ raw of the last :data:`HISTORY` runs of the kind on that device type
   (:func:`correction`), so fixed costs and batching effects the cost model misses are learnt.
"""
from __future__ import annotations

import json
import statistics
import time
import weakref
from pathlib import Path
from typing import NamedTuple

#: analyses estimated above this many seconds default to "Run in background" on the pages
BACKGROUND_ABOVE_S = 20.0
#: images in the first timed probe batch, and in the second one when the first took under
#: :data:`PROBE_CHEAP_S` (the analyses' own batches are larger)
PROBE_IMAGES = 4
PROBE_BATCH = 32
PROBE_CHEAP_S = 0.02
#: recorded runs per kind and device type the correction is the median of
HISTORY = 20
#: the correction factor's bounds (a wild outlier never makes an estimate absurd)
CORRECTION_RANGE = (1 / 50, 50.0)
TIMINGS_FILE = "timings.jsonl"

_probed: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


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


def seconds_per_image(model) -> float:
    """Measured forward seconds per image of ``model`` on its device, batched (eval mode,
    restored; cached per model and device for the process)."""
    from engine.models.state import model_device

    device = str(model_device(model))
    known = _probed.setdefault(model, {})
    if device not in known:
        per = _timed(model, PROBE_IMAGES)
        if per * PROBE_IMAGES < PROBE_CHEAP_S:
            per = _timed(model, PROBE_BATCH)
        known[device] = per
    return known[device]


def _timed(model, images: int) -> float:
    """Seconds per image of one forward pass of ``images`` random images (after a warm-up)."""
    import torch

    from engine.models.state import frozen_eval, model_device

    shape = tuple(getattr(model, "input_shape", None) or (3, 32, 32))
    device = model_device(model)
    x = torch.rand((images, *shape), device=device)
    with frozen_eval(model, freeze=False), torch.no_grad():
        model(x)                                         # warm-up (allocations, kernels)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / images


def estimate(request, loaded, results: Path | None = None) -> CostEstimate:
    """The measured cost of ``request`` with its models already ``loaded`` (in request order):
    :func:`raw_estimate` × :func:`correction` from the kind's recorded runs (``results``: the
    result store's folder, default ``<runs>/results``)."""
    raw = raw_estimate(request, loaded)
    kind = request.cost_class()
    factor, runs = correction(kind, _device_type(loaded), results)
    how = raw.how + (f" × {factor:.2g} (the last {runs} {kind} run(s) here)" if runs else "")
    return CostEstimate(raw.seconds * factor, raw.per_image_s, raw.passes, how)


def raw_estimate(request, loaded) -> CostEstimate:
    """The cost model alone: each model's forward seconds per image (:func:`seconds_per_image`)
    × the kind's forward-equivalent passes per image (``passes(request, per, loaded)``, in units of
    all the models' forward passes together) × its number of images."""
    from engine.analysis.registry import get_analysis

    per = [seconds_per_image(m.model) for m in loaded]
    total_per_image = sum(per)
    passes, images = get_analysis(request.kind).passes(request, per, loaded)
    seconds = RUN_OVERHEAD_S + total_per_image * passes * images
    how = (f"measured {total_per_image * 1000:.2f} ms per image for {len(per)} model(s) on "
           f"{_device(loaded)} × {passes:.0f} pass(es) × {images} images")
    return CostEstimate(seconds, total_per_image, passes, how)


def record_actual(request, loaded, seconds: float, results: Path) -> None:
    """Append one computed run (its cost class, ``request.cost_class()``: the kind, or e.g.
    ``cka:procrustes``; device type, raw estimate, actual seconds) to ``<results>/timings.jsonl``,
    which :func:`correction` reads."""
    raw = raw_estimate(request, loaded).seconds
    line = json.dumps({"kind": request.cost_class(), "device": _device_type(loaded), "raw_s": raw, "actual_s": seconds,
                       "at": time.time()})
    results.mkdir(parents=True, exist_ok=True)
    with open(results / TIMINGS_FILE, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def correction(kind: str, device: str, results: Path | None = None) -> tuple[float, int]:
    """``(factor, runs)``: the median actual ÷ raw estimate of the last :data:`HISTORY` recorded
    runs of ``kind`` (a request's ``cost_class()``) on ``device`` (a device type: "cpu", "cuda"), within :data:`CORRECTION_RANGE`;
    ``(1.0, 0)`` before any run (an unreadable line is skipped)."""
    if results is None:
        from engine.paths import results_dir

        results = results_dir()
    ratios = []
    try:
        lines = (Path(results) / TIMINGS_FILE).read_text(encoding="utf-8").splitlines()
    except OSError:
        return 1.0, 0
    for text in reversed(lines):
        try:
            row = json.loads(text)
            if row["kind"] == kind and row["device"] == device and row["raw_s"] > 0 and row["actual_s"] >= 0:
                ratios.append(row["actual_s"] / row["raw_s"])
        except (ValueError, KeyError, TypeError):
            continue
        if len(ratios) == HISTORY:
            break
    if not ratios:
        return 1.0, 0
    low, high = CORRECTION_RANGE
    return min(max(statistics.median(ratios), low), high), len(ratios)


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


#: forward-equivalent passes of one gradient step (a forward and a backward pass; measured on the
#: shipped models with ``bench/estimates.py``: a batched backward pass costs about 1.5 forward ones)
GRADIENT_STEP = 2.5
#: seconds every computed run spends besides its passes (reading its inputs, storing the result)
RUN_OVERHEAD_S = 0.02


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


def _device_type(loaded) -> str:
    from engine.models.state import model_device

    return model_device(loaded[0].model).type if loaded else "cpu"


def _device(loaded) -> str:
    from engine.models.state import model_device

    return str(model_device(loaded[0].model)) if loaded else "?"
