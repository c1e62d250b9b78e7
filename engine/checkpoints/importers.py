"""Importing checkpoints made elsewhere: plain/torchvision state dicts, MadryLab ``robustness``,
RobustBench.

Every format ends as a state dict for an ``engine.models.Classifier`` of the architecture the user
names (``--arch``); the normalisation comes from the file when it records one (our own
``normalize.*`` buffers, robustness' ``normalizer.new_mean/new_std``), else from the dataset spec.
Files are read with ``torch.load(weights_only=True)`` only; see ``engine.checkpoints.safe_io``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from engine.checkpoints.card import make_card
from engine.checkpoints.safe_io import read_weights
from engine.checkpoints.store import LoadedCheckpoint, checkpoint_stem, check_state_dict, read_card, save_checkpoint
from engine.errors import CheckpointError, InvalidParameterError

#: Keys under which training scripts nest the state dict, tried in order.
CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "net")
#: Prefixes of wrapper modules (DataParallel's ``module.``, wrappers' ``model.``) stripped when
#: every key carries them.
WRAPPER_PREFIXES = ("module.", "model.")
#: robustness: the classifier is ``module.model.*``; these copies/buffers are dropped.
ROBUSTNESS_MODEL = "model."
ROBUSTNESS_DROPPED = ("attacker.", "normalizer.")
ROBUSTNESS_NORMALIZER = ("normalizer.new_mean", "normalizer.new_std")


@dataclass
class ImportedState:
    """A state dict ready for a Classifier, with the normalisation found in the file (or None).

    ``full``: the keys already include ``normalize.*`` and ``net.*`` (our own Classifier state
    dict); otherwise they are the net's keys and get the ``net.`` prefix.
    """

    tensors: dict[str, torch.Tensor]
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    full: bool = False


def _tensors_only(mapping: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {str(k): v for k, v in mapping.items() if isinstance(v, torch.Tensor)}


def _container(contents: Any, where: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded file (the file itself, a nested dict, or a pickled module)."""
    if isinstance(contents, torch.nn.Module):
        return _tensors_only(contents.state_dict())
    if not isinstance(contents, Mapping):
        raise CheckpointError(f"{where} holds a {type(contents).__name__}, not a state dict")
    for key in CONTAINER_KEYS:
        inner = contents.get(key)
        if isinstance(inner, torch.nn.Module):
            return _tensors_only(inner.state_dict())
        if isinstance(inner, Mapping) and _tensors_only(inner):
            return _tensors_only(inner)
    tensors = _tensors_only(contents)
    if not tensors:
        raise CheckpointError(
            f"{where} holds no tensors (top-level keys: {', '.join(map(str, list(contents)[:8]))})"
        )
    return tensors


def _strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in tensors.items()}


def _strip_wrappers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.``/``model.`` prefixes that every key carries (repeatedly)."""
    changed = True
    while changed and tensors:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in tensors):
                tensors, changed = _strip_prefix(tensors, prefix), True
    return tensors


def _as_classifier_state(tensors: dict[str, torch.Tensor]) -> ImportedState:
    """Our own Classifier state dict (normalize.* + net.*) or a bare net state dict."""
    if "normalize.mean" in tensors and any(k.startswith("net.") for k in tensors):
        return ImportedState(tensors, tensors["normalize.mean"], tensors["normalize.std"], full=True)
    return ImportedState(tensors)


def convert_plain(tensors: dict[str, torch.Tensor]) -> ImportedState:
    """A plain / torchvision / RobustBench state dict, possibly ``module.``-prefixed."""
    return _as_classifier_state(_strip_wrappers(tensors))


def convert_robustness(tensors: dict[str, torch.Tensor]) -> ImportedState:
    """MadryLab ``robustness``: keep ``module.model.*``, drop the attacker copy and the normalizer
    (whose ``new_mean``/``new_std`` give the normalisation)."""
    tensors = _strip_prefix(tensors, "module.")
    mean, std = (tensors.get(k) for k in ROBUSTNESS_NORMALIZER)
    kept = {k[len(ROBUSTNESS_MODEL):]: v for k, v in tensors.items() if k.startswith(ROBUSTNESS_MODEL)}
    if not kept:
        raise CheckpointError("no 'module.model.*' weights found: this is not a robustness-library checkpoint")
    return ImportedState(kept, mean, std)


def detect_format(tensors: Mapping[str, torch.Tensor]) -> str:
    """"robustness" when the keys carry its attacker/normalizer/model prefixes, else "plain"."""
    keys = [k[len("module."):] if k.startswith("module.") else k for k in tensors]
    if any(k.startswith(ROBUSTNESS_DROPPED) for k in keys) and any(k.startswith(ROBUSTNESS_MODEL) for k in keys):
        return "robustness"
    return "plain"


#: Import format name -> converter.
FORMATS: dict[str, Callable[[dict[str, torch.Tensor]], ImportedState]] = {
    "plain": convert_plain,
    "torchvision": convert_plain,
    "robustbench": convert_plain,
    "robustness": convert_robustness,
}


def _dataset_spec(dataset):
    if hasattr(dataset, "input_shape") and hasattr(dataset, "num_classes"):
        return dataset
    from engine.data import get_spec  # lazy: engine.data is a separate part

    return get_spec(dataset)


def _values(tensor, fallback) -> list[float]:
    return [float(v) for v in (tensor.flatten().tolist() if tensor is not None else fallback)]


def import_checkpoint(
    src: str | os.PathLike,
    arch: str,
    dataset,
    fmt: str = "auto",
    allow_pickle: bool = False,
    arch_kwargs: dict | None = None,
    dest: str | os.PathLike | None = None,
) -> LoadedCheckpoint:
    """Load a checkpoint made elsewhere as a RobustScope model (optionally saving it in our format).

    Args:
        src: ``.pt``/``.pth``/``.ckpt``/``.bin``/``.safetensors`` file.
        arch: architecture name (``engine.models.ARCHITECTURES``) whose keys the weights use.
        dataset: dataset name (``engine.data.get_spec``; gives classes, input shape, mean/std)
            or a ``DatasetSpec``.
        fmt: "auto" (detect), "plain", "torchvision", "robustness" or "robustbench".
        allow_pickle: DANGEROUS opt-in for files that need arbitrary unpickling (runs code from
            the file). Default: such files raise ``UnsafeCheckpointError`` and nothing runs.
        arch_kwargs: architecture options, e.g. ``{"depth": 20, "width": 2}``. Dual BN is
            detected from ``*.main.*``/``*.aux.*`` keys.
        dest: if given, also save the converted checkpoint there (stem or ``.safetensors``).

    Returns:
        :class:`LoadedCheckpoint` (model in eval mode on CPU; card from ``make_card`` with
        ``source`` = original file, format and sha256; ``path`` = ``src``, or the saved file).

    Raises:
        UnsafeCheckpointError: the file needs unpickling and ``allow_pickle`` is False.
        CheckpointError: unreadable file, or weights that do not fit the architecture (missing/
            unexpected keys and shape mismatches named).
        InvalidParameterError: unknown format, architecture, option or dataset.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise InvalidParameterError(f"unknown checkpoint format {fmt!r}; use auto, {', '.join(FORMATS)}")
    spec = _dataset_spec(dataset)
    src = Path(src)
    contents, digest = read_weights(src, allow_pickle=allow_pickle)
    tensors = _container(contents, src)
    detected = detect_format(tensors) if fmt == "auto" else fmt
    state = FORMATS[detected](tensors)
    model = _build_for(arch, spec, state, arch_kwargs or {})
    full = state.tensors if state.full else {**_normalize_state(model), **{f"net.{k}": v for k, v in state.tensors.items()}}
    check_state_dict(model, full, str(src))
    model.load_state_dict(full)
    model.eval()
    card = make_card(
        model, spec.name, name=src.stem, description=f"imported from {src.name} ({detected} format)",
        class_names=list(spec.class_names) if len(spec.class_names) == model.num_classes else None,
        training={"method": "unknown", "note": "imported: the training recipe is not recorded in the file"},
        source={"file": str(src), "format": detected, "sha256": digest},
    )
    loaded = LoadedCheckpoint(model=model, card=card, path=src, sha256=digest)
    return save_imported(loaded, dest) if dest is not None else loaded


def _normalize_state(model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith("normalize.")}


def _build_for(arch: str, spec, state: ImportedState, arch_kwargs: dict):
    from engine.models import build_model

    dual = any(k.endswith((".main.running_mean", ".aux.running_mean")) for k in state.tensors)
    mean = _values(state.mean, spec.mean)
    std = _values(state.std, spec.std)
    return build_model(arch, spec.num_classes, spec.input_shape, mean, std, dual_bn=dual, **arch_kwargs)


def save_imported(loaded: LoadedCheckpoint, dest: str | os.PathLike) -> LoadedCheckpoint:
    """Save an imported checkpoint in our format at ``dest`` (stem or ``.safetensors``).

    Returns:
        The checkpoint as saved: same model, the card with ``name`` (the new stem) and
        ``weights_sha256``, ``path`` = the new ``.safetensors`` file, its sha256.
    """
    name = checkpoint_stem(Path(dest)).name
    path = save_checkpoint(loaded.model, dict(loaded.card, name=name), dest)
    card = read_card(path.with_suffix(".json"))
    return LoadedCheckpoint(model=loaded.model, card=card, path=path, sha256=card["weights_sha256"])
