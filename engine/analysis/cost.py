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
    sets and shape bias); top-k one; the saliency grid, on its one image, about 3 (forward and
    backward) per gradient each method takes (SmoothGrad's noisy copies, Integrated Gradients'
    steps); keep/remove curves :func:`curve_passes` per image; the ε-vs-interpretability trade-off
    one map and one clean pass per image; the lucent visualisation a gradient step per optimisation
    step on each target's image (:func:`featvis_passes`); robust accuracy and the robustness report
    one clean pass plus their attacks'
    (:func:`attack_passes`; an upper bound, as points broken early skip the later attacks); the
    Attack Lab's craft, ε-sweep and transfer :func:`attack_lab_passes`; the AdvProp comparison
    :func:`advprop_passes` per model (both branches and the peers); CKA across epochs one per snapshot.
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
    elif kind == "saliency_grid":
        passes, images = _saliency_passes(request), 1
    elif kind == "saliency_curves":
        passes, images = curve_passes(request), request.n
    elif kind == "tradeoff":
        passes, images = method_passes(request.method, {}) + 1.0, request.n
    elif kind == "robust_accuracy":
        passes = 1.0 + (attack_passes(request.attack, request.attack_params()) if request.attack else 0.0)
        images = request.n or _split_size(request.dataset, request.split)
    elif kind == "robustness_report":
        passes, images = report_passes(request), request.n
    elif kind in ATTACK_LAB:
        passes, images = attack_lab_passes(request, per), request.n
    elif kind == "advprop":
        passes, images = advprop_passes(request), request.n
    elif kind == "featvis":
        passes, images = featvis_passes(request, loaded[0].model), len(request.targets)
    else:
        passes, images = 1.0, request.n
    seconds = total_per_image * passes * images
    how = (f"measured {total_per_image * 1000:.1f} ms per image for {len(per)} model(s) on "
           f"{_device(loaded)} × {passes:.0f} pass(es) × {images} images")
    return CostEstimate(seconds, total_per_image, passes, how)


def _saliency_passes(request) -> float:
    """Forward + backward passes of a saliency grid's methods on one image (defaults filled in)."""
    return sum(method_passes(method, params) for method, params in request.method_params().items())


def method_passes(method: str, params: dict) -> float:
    """Forward-equivalent passes of one attribution map of ``method`` with ``params`` (defaults
    filled in): a forward and a backward pass per gradient it takes (SmoothGrad's noisy copies,
    Integrated Gradients' steps)."""
    from engine.attribution.methods import resolve_params

    full = resolve_params(method, params)
    return GRADIENT_STEP * int(full.get("n_samples", full.get("steps", 1)))


def curve_passes(request) -> float:
    """Forward-equivalent passes per evaluation image of keep/remove curves: per mode, the ranking
    map, one pass per fraction and the clean pass; with retraining, per mode and fraction, masking
    ``retrain_n`` training images (a map each) and training on them (a gradient step per image and
    epoch), counted per evaluation image."""
    fractions = len(set(request.fractions))
    ranking = method_passes(request.method, request.method_params())
    passes = len(request.modes) * (ranking + fractions + 1.0)
    if request.retrain:
        per_run = request.retrain_n * (ranking + GRADIENT_STEP * request.retrain_epochs) / request.n
        passes += len(request.modes) * fractions * per_run
    return passes


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


def featvis_passes(request, model) -> float:
    """Forward-equivalent passes per target of a lucent visualisation: a forward and a backward
    pass per optimisation step, scaled by the image's pixels over the model's input size."""
    shape = tuple(getattr(model, "input_shape", None) or (3, 32, 32))
    height, width = request.size or shape[1:]
    return GRADIENT_STEP * request.steps * (height * width) / (shape[1] * shape[2])


def advprop_passes(request) -> float:
    """Forward-equivalent passes per image of an AdvProp comparison (its models: both branches and
    the peers): a clean pass, PGD's steps and one pass per distortion at the request's severity."""
    from engine.data.distortions import DISTORTIONS

    return 1.0 + attack_passes("pgd", {"steps": request.steps}) + len(DISTORTIONS)


#: the Attack Lab's analyses (:func:`attack_lab_passes`)
ATTACK_LAB = ("craft", "eps_sweep", "transfer")


def attack_lab_passes(request, per: list[float]) -> float:
    """Forward-equivalent passes per image of an Attack Lab analysis, in units of all its models'
    forward passes (``per``: each model's measured seconds per image): craft, the attack on the
    source model plus a clean and an adversarial pass on every model; ε-sweep, the attack (and its
    clean and adversarial passes) on every model at every ε of a bounded attack, once for a
    minimal-norm one; transfer, the attack on every model, one clean pass and one pass per model's
    examples."""
    from engine.attacks import get_attack_class

    attack = attack_passes(request.attack, request.attack_kwargs())
    if request.kind == "craft":
        return 2.0 + attack * per[request.source] / max(sum(per), 1e-12)
    if request.kind == "eps_sweep":
        return (attack + 2.0) * (len(request.eps) if get_attack_class(request.attack).bounded else 1)
    return attack + 1.0 + len(request.models)


def report_passes(request) -> float:
    """Forward-equivalent passes per image of a robustness report: clean, PGD, AutoAttack, the
    masking checks (about two more APGD-CE runs and a short Square) and the ε-sweep (APGD-CE per ε)."""
    apgd = attack_passes("apgd-ce", {})
    autoattack = attack_passes("autoattack", {"version": request.version, "queries": request.square_queries})
    masking = 2 * apgd + 1000 if request.masking else 0.0
    sweep = apgd * (len(request.sweep) if request.sweep is not None else 8)
    return 1.0 + GRADIENT_STEP * request.pgd_steps + autoattack + masking + sweep


def _split_size(dataset: str, split: str) -> int:
    from engine import data as edata

    return len(edata.load_dataset(dataset, split=split))


def _device(loaded) -> str:
    from engine.models.state import model_device

    return str(model_device(loaded[0].model)) if loaded else "?"
