"""Training: standard, PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019), fast FGSM-AT
(Wong et al. 2020) and AdvProp (Xie et al. 2019) behind one loop with resume, AMP and DDP.

Public API:
- :class:`TrainConfig` (dataclass <-> JSON, ``validate()``), :data:`METHODS`;
- :func:`train` -> :class:`TrainResult`, progress via :class:`ProgressEvent`;
- :func:`publish_saved` (publish a run folder's finished epochs without training);
- :func:`estimate_cost` -> :class:`CostEstimate` (rough, for the form);
- :func:`lr_at`, :func:`evaluate`, :data:`METHOD_LOSSES`.
"""
from engine.training.config import METHODS, NORMS, OPTIMIZERS, SCHEDULES, TrainConfig  # noqa: F401
from engine.training.cost import CostEstimate, estimate_cost  # noqa: F401
from engine.training.methods import METHOD_LOSSES, passes_per_batch  # noqa: F401
from engine.training.trainer import (  # noqa: F401
    ProgressEvent,
    TrainResult,
    checkpoints_root,
    evaluate,
    lr_at,
    publish_saved,
    runs_root,
    train,
)
