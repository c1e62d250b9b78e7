"""The typed training recipe: :class:`TrainConfig` (dataclass <-> JSON), validated with clear messages.

Values are read from JSON as data only (``json.loads``); nothing is ever ``eval``-ed.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from engine import catalogue
from engine.errors import InvalidParameterError

#: Training methods (name -> one-line description; ``engine.catalogue.TRAINING_METHODS``); the
#: losses live in ``engine.training.methods``.
METHODS: dict[str, str] = catalogue.TRAINING_METHODS
NORMS = catalogue.NORMS
OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "piecewise", "constant")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


#: most data-parallel processes of one training job
MAX_WORKERS = 64


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as JSON beside each job and checkpoint.

    Attributes:
        dataset: registered dataset name (``engine.data.DATASETS``), e.g. ``"shapes"``.
        dataset_options: keyword options for ``engine.data.load_dataset`` (e.g. ``{"n": 2000}``
            for shapes); applied to both splits.
        arch: architecture name (``engine.models.ARCHITECTURES``); ``None`` = the dataset's default.
        arch_kwargs: keyword arguments of the architecture (e.g. ``{"depth": 20}``).
        method: one of :data:`METHODS`.
        norm: threat model of the training attack, ``"linf"`` or ``"l2"``.
        eps: attack radius in [0, 1] pixel units (e.g. 8/255 for linf, 0.5 for l2).
        steps: PGD steps for ``pgd``/``trades``/``advprop`` (``fast`` always uses one step).
        alpha: step size; ``None`` = 2.5 * eps / steps (``fast``: 1.25 * eps).
        trades_beta: TRADES trade-off weight beta (> 0).
        epochs, batch_size: the run length and the global batch size (split across DDP ranks).
        optimizer: ``"sgd"`` (with momentum, nesterov off) or ``"adamw"``.
        lr, momentum, weight_decay: optimiser settings.
        schedule: ``"cosine"`` (to 0), ``"piecewise"`` (x0.1 at 50 % and 75 % of the run) or
            ``"constant"``; the learning rate is set per batch from the fractional epoch.
        warmup_epochs: linear warm-up length (may be fractional; 0 = none).
        seed: seeds weights init, shuffling and attack random starts.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        amp: use mixed precision on CUDA (ignored on CPU).
        train_size: use only the first ``train_size`` training images (``None`` = all).
        eval_size: size of the fixed held-out test subset (seed 0) evaluated after each epoch.
        eval_steps: PGD steps of the per-epoch robust evaluation (eps/norm as in training;
            alpha = 2.5 * eps / eval_steps; for ``standard`` the eps above is still used).
        name: output checkpoint name (file stem); ``None`` = derived from the recipe.
        workers: data-parallel processes (PyTorch DDP): 1 = one process; N > 1 runs on a Ray
            cluster through Ray Train (``python -m engine worker --ray ADDRESS``), one GPU each for a
            ``cuda`` run (one CPU each otherwise), on one or several nodes; ``batch_size`` is global.
        snapshot_every: keep every k-th epoch's checkpoint in the run folder (``epoch-NNNN/model``)
            for CKA across epochs; 0 = keep only the last and the best.
    """

    dataset: str = "shapes"
    dataset_options: dict = field(default_factory=dict)
    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    method: str = "standard"
    norm: str = "linf"
    eps: float = 8 / 255
    steps: int = 7
    alpha: float | None = None
    trades_beta: float = 6.0
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    train_size: int | None = None
    eval_size: int = 256
    eval_steps: int = 10
    name: str | None = None
    snapshot_every: int = 0
    workers: int = 1

    # ----------------------------------------------------------------- derived values
    @property
    def attack_steps(self) -> int:
        """PGD steps used while training (``fast`` = 1, ``standard`` = 0; ``engine.catalogue.training_attack``)."""
        return catalogue.training_attack(self.method, self.eps, self.steps, self.alpha)[0]

    @property
    def attack_alpha(self) -> float:
        """Step size used while training (the explicit ``alpha`` or the method's default)."""
        return catalogue.training_attack(self.method, self.eps, self.steps, self.alpha)[1]

    @property
    def output_name(self) -> str:
        """The checkpoint stem: ``name`` or ``<dataset>-<arch>-<method>[-<norm>-eps<eps>]-s<seed>``."""
        if self.name:
            return self.name
        arch = self.arch or "default"
        threat = "" if self.method == "standard" else f"-{self.norm}-eps{self.eps:.4g}"
        return f"{self.dataset}-{arch}-{self.method}{threat}-s{self.seed}"

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-able dict of every field."""
        return asdict(self)

    def to_json(self) -> str:
        """The config as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """Build a config from a dict, refusing unknown keys; call :meth:`validate` for ranges."""
        if not isinstance(data, dict):
            raise InvalidParameterError(f"a training config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidParameterError(
                f"unknown training config key(s) {unknown}; valid keys: {', '.join(sorted(known))}"
            )
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        """Parse JSON text (data only, never evaluated) into a config."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidParameterError(f"training config is not valid JSON: {exc}") from exc
        return cls.from_dict(data)

    # ----------------------------------------------------------------- validation
    def validate(self, check_registries: bool = True) -> "TrainConfig":
        """Check every field; return ``self`` or raise :class:`InvalidParameterError` naming the field.

        Args:
            check_registries: also check ``dataset``/``arch`` against the engine's registries.
        """
        _check_choice("method", self.method, tuple(METHODS))
        _check_choice("norm", self.norm, NORMS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_number("eps", self.eps, low=0.0, high=None if self.norm == "l2" else 1.0)
        if self.method != "standard" and self.eps <= 0:
            raise InvalidParameterError(f"eps must be > 0 for method {self.method!r} (got {self.eps})")
        _check_int("steps", self.steps, low=1, high=1000)
        if self.alpha is not None:
            _check_number("alpha", self.alpha, low=0.0, high=None, strict_low=True)
        _check_number("trades_beta", self.trades_beta, low=0.0, high=1000.0, strict_low=True)
        _check_int("epochs", self.epochs, low=1, high=10000)
        _check_int("batch_size", self.batch_size, low=1, high=65536)
        _check_number("lr", self.lr, low=0.0, high=10.0, strict_low=True)
        _check_number("momentum", self.momentum, low=0.0, high=1.0)
        _check_number("weight_decay", self.weight_decay, low=0.0, high=1.0)
        _check_number("warmup_epochs", self.warmup_epochs, low=0.0, high=float(self.epochs))
        _check_int("seed", self.seed, low=0, high=2**31 - 1)
        _check_int("eval_size", self.eval_size, low=0, high=1_000_000)
        _check_int("eval_steps", self.eval_steps, low=1, high=1000)
        _check_int("snapshot_every", self.snapshot_every, low=0, high=10000)
        _check_int("workers", self.workers, low=1, high=MAX_WORKERS)
        if self.train_size is not None:
            _check_int("train_size", self.train_size, low=1, high=100_000_000)
        if not isinstance(self.amp, bool):
            raise InvalidParameterError(f"amp must be true or false, got {self.amp!r}")
        for key in ("dataset_options", "arch_kwargs"):
            if not isinstance(getattr(self, key), dict):
                raise InvalidParameterError(f"{key} must be a JSON object, got {getattr(self, key)!r}")
        if not isinstance(self.device, str) or not self.device:
            raise InvalidParameterError(f"device must be a name such as 'auto' or 'cpu', got {self.device!r}")
        if self.name is not None and (not isinstance(self.name, str) or not _NAME_RE.match(self.name)):
            raise InvalidParameterError(
                f"name {self.name!r} must be 1-100 letters, digits, '.', '_' or '-' (a file stem)"
            )
        if check_registries:
            self._check_registries()
        return self

    def _check_registries(self) -> None:
        from engine.data import get_spec
        from engine.models import ARCHITECTURES

        if not isinstance(self.dataset, str):
            raise InvalidParameterError(f"dataset must be a name, got {self.dataset!r}")
        get_spec(self.dataset)
        if self.arch is not None:
            _check_choice("arch", self.arch, tuple(ARCHITECTURES))


def _check_choice(key: str, value, choices: tuple) -> None:
    if value not in choices:
        raise InvalidParameterError(f"{key} must be one of {', '.join(map(str, choices))}; got {value!r}")


def _check_number(key: str, value, low: float, high: float | None, strict_low: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidParameterError(f"{key} must be a finite number, got {value!r}")
    if value < low or (strict_low and value == low) or (high is not None and value > high):
        lo = f"> {low}" if strict_low else f">= {low}"
        hi = f" and <= {high}" if high is not None else ""
        raise InvalidParameterError(f"{key} must be {lo}{hi}; got {value!r}")


def _check_int(key: str, value, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidParameterError(f"{key} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise InvalidParameterError(f"{key} must be between {low} and {high}; got {value}")
