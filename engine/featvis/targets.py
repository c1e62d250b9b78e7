"""What a feature visualisation looks at: a unit (the natural basis eᵢ) or a random direction v.

Szegedy et al. 2013, "Intriguing properties of neural networks", §3: the images maximising
⟨φ(x), eᵢ⟩ for a single unit look as coherent as those maximising ⟨φ(x), v⟩ for a random unit-norm
direction v of the same layer. Both are :class:`FeatureTarget`\\s here, so top-k search and
optimisation treat them identically.
"""
from __future__ import annotations

import hashlib
from typing import NamedTuple

import numpy as np

from engine.errors import InvalidParameterError

#: Target kinds: a channel (spatial mean), a neuron (a channel at one position), a direction.
TARGET_KINDS = ("channel", "neuron", "direction")


class FeatureTarget(NamedTuple):
    """A linear read-out of a layer's activation: ⟨φ(x), w⟩.

    Attributes:
        kind: ``"channel"`` (w = eᵢ on the spatially averaged activation), ``"neuron"``
            (w = eᵢ on the activation at ``position``) or ``"direction"`` (w = ``vector``).
        channel: the unit index i for ``"channel"``/``"neuron"``; ``None`` for directions.
        vector: the direction v, float32 of shape (C,), for ``"direction"``; else ``None``.
        position: ``(y, x)`` in the layer's spatial grid, or ``None`` for the spatial mean.
        seed: the seed ``vector`` was drawn with (``None`` for a given vector or a unit).
    """

    kind: str
    channel: int | None = None
    vector: np.ndarray | None = None
    position: tuple[int, int] | None = None
    seed: int | None = None

    @property
    def key(self) -> str:
        """A short stable text naming this target (used in cache keys and file names)."""
        where = "" if self.position is None else f"@{self.position[0]}-{self.position[1]}"
        if self.kind != "direction":
            return f"{self.kind}{self.channel}{where}"
        if self.seed is not None:
            return f"direction-seed{self.seed}-dim{len(self.vector)}{where}"
        digest = hashlib.sha256(np.ascontiguousarray(self.vector, dtype=np.float32).tobytes())
        return f"direction-{digest.hexdigest()[:16]}{where}"

    @property
    def label(self) -> str:
        """A human label, e.g. ``"unit 3"`` or ``"random direction (seed 7)"``."""
        if self.kind == "direction":
            return "random direction" + (f" (seed {self.seed})" if self.seed is not None else "")
        return f"unit {self.channel}" + ("" if self.position is None else f" at {self.position}")

    def weights(self, dim: int) -> np.ndarray:
        """The read-out vector w (float32, shape (dim,)): eᵢ for units, v for directions."""
        if self.kind == "direction":
            if len(self.vector) != dim:
                raise InvalidParameterError(
                    f"direction has {len(self.vector)} entries but the layer has {dim} channels"
                )
            return np.asarray(self.vector, dtype=np.float32)
        if not 0 <= self.channel < dim:
            raise InvalidParameterError(f"unit {self.channel} out of range: the layer has {dim} channels")
        basis = np.zeros(dim, dtype=np.float32)
        basis[self.channel] = 1.0
        return basis


def random_direction(dim: int, seed: int) -> np.ndarray:
    """A seeded random direction, uniform on the unit sphere of R^dim (the norm of any eᵢ).

    Args:
        dim: the layer's channel count (>= 1).
        seed: integer seed; the same (dim, seed) always gives the same vector.

    Returns:
        float32 array of shape (dim,) with Euclidean norm 1.
    """
    if int(dim) < 1:
        raise InvalidParameterError(f"a direction needs dim >= 1, got {dim}")
    rng = np.random.default_rng(int(seed))
    while True:
        vector = rng.standard_normal(int(dim))
        norm = float(np.linalg.norm(vector))
        if norm > 1e-12:
            return (vector / norm).astype(np.float32)


def unit_target(channel: int, position: tuple[int, int] | None = None) -> FeatureTarget:
    """Target unit ``channel`` (spatial mean), or the neuron at ``position=(y, x)``."""
    if int(channel) < 0:
        raise InvalidParameterError(f"unit index must be >= 0, got {channel}")
    kind = "channel" if position is None else "neuron"
    return FeatureTarget(kind, channel=int(channel), position=_check_position(position))


def direction_target(
    dim: int, seed: int | None = None, vector=None, position: tuple[int, int] | None = None
) -> FeatureTarget:
    """Target a direction: the seeded random one (``seed``) or a given ``vector`` of length dim.

    A given vector is used as is (not renormalised), so its norm is the caller's choice.
    """
    if (seed is None) == (vector is None):
        raise InvalidParameterError("give exactly one of seed or vector for a direction target")
    if vector is None:
        vector = random_direction(dim, seed)
    vector = np.asarray(vector, dtype=np.float32).reshape(-1)
    if len(vector) != dim:
        raise InvalidParameterError(f"direction has {len(vector)} entries, expected {dim}")
    if not np.all(np.isfinite(vector)) or not np.any(vector):
        raise InvalidParameterError("a direction must be finite and non-zero")
    return FeatureTarget(
        "direction", vector=vector, position=_check_position(position),
        seed=None if seed is None else int(seed),
    )


def _check_position(position) -> tuple[int, int] | None:
    if position is None:
        return None
    if len(position) != 2 or min(int(p) for p in position) < 0:
        raise InvalidParameterError(f"position must be (y, x) with non-negative ints, got {position!r}")
    return (int(position[0]), int(position[1]))
