"""Making model cards from models: the torch side of :mod:`engine.checkpoints.card`.

The card module itself imports no torch (reading and validating a card needs none); the helpers
here read a card's structure fields from an ``engine.models.Classifier``.
"""
from __future__ import annotations

import platform
from datetime import datetime, timezone
from typing import Any, Mapping

from torch import nn

from engine.checkpoints.card import Metrics, ModelCard, Recipe
from engine.errors import CheckpointError, InvalidParameterError, RobustScopeError


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine how a checkpoint was made."""
    import safetensors
    import torch
    import torchvision

    from engine.version import __version__

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "safetensors": safetensors.__version__,
        "robustscope": __version__,
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
    training: Mapping[str, Any] | Recipe | None = None,
    metrics: Mapping[str, Any] | Metrics | None = None,
    source: Mapping[str, Any] | None = None,
) -> ModelCard:
    """Build the model card of ``model`` (an ``engine.models.Classifier``).

    Args:
        model: the classifier; arch, kwargs, shapes, mean/std and dual_bn are read from it.
        dataset: the dataset name it was trained on (e.g. "shapes", "mnist").
        name, description: shown in the dashboard; ``name`` defaults to the file stem on save.
        class_names: defaults to the dataset's (``engine.data.get_spec``), else "0", "1", ...
        training: the recipe: a RobustScope training run's ``{"config": TrainConfig.to_dict(),
            "status": ..., ...}`` (the typed fields are read from the config), or the fields
            themselves, e.g. ``{"method": "pgd", "eps": 0.3, "norm": "linf", "steps": 40}``.
        metrics: measured results, e.g. ``{"clean_acc": 0.98, "robust_acc": 0.91, "attack":
            AttackRecord(...).to_dict(), "history": [...]}``.
        source: where an imported model came from.

    Returns:
        A validated :class:`ModelCard`.

    Raises:
        InvalidParameterError: class names that do not fit, or values a card cannot hold.
    """
    fields_ = model_fields(model)
    names = list(class_names) if class_names is not None else _default_class_names(dataset, fields_["num_classes"])
    if len(names) != fields_["num_classes"]:
        raise InvalidParameterError(f"{len(names)} class names given for a model with {fields_['num_classes']} classes")
    data = {
        "name": name, "description": description, **fields_, "dataset": dataset,
        "class_names": [str(n) for n in names],
        "training": training.to_dict() if isinstance(training, Recipe) else dict(training or {}),
        "metrics": metrics.to_dict() if isinstance(metrics, Metrics) else dict(metrics or {}),
        "versions": library_versions(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": dict(source) if source is not None else None,
    }
    try:
        return ModelCard.from_dict(data, f"for {name or 'the model'}")
    except CheckpointError as exc:
        raise InvalidParameterError(str(exc)) from None


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


def merge_structure(card: ModelCard | Mapping[str, Any], model: nn.Module) -> ModelCard:
    """``card`` with its structure fields filled from ``model``; disagreeing fields raise.

    Raises:
        InvalidParameterError: the card says something else than the model (field named).
    """
    model_side = model_fields(model)
    given = card.to_dict() if isinstance(card, ModelCard) else dict(card)
    for key, value in model_side.items():
        if given.get(key) is not None and _normalised(key, given[key]) != _normalised(key, value):
            raise InvalidParameterError(f"model card field {key!r} is {given[key]!r} but the model has {value!r}")
    try:
        return ModelCard.from_dict({**given, **model_side}, f"for {given.get('name') or 'the model'}")
    except CheckpointError as exc:
        raise InvalidParameterError(str(exc)) from None
