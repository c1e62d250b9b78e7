"""Generalisation and simplicity of robust vs standard models (Agarwal & Chen 2020, docs/SCIENCE.md, "Generalisation and simplicity").

- :mod:`engine.generalisation.ood`: accuracy of several models under every distortion and
  severity of ``engine.data.distortions`` (and on fixed image sets such as the ``shapes``
  silhouette / texture / cue-conflict variants), as one tidy table.
- :mod:`engine.generalisation.shape_bias`: the Geirhos et al. shape-bias score on cue-conflict
  images.
- :mod:`engine.generalisation.units`: per-unit spatial roughness and label complexity of a
  layer's channels.
- :mod:`engine.generalisation.summary`: whether the paper's findings hold for a given pair.
"""
from engine.generalisation.ood import (  # noqa: F401
    ImageSet,
    OODResult,
    evaluate_ood,
    predict,
    shapes_image_sets,
)
from engine.generalisation.shape_bias import (  # noqa: F401
    CUE_CONFLICT_UNAVAILABLE,
    CueConflictSet,
    ShapeBiasResult,
    cue_conflict_set,
    shape_bias,
    shape_bias_from_predictions,
)
from engine.generalisation.summary import (  # noqa: F401
    Finding,
    findings_line,
    paper_findings,
    robust_and_standard,
)
from engine.generalisation.units import (  # noqa: F401
    UnitReport,
    UnitStats,
    compare_units,
    high_frequency_share,
    label_complexity,
    spatial_roughness,
    unit_statistics,
    units_frame,
)
