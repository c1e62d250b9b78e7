"""The model card: one JSON file beside each weights file (DESIGN.md "Checkpoint model card").

Fields (``make_card`` fills them; ``save_checkpoint`` adds ``weights_sha256``)::

    format            "robustscope-checkpoint"      format_version  1
    name, description free text (name defaults to the file stem)
    arch, arch_kwargs engine.models.ARCHITECTURES key and its full keyword arguments
    dataset           engine.data dataset name the model was trained on
    input_shape       [C, H, W];  mean, std: per-channel normalisation (applied inside the model)
    num_classes, class_names
    dual_bn           true for AdvProp models (main/aux BatchNorm)
    training          recipe dict: method ("standard", "pgd", "trades", "fast", "advprop", ...),
                      eps, norm ("linf"/"l2"), steps, alpha, epochs, seed, bn_mode, ...
    metrics           measured metrics: clean_acc, robust_acc, attack (the exact attack used),
                      history (per-epoch list), ...
    versions          library versions at save time (python, torch, torchvision, safetensors, robustscope)
    created           ISO 8601 UTC time
    source            (imports) the original file, its format and sha256
    weights_sha256    sha256 of the weights file; the loader refuses weights that do not match
"""
from __future__ import annotations

import platform
from datetime import datetime, timezone
from typing import Any, Mapping

from torch import nn

from engine.errors import CheckpointError, InvalidParameterError, RobustScopeError

CARD_FORMAT = "robustscope-checkpoint"
CARD_VERSION = 1

#: Card fields the loader needs to rebuild the model.
REQUIRED_FIELDS = ("arch", "num_classes", "input_shape", "mean", "std")

#: Card fields that describe the model's structure (must agree with the model being saved).
STRUCTURE_FIELDS = ("arch", "arch_kwargs", "num_classes", "input_shape", "mean", "std", "dual_bn")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine how a checkpoint was made."""
    import safetensors
    import torch
    import torchvision

    import engine

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "safetensors": safetensors.__version__,
        "robustscope": engine.__version__,
    }


def model_fields(model: nn.Module) -> dict[str, Any]:
    """The structure fields of a card, read from an ``engine.models.Classifier``.

    Raises:
        InvalidParameterError: ``model`` is not a Classifier built by ``engine.models.build_model``.
    """
    missing = [a for a in ("arch", "arch_kwargs", "num_classes", "input_shape", "normalize") if not hasattr(model, a)]
    if missing:
        raise InvalidParameterError(
            f"expected a Classifier from engine.models.build_model (missing {', '.join(missing)}), "
            f"got {type(model).__name__}"
        )
    return {
        "arch": model.arch,
        "arch_kwargs": dict(model.arch_kwargs),
        "num_classes": int(model.num_classes),
        "input_shape": [int(s) for s in model.input_shape],
        "mean": [float(v) for v in model.normalize.mean.flatten().tolist()],
        "std": [float(v) for v in model.normalize.std.flatten().tolist()],
        "dual_bn": bool(getattr(model, "dual_bn", False)),
    }


def _default_class_names(dataset: str, num_classes: int) -> list[str]:
    """The dataset's class names when engine.data knows it and the count fits, else "0", "1", ..."""
    try:
        from engine.data import get_spec

        names = list(get_spec(dataset).class_names)
    except (ImportError, RobustScopeError, AttributeError):
        names = []
    return names if len(names) == num_classes else [str(i) for i in range(num_classes)]


def make_card(
    model: nn.Module,
    dataset: str,
    *,
    name: str | None = None,
    description: str = "",
    class_names: list[str] | None = None,
    training: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    source: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a model card for ``model`` (an ``engine.models.Classifier``).

    Args:
        model: the classifier; arch, kwargs, shapes, mean/std and dual_bn are read from it.
        dataset: the dataset name it was trained on (e.g. "shapes", "mnist").
        name, description: shown in the dashboard; ``name`` defaults to the file stem on save.
        class_names: defaults to the dataset's (``engine.data.get_spec``), else "0", "1", ...
        training: the recipe, e.g. ``{"method": "pgd", "eps": 0.3, "norm": "linf", "steps": 40,
            "alpha": 0.01, "epochs": 10, "seed": 0, "bn_mode": "main"}``.
        metrics: measured results, e.g. ``{"clean_acc": 0.98, "robust_acc": 0.91, "attack": {...},
            "history": [...]}``.
        source: where an imported model came from.

    Returns:
        A JSON-serialisable dict (see the module docstring for every field).
    """
    fields = model_fields(model)
    names = list(class_names) if class_names is not None else _default_class_names(dataset, fields["num_classes"])
    if len(names) != fields["num_classes"]:
        raise InvalidParameterError(
            f"{len(names)} class names given for a model with {fields['num_classes']} classes"
        )
    card = {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "name": name,
        "description": description,
        **fields,
        "dataset": dataset,
        "class_names": [str(n) for n in names],
        "training": dict(training or {}),
        "metrics": dict(metrics or {}),
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if source is not None:
        card["source"] = dict(source)
    return card


def _normalised(key: str, value: Any) -> Any:
    """A structure field in a comparable form (lists, floats rounded for mean/std)."""
    if key in ("mean", "std"):
        return [round(float(v), 6) for v in value]
    if key == "input_shape":
        return [int(v) for v in value]
    if key == "arch_kwargs":
        return dict(value or {})
    if key == "dual_bn":
        return bool(value)
    return value


def merge_structure(card: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
    """``card`` with its structure fields filled from ``model``; disagreeing fields raise.

    Raises:
        InvalidParameterError: the card says something else than the model (field named).
    """
    fields = model_fields(model)
    for key, value in fields.items():
        if key in card and card[key] is not None and _normalised(key, card[key]) != _normalised(key, value):
            raise InvalidParameterError(
                f"model card field {key!r} is {card[key]!r} but the model has {value!r}"
            )
    return {**card, **fields}


def check_card(card: Any, where: str) -> dict[str, Any]:
    """Check that ``card`` is a dict with every field the loader needs.

    Raises:
        CheckpointError: not a JSON object, or required fields missing (named).
    """
    if not isinstance(card, dict):
        raise CheckpointError(f"model card {where} is not a JSON object")
    missing = [f for f in REQUIRED_FIELDS if f not in card]
    if missing:
        raise CheckpointError(f"model card {where} lacks the field(s) {', '.join(missing)}")
    return card
