"""A rough cost estimate for the training form: forward+backward passes and a time range.

The time is an order of magnitude only: images per second per forward+backward pass are taken
from a small table of typical throughputs per architecture and device kind, not measured here.
"""
from __future__ import annotations

from typing import NamedTuple

from engine.training.config import TrainConfig
from engine.training.methods import passes_per_batch

#: typical forward+backward images/second of one pass: (arch, "cpu"|"cuda") -> throughput.
THROUGHPUT: dict[tuple[str, str], float] = {
    ("small_cnn", "cpu"): 2500.0, ("small_cnn", "cuda"): 60000.0,
    ("cifar_resnet", "cpu"): 150.0, ("cifar_resnet", "cuda"): 12000.0,
    ("resnet18", "cpu"): 40.0, ("resnet18", "cuda"): 2500.0,
    ("resnet50", "cpu"): 12.0, ("resnet50", "cuda"): 900.0,
}
_DEFAULT_THROUGHPUT = {"cpu": 200.0, "cuda": 10000.0}


class CostEstimate(NamedTuple):
    """``passes``: forward+backward passes per image per epoch; ``image_passes``: over the run;
    ``seconds_low``/``seconds_high``: a range for the whole run (including evaluation)."""

    passes: int
    image_passes: int
    seconds_low: float
    seconds_high: float

    def describe(self) -> str:
        """e.g. ``"8 passes/image/epoch, 1.6M image-passes, about 2–8 min"``."""
        return (f"{self.passes} forward+backward passes per image per epoch, "
                f"{self.image_passes / 1e6:.3g}M image-passes, about "
                f"{_human(self.seconds_low)}–{_human(self.seconds_high)}")


def estimate_cost(config: TrainConfig, n_train: int, device_kind: str = "cpu", arch: str | None = None) -> CostEstimate:
    """Estimate a run's work and a wide time range.

    Args:
        config: the recipe; n_train: training images per epoch (before ``train_size``).
        device_kind: ``"cpu"`` or ``"cuda"``; arch: the architecture actually used
            (default ``config.arch``).
    """
    n = n_train if config.train_size is None else min(config.train_size, n_train)
    passes = passes_per_batch(config)
    eval_passes = config.eval_size * (1 + config.eval_steps)  # per epoch
    image_passes = config.epochs * (n * passes + eval_passes)
    kind = "cuda" if device_kind.startswith("cuda") else "cpu"
    speed = THROUGHPUT.get((arch or config.arch or "", kind), _DEFAULT_THROUGHPUT[kind])
    seconds = image_passes / speed
    return CostEstimate(passes, int(image_passes), seconds / 2, seconds * 2)


def _human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
