"""What the Attack Lab's analyses (``craft``, ``eps_sweep``, ``transfer``) share: their models by
slot, their images, their attack, the seeded RNG around it, and the models' part of their JSON.

Each of the three is one engine call (``engine.attacks.craft_and_compare`` / ``eps_sweep`` /
``transfer_matrix``) on models named by slot (A, B, ... in request order,
``engine.analysis.requests.SLOTS``).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from engine.analysis.base import AnalysisCancelled, ModelRef
from engine.analysis.fields import MAX_SEED, check_dataset, check_float, check_int
from engine.errors import InvalidParameterError

#: the Attack Lab's model slots, in request order: the first model is A, the second B ...
SLOTS = "ABCDEFGH"


_ATTACKPARAM_TYPES = (bool, int, float, str)


def attack_params(params: dict | None) -> tuple[tuple[str, object], ...]:
    """An attack's ``make_attack`` keywords as a request holds them: ``((name, value), ...)``
    sorted by name, None values dropped (so equal settings give equal result keys)."""
    return tuple(sorted((k, v) for k, v in (params or {}).items() if v is not None))


def _check_slots(models, low: int = 1) -> None:
    if not isinstance(models, tuple) or not low <= len(models) <= len(SLOTS):
        raise InvalidParameterError(f"models must list {low} to {len(SLOTS)} checkpoints")


@dataclass(frozen=True)
class AttackChoice:
    """What the Attack Lab's requests share: the models (slots A, B, ...) on a dataset, an
    ``engine.attacks.ATTACKS`` name (checked when the analysis runs), its parameters as
    :func:`attack_params` pairs (unset: the attack's per-dataset default) and (each request's
    ``seed`` field) the seed of torch's RNG around the attack (random starts repeat)."""

    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    attack: str = "pgd"
    params: tuple[tuple[str, object], ...] = ()

    def _check_models_and_attack(self, refused: tuple[str, ...] = ()) -> None:
        """Check the models, the dataset and the attack (``refused``: parameters it sets itself)."""
        _check_slots(self.models)
        check_dataset(self.dataset)
        self._check_attack(refused)

    def _check_attack(self, refused: tuple[str, ...] = ()) -> None:
        if not isinstance(self.attack, str) or not self.attack:
            raise InvalidParameterError(f"attack must be an attack name, got {self.attack!r}")
        if not isinstance(self.params, tuple) or len(self.params) > 64:
            raise InvalidParameterError(f"params must be a list of (name, value) pairs, got {self.params!r}")
        for item in self.params:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and item[0]
                    and isinstance(item[1], _ATTACKPARAM_TYPES)):
                raise InvalidParameterError(f"an attack parameter is (name, value), got {item!r}")
            if isinstance(item[1], float):
                check_float(item[0], item[1], -1e12, 1e12)
        names = [name for name, _ in self.params]
        if names != sorted(set(names)):
            raise InvalidParameterError(f"attack parameters must be sorted by name, each once, got {names}")
        given = [name for name in refused if name in names]
        if given:
            raise InvalidParameterError(f"{self.kind} sets {', '.join(given)} itself; leave it out of params")
        check_int("seed", self.seed, 0, MAX_SEED)

    def attack_kwargs(self) -> dict:
        """The attack's parameters as ``engine.attacks.make_attack`` keywords."""
        return dict(self.params)

    def slots(self) -> tuple[str, ...]:
        """The models' slot names (:data:`SLOTS`), in request order."""
        return tuple(SLOTS[:len(self.models)])


def build_attack(request, **override):
    """The request's attack (``engine.attacks.make_attack`` with its parameters and ``override``;
    InvalidParameterError for an unknown attack or a parameter it does not take)."""
    from engine.attacks import make_attack

    return make_attack(request.attack, request.dataset, **{**request.attack_kwargs(), **override})


def check(request) -> None:
    """Torch-side checks before a job is queued: the attack and its parameters exist."""
    build_attack(request)


def load_models(request, ctx, split: str = "test"):
    """``(slot -> model, the dataset's split, notes)``: every model loaded (``ctx.load``) and
    checked against the dataset (input shape and class count; notes when its classes differ)."""
    dataset = ctx.images(request.dataset, split)
    loaded, notes = ctx.models(request.models, dataset)
    return {slot: m.model for slot, m in zip(request.slots(), loaded)}, dataset, notes


def first_images(request, dataset):
    """The first ``request.n`` images of ``dataset`` (InvalidParameterError when it has fewer)."""
    from engine import data as edata

    if request.n > len(dataset):
        raise InvalidParameterError(f"n must be an integer in [1, {len(dataset)}] (the {request.dataset} "
                                    f"split's size), got {request.n}")
    return edata.take(dataset, request.n)


@contextmanager
def attacking(request, ctx):
    """The block that runs the attack: torch's RNG seeded with ``request.seed``, and a stop
    (``AttackCancelled``) turned into :class:`AnalysisCancelled` (nothing stored)."""
    from engine.attacks import AttackCancelled

    try:
        with ctx.seeded(request.seed):
            yield
    except AttackCancelled:
        raise AnalysisCancelled(f"{request.kind} stopped before it finished; nothing was stored") from None


def models_json(request) -> list[dict]:
    """``[{"slot", "checkpoint", "bn_branch"}, ...]``: which model each slot is (torch-free)."""
    return [{"slot": slot, "checkpoint": ref.path, "bn_branch": ref.branch}
            for slot, ref in zip(request.slots(), request.models)]
