"""The attack registry (name -> class) and per-dataset default parameters.

``ATTACKS`` fills the dashboard's select box and parametrises the tests; its names are also in
``engine.catalogue.ATTACKS`` (the CLI's ``--attack`` choices and request checks, without torch).
A new attack is one entry here (``ATTACKS`` and ``EXPOSED``) and one name in the catalogue; the
registry checks that they agree when it is imported.
"""
from __future__ import annotations

import dataclasses

from engine.attacks.apgd import APGD, APGDDLR, APGDT
from engine.attacks.autoattack import VERSIONS as AUTOATTACK_VERSIONS, AutoAttack
from engine.attacks.base import Attack, check_eps
from engine.attacks.deepfool import DeepFool
from engine.attacks.fab import FAB, FABT
from engine.attacks.penalty import CW, LBFGS
from engine.attacks.pgd import FGSM, PGD
from engine.attacks.square import Square
from engine.attacks.steps import STEPS
from engine.catalogue import ATTACKS as ATTACK_NAMES, AUTOATTACK_FAMILY as FAMILY_NAMES
from engine.catalogue import AUTOATTACK_VERSIONS as VERSION_NAMES, NORMS, require_names
from engine.data.registry import DATASETS as DATASET_SPECS
from engine.errors import InvalidParameterError

ATTACKS: dict[str, type[Attack]] = {
    "fgsm": FGSM, "pgd": PGD, "lbfgs": LBFGS, "cw": CW, "deepfool": DeepFool,
    "apgd-ce": APGD, "apgd-dlr": APGDDLR, "apgd-t": APGDT, "fab": FAB, "fab-t": FABT, "square": Square,
    "autoattack": AutoAttack,
}
#: the attacks of the AutoAttack family (evaluated attack by attack: engine.attacks.evaluate_autoattack)
AUTOATTACK_FAMILY = FAMILY_NAMES

#: the usual ε per dataset and norm (Madry et al.: 0.3 ℓ∞ on MNIST, 8/255 ℓ∞ on CIFAR-10)
DEFAULT_EPS: dict[str, dict[str, float]] = {
    "mnist": {"linf": 0.3, "l2": 2.0},
    "fashion-mnist": {"linf": 0.1, "l2": 1.5},
    "cifar10": {"linf": 8 / 255, "l2": 0.5},
    "shapes": {"linf": 8 / 255, "l2": 0.5},
    "imagefolder": {"linf": 4 / 255, "l2": 3.0},
}
FALLBACK_EPS = {"linf": 8 / 255, "l2": 0.5}

#: the parameters the dashboard and CLI expose per attack (others keep their class defaults)
EXPOSED: dict[str, tuple[str, ...]] = {
    "fgsm": ("eps", "targeted"),
    "pgd": ("eps", "norm", "steps", "alpha", "restarts", "random_start", "targeted", "early_stop"),
    "lbfgs": ("search_steps", "initial_const", "max_iter"),
    "cw": ("steps", "lr", "kappa", "search_steps", "initial_const", "targeted"),
    "deepfool": ("steps", "overshoot", "norm"),
    "apgd-ce": ("eps", "norm", "steps", "restarts", "seed"),
    "apgd-dlr": ("eps", "norm", "steps", "restarts", "seed"),
    "apgd-t": ("eps", "norm", "steps", "n_target_classes", "seed"),
    "fab": ("eps", "norm", "steps", "restarts", "seed"),
    "fab-t": ("eps", "norm", "steps", "n_target_classes", "seed"),
    "square": ("eps", "norm", "queries", "p_init", "restarts", "seed"),
    "autoattack": ("eps", "norm", "version", "seed"),
}

require_names(ATTACKS, ATTACK_NAMES, "engine.attacks.ATTACKS vs engine.catalogue.ATTACKS")
require_names(EXPOSED, ATTACK_NAMES, "engine.attacks.EXPOSED vs engine.catalogue.ATTACKS")
require_names([n for n in ATTACKS if n in AUTOATTACK_FAMILY], AUTOATTACK_FAMILY,
              "engine.attacks.ATTACKS vs engine.catalogue.AUTOATTACK_FAMILY")
require_names(STEPS, NORMS, "engine.attacks.STEPS vs engine.catalogue.NORMS")
require_names(AUTOATTACK_VERSIONS, VERSION_NAMES,
              "engine.attacks.AUTOATTACK_VERSIONS vs engine.catalogue.AUTOATTACK_VERSIONS")


def get_attack_class(name: str) -> type[Attack]:
    """The attack class registered under ``name`` (InvalidParameterError listing the names)."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise InvalidParameterError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}") from None


def default_eps(dataset: str | None, norm: str = "linf") -> float:
    """The customary ε for ``dataset`` under ``norm`` (8/255 ℓ∞ / 0.5 ℓ₂ for unknown datasets)."""
    return DEFAULT_EPS.get(dataset or "", FALLBACK_EPS).get(norm, FALLBACK_EPS.get(norm, 0.5))


def default_params(name: str, dataset: str | None = None, norm: str | None = None) -> dict:
    """The exposed parameters of attack ``name`` with their defaults for ``dataset``.

    ``eps`` follows :data:`DEFAULT_EPS`; ``alpha`` is None (meaning 2.5·ε/steps).
    """
    cls = get_attack_class(name)
    fields = {f.name: f.default for f in dataclasses.fields(cls)}
    params = {key: fields[key] for key in EXPOSED[name]}
    if norm is not None and "norm" in params:
        params["norm"] = norm
    if "eps" in params:
        params["eps"] = default_eps(dataset, params.get("norm", "linf"))
    return params


def make_attack(name: str, dataset: str | None = None, **params) -> Attack:
    """Build attack ``name`` from its per-dataset defaults overridden by ``params`` (None = default).

    Raises InvalidParameterError for an unknown attack or parameter, or an out-of-range value
    (bounds in :mod:`engine.attacks.base`: steps, restarts, and ε at most 1 for ℓ∞ or the image
    cube's diameter sqrt(C·H·W) for ℓ₂, checked here against ``dataset``'s image shape).
    """
    cls = get_attack_class(name)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidParameterError(
            f"attack {name!r} does not take {', '.join(unknown)}; it takes {', '.join(sorted(known))}"
        )
    given = {k: v for k, v in params.items() if v is not None}
    kwargs = default_params(name, dataset, given.get("norm"))
    kwargs.update(given)
    attack = cls(**kwargs)
    shape = getattr(DATASET_SPECS.get(dataset or ""), "input_shape", None)
    if shape is not None and attack.bounded and getattr(attack, "eps", None) is not None:
        check_eps(attack.eps, getattr(attack, "norm", "linf"), shape)  # ℓ₂ radius vs the dataset's images
    return attack
