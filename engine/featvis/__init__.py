"""Feature visualisation: units (the natural basis) vs random directions (Szegedy et al. 2013).

- Dataset examples: :func:`top_k`, :func:`top_k_many`, :func:`stream_top_k` (flat memory),
  :func:`unit_scores`, :func:`layer_features`.
- Targets: :func:`unit_target`, :func:`direction_target`, :func:`random_direction`.
- Images: :func:`grid`, :func:`check_grid`, :func:`fitting_grid`, :func:`png_bytes`, :func:`to_hwc`.
- Bounds (time and memory of one call): :data:`MAX_VIS_STEPS`, :data:`MAX_VIS_SIDE`,
  :data:`MAX_VIS_TARGETS`, :data:`MAX_VIS_PIXELS`, :data:`MAX_GRID_SIDE`.
- Optimisation (lucent, hooks always removed, device follows the model): :func:`visualise`,
  :class:`VisConfig`, :class:`VisResult`; cached by checkpoint hash: :func:`cached_visualise`.
  As a stored, backgroundable analysis: the ``featvis`` kind (``engine.analysis.kinds.featvis``).
"""
from engine.featvis.config import (  # noqa: F401
    MAX_VIS_PIXELS,
    MAX_VIS_SIDE,
    MAX_VIS_STEPS,
    MAX_VIS_TARGETS,
    VisConfig,
    VisResult,
)
from engine.featvis.images import MAX_GRID_SIDE, check_grid, fitting_grid, grid, png_bytes, to_hwc  # noqa: F401
from engine.featvis.targets import (  # noqa: F401
    TARGET_KINDS,
    FeatureTarget,
    direction_target,
    random_direction,
    unit_target,
)

#: the names of the modules that need torch (and lucent), imported when first used, so that
#: checking a request or printing a stored result does not pay for them
_LAZY = {
    "engine.featvis.cache": ("cache_dir", "cache_key", "cached_visualise", "load_cached", "save_cached"),
    "engine.featvis.examples": ("TopK", "layer_features", "rank", "stream_top_k", "target_scores", "top_k",
                                "top_k_many", "unit_scores"),
    "engine.featvis.render": ("image_param", "objective_for", "projection", "visualise"),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str):
    """A torch-side name (see ``_LAZY``), imported on first use."""
    import importlib

    if name not in _HOME:
        raise AttributeError(f"module 'engine.featvis' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOME))
