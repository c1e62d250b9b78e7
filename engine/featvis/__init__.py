"""Feature visualisation: units (the natural basis) vs random directions (Szegedy et al. 2013).

- Dataset examples: :func:`top_k`, :func:`top_k_many`, :func:`stream_top_k` (flat memory),
  :func:`unit_scores`, :func:`layer_features`.
- Targets: :func:`unit_target`, :func:`direction_target`, :func:`random_direction`.
- Images: :func:`grid`, :func:`check_grid`, :func:`fitting_grid`, :func:`png_bytes`, :func:`to_hwc`.
- Bounds (time and memory of one call): :data:`MAX_VIS_STEPS`, :data:`MAX_VIS_SIDE`,
  :data:`MAX_VIS_TARGETS`, :data:`MAX_VIS_PIXELS`, :data:`MAX_GRID_SIDE`.
- Optimisation (lucent, hooks always removed, device follows the model): :func:`visualise`,
  :class:`VisConfig`, :class:`VisResult`; cached by checkpoint hash: :func:`cached_visualise`.
  As a stored, backgroundable analysis: ``engine.analysis.FeatVisRequest`` (kind ``featvis``).
"""
from engine.featvis.cache import cache_dir, cache_key, cached_visualise, load_cached, save_cached  # noqa: F401
from engine.featvis.examples import (  # noqa: F401
    TopK,
    layer_features,
    rank,
    stream_top_k,
    target_scores,
    top_k,
    top_k_many,
    unit_scores,
)
from engine.featvis.images import MAX_GRID_SIDE, check_grid, fitting_grid, grid, png_bytes, to_hwc  # noqa: F401
from engine.featvis.render import (  # noqa: F401
    MAX_VIS_PIXELS,
    MAX_VIS_SIDE,
    MAX_VIS_STEPS,
    MAX_VIS_TARGETS,
    VisConfig,
    VisResult,
    image_param,
    objective_for,
    projection,
    visualise,
)
from engine.featvis.targets import (  # noqa: F401
    TARGET_KINDS,
    FeatureTarget,
    direction_target,
    random_direction,
    unit_target,
)
