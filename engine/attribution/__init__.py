"""Gradient attribution (captum adapters) and its quantitative checks.

- :func:`attribute` with the :data:`METHODS` registry: vanilla gradient, input x gradient,
  SmoothGrad, Integrated Gradients, guided backprop -> :class:`Attribution` (maps like the input).
- :func:`attribution_grid`: methods x models on one image (the page's and CLI's call).
- :func:`to_heatmap`, :func:`overlay`, :func:`colorize`, :func:`to_png_bytes`: pictures.
- :func:`keep_remove_curves`: accuracy vs fraction of top-attributed pixels kept/removed
  (retraining, i.e. KAR/ROAR, plugs in through ``retrain``).
- :func:`engine_retrainer`: that ``retrain`` callable, training a fresh model on the masked
  training images through ``engine.training`` (Hooker et al. 2019); :func:`retrain_config`,
  :func:`retrain_cost`.
- :func:`alignment_score`, :func:`epsilon_tradeoff`: attribution mass inside the object mask on
  ``shapes``, and its trade-off with clean accuracy across training ε (Kim & Seo 2019).
- :func:`explanation_metrics` and the metrics of :mod:`engine.attribution.metrics`: the
  randomisation test, ROAD, pixel flipping, the pointing game, relevance-mass accuracy and max-/
  average-sensitivity, per image (docs/EXPLANATION_METRICS.md).
"""
from engine.attribution.alignment import (  # noqa: F401
    ALIGNMENT_DATASET,
    ALIGNMENT_DATASETS,
    MaskedImages,
    TradeoffPoint,
    alignment_score,
    epsilon_tradeoff,
    evaluation_set,
    foreground_masks,
    mask_area,
    shapes_evaluation_set,
    training_epsilon,
    with_training_epsilon,
)
from engine.attribution.curves import (  # noqa: F401
    DEFAULT_FRACTIONS,
    MODES,
    REPLACEMENTS,
    CurveResult,
    RetrainRequest,
    RetrainStopped,
    keep_remove_curve,
    keep_remove_curves,
)
from engine.attribution.grid import GridCell, attribution_grid  # noqa: F401
from engine.attribution.methods import (  # noqa: F401
    COMMON_PARAMS,
    METHODS,
    Attribution,
    MethodSpec,
    ParamSpec,
    UnsupportedModelError,
    attribute,
    check_module_relus,
    method_params,
    resolve_params,
)
from engine.attribution.metrics import (  # noqa: F401
    EVALUATORS,
    MetricOptions,
    MetricsResult,
    ScoreSet,
    dataset_masks,
    explainer,
    explanation_metrics,
)
from engine.attribution.render import (  # noqa: F401
    COLORMAPS,
    REDUCTIONS,
    colorize,
    image_to_rgb,
    overlay,
    to_heatmap,
    to_png_bytes,
)
from engine.attribution.retrain import (  # noqa: F401
    RETRAIN_DEFAULTS,
    EngineRetrainer,
    RetrainProgress,
    RetrainRecord,
    engine_retrainer,
    retrain_config,
    retrain_cost,
)
