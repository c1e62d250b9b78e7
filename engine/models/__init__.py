"""Model architectures, the [0, 1] normalising wrapper, dual BatchNorm, layer listing and hooks.

Public API (docs/ENGINE_API.md):
- :data:`ARCHITECTURES` (name -> :class:`ArchSpec`), :func:`build_model` -> :class:`Classifier`;
- ``torchvision:NAME`` / ``timm:NAME`` architectures (:func:`get_arch`) and
  :func:`default_normalization` -> :class:`Normalization` (what published weights expect);
- :func:`guided_backprop_problem` (can guided backprop be applied faithfully?);
- :class:`DualBatchNorm2d`, :func:`bn_branch` (AdvProp's main/aux BatchNorm);
- :func:`list_layers` -> list of :class:`LayerInfo`, :func:`default_layers`, :func:`block_layers`;
- :func:`record_activations` (``engine.models.hooks``).
"""
from engine.models.activations import ActivationReport, activation_report, guided_backprop_problem  # noqa: F401
from engine.models.architectures import (  # noqa: F401
    ARCHITECTURES,
    ArchSpec,
    build_model,
    default_normalization,
    get_arch,
)
from engine.models.external import Normalization  # noqa: F401
from engine.models.dual_bn import (  # noqa: F401
    BN_BRANCHES,
    DualBatchNorm2d,
    bn_branch,
    use_branch,
    convert_to_dual_bn,
    dual_bn_layers,
)
from engine.models.hooks import ActivationRecorder, record_activations, resolve_layer  # noqa: F401
from engine.models.layers import LayerInfo, block_layers, default_layers, list_layers  # noqa: F401
from engine.models.wrapper import Classifier, Normalize  # noqa: F401
