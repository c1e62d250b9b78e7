"""Feature visualisation settings, bounds and result type, importable without lucent or torch (so
the CLI can check a request and print a stored result at once)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np

from engine.errors import InvalidParameterError

#: Bounds that keep one visualisation's time and memory finite (checked before anything is built):
#: optimisation steps, image side in pixels, targets per batch, and pixels over the whole batch
#: (targets × H × W; 2²⁴ is 16 images of 1024², or 334 of 224²).
MAX_VIS_STEPS = 10_000
MAX_VIS_SIDE = 1024
MAX_VIS_TARGETS = 64
MAX_VIS_PIXELS = 2 ** 24


@dataclass(frozen=True)
class VisConfig:
    """Settings shared by every target of a visualisation (so units and directions match).

    Attributes:
        steps: optimisation steps (0 returns the seeded starting image).
        lr: Adam learning rate on the image parameters.
        seed: seeds the starting image and the random transforms.
        fft: Fourier (``True``) or pixel parameterisation.
        decorrelate: lucent's colour decorrelation (RGB models only; ignored otherwise).
        transforms: apply lucent's pad/jitter/scale/rotate robustness transforms.
        sd: standard deviation of the random starting parameters.
    """

    steps: int = 128
    lr: float = 0.05
    seed: int = 0
    fft: bool = True
    decorrelate: bool = True
    transforms: bool = True
    sd: float = 0.01

    def validate(self) -> "VisConfig":
        """Return self, or raise :class:`InvalidParameterError` for out-of-range settings."""
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)) \
                or not 0 <= self.steps <= MAX_VIS_STEPS:
            raise InvalidParameterError(f"steps must be an integer in [0, {MAX_VIS_STEPS}], got {self.steps!r}")
        if not 0 < float(self.lr) <= 10:
            raise InvalidParameterError(f"lr must be in (0, 10], got {self.lr}")
        if not 0 < float(self.sd) <= 1:
            raise InvalidParameterError(f"sd must be in (0, 1], got {self.sd}")
        return self

    def as_dict(self) -> dict:
        """Plain dict (for JSON and cache keys)."""
        return asdict(self)


class VisResult(NamedTuple):
    """Visualisations of several targets of one layer.

    Attributes:
        images: float32 (B, H, W, C) in [0, 1], one per target, in target order.
        trajectories: float32 (steps_done, B): each target's objective ⟨φ(t(x)), w⟩ per step
            (measured on the transformed image the step optimised; larger is better).
        steps_done: steps actually run (fewer than asked when stopped).
        stopped: ``should_stop()`` ended the run early.
    """

    images: np.ndarray
    trajectories: np.ndarray
    steps_done: int
    stopped: bool
