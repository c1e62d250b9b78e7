"""Model architectures, the [0, 1] normalising wrapper, dual BatchNorm, layer listing and hooks."""
from engine.models.hooks import ActivationRecorder, record_activations  # noqa: F401
