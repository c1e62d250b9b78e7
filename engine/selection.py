"""Which models and dataset the dashboard opens with (plain logic, testable without a UI)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from engine.checkpoints.card import ModelCard

OFFLINE_DEFAULT = "shapes"
PREFERRED_DATASETS = ("mnist", OFFLINE_DEFAULT)


def training_method(card: ModelCard) -> str:
    """The card's training method ("standard", "pgd", "trades", "fast", "advprop", ...)."""
    return card.training.method


#: Training methods whose model is meant to resist attacks. AdvProp trains on adversarial
#: examples too, but through an auxiliary BatchNorm: its deployed (main-BN) model serves clean
#: inputs and is not robust, so it is neither the "standard" nor the "robust" side of a pair.
ROBUST_METHODS = ("pgd", "trades", "fast", "adversarial")  # "adversarial": an imported robust zoo model


def is_robust(card: ModelCard) -> bool:
    """True when the card records adversarial training meant for robustness (PGD, TRADES, fast-AT)."""
    return training_method(card) in ROBUST_METHODS


def threat_of(card: ModelCard) -> tuple[str | None, float | None]:
    """(norm, ε) of the card's adversarial training, or (None, None) for standard training (whose
    config may still carry an unused default ε). AdvProp reports the ε its auxiliary-BN examples
    were crafted at; for the ε the deployed model is robust to use :func:`robust_threat`."""
    return card.training.threat()


#: Training methods whose deployed model learnt from clean images only: standard training, and
#: AdvProp (its adversarial examples went through the auxiliary BatchNorm, which is dropped).
CLEAN_METHODS = ("standard", "advprop")


def robust_threat(card: ModelCard) -> tuple[str | None, float | None]:
    """(norm, ε) the deployed model was trained to resist: (None, 0.0) for standard training and
    AdvProp (clean models, at ε = 0 on an ε axis), else the card's training threat (PGD, TRADES,
    fast-AT, or an imported recipe that records one; (None, None) when it does not)."""
    if training_method(card) in CLEAN_METHODS:
        return None, 0.0
    return threat_of(card)


def describe_recipe(card: ModelCard) -> str:
    """A short recipe label, e.g. "standard" or "pgd ℓ∞ ε=0.3" (ε only for adversarial training)."""
    return card.describe_recipe()


def describe_attack(card: ModelCard) -> str:
    """The attack behind a card's robust accuracy, e.g. "PGD-40 ℓ∞ ε=0.3" ("" when none)."""
    attack = card.metrics.attack
    return attack.label() if attack is not None else ""


def model_title(slot: str, card: ModelCard) -> str:
    """How pages name model ``slot``: "A: name (recipe)"."""
    return f"{slot}: {card.title} ({describe_recipe(card)})"


@dataclass(frozen=True)
class DefaultChoice:
    """The opening state: dataset, model A (standard) and B (robust) paths, and why."""

    dataset: str
    a: str | None
    b: str | None
    reason: str


def is_shipped(path: Any) -> bool:
    """Whether the checkpoint at ``path`` is one of the shipped zoo's: its recipe is committed
    beside it (``<folder>/recipes/<name>.json``), unlike a user's training output or upload."""
    path = Path(path)
    return (path.parent / "recipes" / f"{path.stem}.json").is_file()


def _preference(info: Any) -> tuple[int, int]:
    """Sort key of a default-pair candidate: shipped checkpoints first, a run's ``-best`` snapshot last."""
    return (0 if is_shipped(info.path) else 1, 1 if Path(str(info.path)).stem.endswith("-best") else 0)


def pair_for(dataset: str, infos: Sequence[Any]) -> tuple[str | None, str | None]:
    """Paths of the standard and the robust checkpoint trained on ``dataset`` a page opens with:
    the shipped pair when there is one (never a user's training output ahead of it), else the
    first of each in listing order."""
    on_set = sorted((i for i in infos if getattr(i, "card", None) is not None and i.card.dataset == dataset),
                    key=_preference)
    standard = next((str(i.path) for i in on_set if training_method(i.card) == "standard"), None)
    robust = next((str(i.path) for i in on_set if is_robust(i.card)), None)
    return standard, robust


def choose_default(infos: Sequence[Any], available: dict[str, bool]) -> DefaultChoice:
    """Pick MNIST's standard/robust pair when its data is present, else the offline ``shapes``.

    Args:
        infos: checkpoint listings with ``.path`` and ``.card`` (see ``list_checkpoints``).
        available: dataset name -> whether its files are present (or downloadable).
    """
    usable = [i for i in infos if getattr(i, "card", None)]
    for name in PREFERRED_DATASETS:
        a, b = pair_for(name, usable)
        if available.get(name, name == OFFLINE_DEFAULT) and (a or b):
            reason = "" if name != OFFLINE_DEFAULT else _offline_reason(available)
            return DefaultChoice(name, a, b, reason)
    a, b = pair_for(OFFLINE_DEFAULT, usable)
    first = str(usable[0].path) if usable else None
    return DefaultChoice(OFFLINE_DEFAULT, a or first, b, _offline_reason(available))


def _offline_reason(available: dict[str, bool]) -> str:
    """Explain why the dashboard fell back to the synthetic dataset."""
    if available.get("mnist"):
        return "No MNIST checkpoint pair found, so the synthetic `shapes` dataset is shown."
    return (
        "MNIST files were not found (set ROBUSTSCOPE_DATA to a folder holding MNIST/raw, or go "
        "online to download it), so the dashboard opens on the synthetic, offline `shapes` dataset."
    )


def incompatibility(card: ModelCard, spec: Any, classes: bool = True) -> str | None:
    """Why a model (by its card) cannot run on a dataset (by its spec), or None when it can.

    Args:
        classes: also require the same number of classes (accuracy, attacks and attributions
            use the dataset's labels as the model's classes). ``False`` checks the input shape
            only: enough for label-free comparisons such as CKA, where :func:`class_mismatch`
            gives the warning to show instead.
    """
    shape = tuple(card.input_shape)
    if tuple(spec.input_shape) != shape:
        return (f"{card.title} takes inputs of shape {shape}, but `{spec.name}` "
                f"images are {tuple(spec.input_shape)}; pick the dataset it was trained on "
                f"(`{card.dataset or '?'}`).")
    return class_mismatch(card, spec) if classes else None


def class_mismatch(card: ModelCard, spec: Any) -> str | None:
    """Why a model's classes are not the dataset's labels (a different count), or None."""
    if card.num_classes != spec.num_classes:
        return (f"{card.title} has {card.num_classes} classes but `{spec.name}` has "
                f"{spec.num_classes}; pick `{card.dataset or '?'}`.")
    return None


def check_compatible(checkpoints: Sequence[Any], spec: Any, classes: bool = True) -> list[str]:
    """Refuse models that cannot run on the dataset ``spec``; return the notes to show.

    The one compatibility check of the CLI, the analyses and the pages.

    Args:
        checkpoints: loaded checkpoints (``.card``, ``.name``).
        spec: the dataset's ``DatasetSpec``.
        classes: a different class count is an error (``True``: the caller uses the labels), or
            only a note (``False``: label-free analyses such as CKA).

    Returns:
        The notes, each once (class count or training set differ).

    Raises:
        InvalidParameterError: an input-shape mismatch (or a class-count one when ``classes``).
    """
    from engine.errors import InvalidParameterError

    notes: list[str] = []
    for loaded in checkpoints:
        problem = incompatibility(loaded.card, spec, classes=classes)
        if problem:
            raise InvalidParameterError(problem)
        note = class_mismatch(loaded.card, spec)
        if note is None and loaded.card.dataset and loaded.card.dataset != spec.name:
            note = (f"{loaded.name} was trained on `{loaded.card.dataset}`, not `{spec.name}`: its classes "
                    "are not this dataset's labels")
        if note and note not in notes:
            notes.append(note)
    return notes
