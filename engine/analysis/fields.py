"""The checks and bounds every analysis request shares (torch-free).

A request is valid by construction (``Request.__post_init__`` runs its ``_check``), using these
helpers; each raises :class:`~engine.errors.InvalidParameterError` naming the field. Names that
come from torch-side registries (datasets, attacks, layers) are checked when the analysis runs
and before a job is queued (``engine.analysis.runner.preflight``).
"""
from __future__ import annotations

import math
from typing import Any

from engine import catalogue
from engine.catalogue import (  # noqa: F401 (the names requests check, from the one torch-free catalogue)
    AUTOATTACK_FAMILY,
    CKA_KERNELS,
    CKA_POOLINGS,
    MAX_VIS_PIXELS,
    MAX_VIS_SIDE,
    MAX_VIS_STEPS,
    NORMS,
)
from engine.errors import InvalidParameterError

SPLITS = ("test", "train")
#: most images one request may name (bounds time, not memory: everything is streamed)
MAX_IMAGES = 1_000_000
MAX_BATCH = 4096
#: largest seed a request takes
MAX_SEED = 2**63 - 1
#: most models one request compares (the Attack Lab's slots A..H)
MAX_MODELS = 8
#: targets per feature request (top-k too), optimisation steps, image side and pixels over all
#: targets of one visualisation (``engine.featvis`` renders within the same bounds)
MAX_TARGETS = catalogue.MAX_VIS_TARGETS
#: the severities of ``engine.data.distortions``
SEVERITY_LEVELS = catalogue.SEVERITIES
#: AutoAttack's versions and "custom" (a given attack list)
AUTOATTACK_VERSIONS = (*catalogue.AUTOATTACK_VERSIONS, catalogue.AUTOATTACK_CUSTOM)
#: most ε-sweep points of a robustness report
MAX_SWEEP = 32
#: the value types a method's or an attack's parameter may have in a request
PARAM_TYPES = (bool, int, float, str)


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` if it is an int in [low, high], else an InvalidParameterError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InvalidParameterError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def check_float(name: str, value: Any, low: float, high: float | None = None, optional: bool = True) -> float | None:
    """``value`` (a finite number in [low, high]) or None when ``optional``."""
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InvalidParameterError(f"{name} must be a number {bound}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices) -> str:
    if value not in tuple(choices):
        raise InvalidParameterError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_names(name: str, value: Any, optional: bool = True, limit: int = 512) -> tuple[str, ...] | None:
    """A tuple of non-empty strings (``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value or len(value) > limit:
        raise InvalidParameterError(f"{name} must be a non-empty list of names (at most {limit}), got {value!r}")
    if not all(isinstance(v, str) and v and len(v) <= 400 for v in value):
        raise InvalidParameterError(f"{name}: every entry must be a non-empty string, got {value!r}")
    return tuple(value)


def check_dataset(name) -> str:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise InvalidParameterError(f"dataset must be a dataset name, got {name!r}")
    return name



def check_layer_targets(layer, targets, position) -> None:
    """A layer name, 1 to :data:`MAX_TARGETS` ``("unit", i)`` / ``("direction", seed)`` targets and
    an optional ``(y, x)`` position (the feature requests' shared fields)."""
    if not isinstance(layer, str) or not layer:
        raise InvalidParameterError(f"layer must be a layer name, got {layer!r}")
    if not isinstance(targets, tuple) or not 1 <= len(targets) <= MAX_TARGETS:
        raise InvalidParameterError(f"targets must list one to {MAX_TARGETS} (kind, value) pairs")
    for target in targets:
        if not (isinstance(target, tuple) and len(target) == 2 and target[0] in ("unit", "direction")):
            raise InvalidParameterError(f"a target is (\"unit\", i) or (\"direction\", seed), got {target!r}")
        check_int(f"target {target[0]}", target[1], 0, 2**31 - 1)
    if position is not None:
        if not (isinstance(position, tuple) and len(position) == 2):
            raise InvalidParameterError(f"position must be (y, x), got {position!r}")
        for v in position:
            check_int("position", v, 0, 100_000)



def check_positive(name: str, value, high: float) -> None:
    """``value`` is a finite number in (0, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high:
        raise InvalidParameterError(f"{name} must be a number in (0, {high:g}], got {value!r}")



def check_vis_pixels(targets: int, height: int, width: int) -> None:
    """Refuse a visualisation of more than :data:`MAX_VIS_PIXELS` pixels over all its targets."""
    if targets * height * width > MAX_VIS_PIXELS:
        raise InvalidParameterError(
            f"{targets} targets of {height}×{width} pixels are {targets * height * width:,} pixels in one "
            f"visualisation; the limit is {MAX_VIS_PIXELS:,}: visualise fewer targets or smaller images")



def check_bool(name: str, value, optional: bool = True) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        raise InvalidParameterError(f"{name} must be true or false, got {value!r}")


def check_model_list(models, limit: int = MAX_MODELS) -> None:
    """One to ``limit`` models (a request's ``models`` tuple)."""
    if not isinstance(models, tuple) or not 1 <= len(models) <= limit:
        raise InvalidParameterError(f"models must list one to {limit} checkpoints")


def grouped_params(methods, params) -> dict[str, dict]:
    """``{method: {name: value}}`` in ``methods``' order, from a request's ``(method, name, value)``
    triples (the saliency kinds' method parameters)."""
    out: dict[str, dict] = {m: {} for m in methods}
    for method, name, value in params:
        out[method][name] = value
    return out
