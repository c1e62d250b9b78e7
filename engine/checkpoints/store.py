"""Our checkpoint format: ``NAME.safetensors`` (weights) + ``NAME.json`` (model card).

Saving is atomic: both files are first written to temporary files in the target folder, then
moved into place with ``os.replace`` — weights first, card last. A reader finds checkpoints through
their cards, so a new checkpoint appears only once it is complete. A process killed between the
two renames leaves new weights beside the old card; the next reader finds the new card's temp file
(whose ``weights_sha256`` matches the weights) and completes the publish, so a pair that does not
match is never served.

Loading is bounded: the card is validated (``engine.checkpoints.card``), the weights file's header
is checked (``engine.checkpoints.safe_io``), and the model is first built on the ``meta`` device
to compare its keys and shapes with the file's before any real memory is allocated.
"""
from __future__ import annotations

import contextlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import torch
from torch import nn

from engine.checkpoints.card import ModelCard
from engine.checkpoints.files import (  # noqa: F401 (WEIGHT_SUFFIXES, checkpoint_stem re-exported)
    CARD_SUFFIX,
    SAFETENSORS_SUFFIX,
    WEIGHT_SUFFIXES,
    checkpoint_files,
    checkpoint_stem,
    find_weights as _find_weights,
    read_card_file,
    sha256_file,
    with_suffix as _with_suffix,
)
from engine.checkpoints.making import merge_structure
from engine.checkpoints.safe_io import check_safetensors_header, parse_weights
from engine.errors import CheckpointError, InvalidParameterError, RobustScopeError, storage
from engine.fileio import FILE_MODE, TEMP_SUFFIX

CHECKPOINTS_ENV = "ROBUSTSCOPE_CHECKPOINTS"
UPLOADS_FOLDER = "uploads"
_MAX_NAMES_IN_ERROR = 8


@dataclass
class LoadedCheckpoint:
    """A loaded checkpoint.

    Attributes:
        model: the ``engine.models.Classifier`` in eval mode, taking (B, C, H, W) images in [0, 1].
        card: the model card (:class:`~engine.checkpoints.card.ModelCard`).
        path: the weights file.
        sha256: hex sha256 of the weights file's bytes.
        branch: the BatchNorm branch the model uses ("main"; "aux" for an AdvProp model's
            auxiliary branch, see ``engine.models.use_branch``).
    """

    model: nn.Module
    card: ModelCard
    path: Path
    sha256: str
    branch: str = "main"

    @property
    def name(self) -> str:
        """The card's name, else the file stem."""
        return self.card.name or self.path.stem

    @property
    def card_path(self) -> Path:
        """The model card file beside the weights."""
        return self.path.with_suffix(CARD_SUFFIX)


class CheckpointInfo(NamedTuple):
    """One entry of :func:`list_checkpoints`.

    Attributes:
        path: the weights file (or the card, when the weights are missing).
        name: the card's name, else the file stem.
        card: the :class:`ModelCard`, or None when it could not be read.
        error: why this checkpoint cannot be loaded, or None when it looks fine.
    """

    path: Path
    name: str
    card: ModelCard | None
    error: str | None = None


# ---------------------------------------------------------------------------------------------
# paths


def checkpoints_root() -> Path:
    """``$ROBUSTSCOPE_CHECKPOINTS``, else ``./checkpoints``."""
    env = os.environ.get(CHECKPOINTS_ENV)
    return Path(env) if env else Path("checkpoints")


#: ``(weights file, card file)`` of a checkpoint path (``engine.checkpoints.files.checkpoint_files``).
checkpoint_paths = checkpoint_files


# ---------------------------------------------------------------------------------------------
# save


def _temp_path(target: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    return Path(name)


def _write_weights(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """The safetensors bytes of ``tensors`` written by Python (so a full disk is an OSError with its
    errno, not the serialiser's own error)."""
    from safetensors.torch import save

    _write_bytes(save(tensors, metadata={"format": "pt", "producer": "robustscope"}), path)


def _write_text(text: str, path: Path) -> None:
    _write_bytes(text.encode("utf-8"), path)


def _write_bytes(data: bytes, path: Path) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as contiguous CPU tensors that share no memory (safetensors refuses sharing)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def _publish(pairs: list[tuple[Path, Path]]) -> None:
    """Move finished temp files into place, in order (weights before card), as mode 0644."""
    for temp, target in pairs:
        os.chmod(temp, FILE_MODE)
        os.replace(temp, target)


def save_checkpoint(model: nn.Module, card: ModelCard | Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Save ``model`` as ``PATH.safetensors`` + ``PATH.json``, atomically (see the module docstring).

    Args:
        model: an ``engine.models.Classifier``; its structure fields (arch, arch_kwargs,
            num_classes, input_shape, mean, std, dual_bn) are written into the card.
        card: the model card (see ``make_card``; a dict is validated); ``name`` defaults to the
            file stem and ``weights_sha256`` is set here.
        path: the stem, or a ``.safetensors``/``.json`` path; parent folders are created. An
            existing checkpoint there is replaced: callers that must not overwrite pick a free
            stem first (``engine.fileio.free_stem``).

    Returns:
        The path of the ``.safetensors`` file.

    Raises:
        InvalidParameterError: the card disagrees with the model or is not JSON-serialisable.
    """
    stem = checkpoint_stem(Path(path))
    weights_path, card_path = _with_suffix(stem, SAFETENSORS_SUFFIX), _with_suffix(stem, CARD_SUFFIX)
    full_card = merge_structure(card, model)
    full_card = full_card.replace(name=full_card.name or stem.name)
    full_card.to_json()  # fail on a bad card before touching the disk
    temps: list[Path] = []
    with storage(f"cannot save the checkpoint {stem}"):
        try:
            stem.parent.mkdir(parents=True, exist_ok=True)
            temps += [_temp_path(weights_path), _temp_path(card_path)]
            _write_weights(_cpu_state(model), temps[0])
            full_card = full_card.replace(weights_sha256=sha256_file(temps[0]))
            _write_text(full_card.to_json(), temps[1])
            _publish([(temps[0], weights_path), (temps[1], card_path)])
        finally:
            for temp in temps:
                temp.unlink(missing_ok=True)
    return weights_path


def update_card(path: str | os.PathLike, updates: Mapping[str, Any]) -> Path:
    """Merge ``updates`` into a checkpoint's card (top-level keys replaced), atomically.

    The weights are not touched; the card is validated, written to a temp file and renamed over
    the old one, so a crash leaves either the old or the new card, never a torn one.

    Returns:
        The card's path.
    """
    _, card_path = checkpoint_paths(path)
    card = ModelCard.from_dict({**read_card(card_path).to_dict(), **dict(updates)}, str(card_path))
    with storage(f"cannot update the card {card_path}"):
        temp = _temp_path(card_path)
        try:
            _write_text(card.to_json(), temp)
            _publish([(temp, card_path)])
        finally:
            temp.unlink(missing_ok=True)
    return card_path


# ---------------------------------------------------------------------------------------------
# load


#: Parse and validate a model card file (``engine.checkpoints.files.read_card_file``); bad JSON,
#: missing or out-of-bounds fields raise ``CheckpointError``.
read_card = read_card_file


def _interrupted_publish(card_path: Path, digest: str) -> Path | None:
    """A temp card left by a publish killed between its two renames whose weights are ``digest``."""
    for temp in sorted(card_path.parent.glob(f".{card_path.name}.*{TEMP_SUFFIX}")):
        try:
            if read_card(temp).weights_sha256 == digest:
                return temp
        except RobustScopeError:
            continue  # another, unfinished write: not the one that matches these weights
    return None


def recover_publishes(folder: str | os.PathLike) -> list[Path]:
    """Complete every publish in ``folder`` that was killed between its two renames (new weights,
    old card, the new card still in its temp file). Returns the cards put in place."""
    done = []
    for card_path in sorted(Path(folder).glob("*" + CARD_SUFFIX)):
        weights = _find_weights(checkpoint_stem(card_path))
        if weights is None or not any(card_path.parent.glob(f".{card_path.name}.*{TEMP_SUFFIX}")):
            continue
        try:
            _matching_card(weights, card_path, read_card(card_path), sha256_file(weights))
        except RobustScopeError:
            continue  # not an interrupted publish: the listing reports this checkpoint as broken
        done.append(card_path)
    return done


def _matching_card(weights_path: Path, card_path: Path, card: ModelCard, digest: str) -> ModelCard:
    """The card that belongs to the weights: ``card``, or the card of an interrupted publish
    (completed here). Weights that match neither raise ``CheckpointError``."""
    if card.weights_sha256 is None or card.weights_sha256 == digest:
        return card
    temp = _interrupted_publish(card_path, digest)
    if temp is None:
        raise CheckpointError(
            f"{weights_path} is not the file its card {card_path.name} was written for "
            "(sha256 differs): the weights were changed or damaged"
        )
    newer = read_card(temp)
    _publish([(temp, card_path)])
    return newer

def extract_tensors(contents: Any, where: Path) -> dict[str, torch.Tensor]:
    """The tensors of a loaded weights file (a state dict), refusing anything else."""
    if isinstance(contents, Mapping) and contents and all(isinstance(v, torch.Tensor) for v in contents.values()):
        return dict(contents)
    raise CheckpointError(f"{where} does not hold a plain state dict (name -> tensor)")


def _names(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - _MAX_NAMES_IN_ERROR} more)" if len(keys) > _MAX_NAMES_IN_ERROR else ""
    return ", ".join(keys[:_MAX_NAMES_IN_ERROR]) + more


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in (value.shape if isinstance(value, torch.Tensor) else value))


def check_state_dict(model: nn.Module, state: Mapping[str, Any], where: str) -> None:
    """Raise ``CheckpointError`` naming missing/unexpected keys and shape mismatches, if any.

    ``state`` maps names to tensors or to shapes (a file header's), so weights can be checked
    against a ``meta``-device model before anything is allocated.
    """
    expected = model.state_dict()
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    shapes = [
        f"{k}: file {_shape(state[k])} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(state))
        if _shape(state[k]) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    if shapes:
        more = f" (+{len(shapes) - _MAX_NAMES_IN_ERROR} more)" if len(shapes) > _MAX_NAMES_IN_ERROR else ""
        problems.append("shape mismatches: " + "; ".join(shapes[:_MAX_NAMES_IN_ERROR]) + more)
    if problems:
        raise CheckpointError(
            f"the weights in {where} do not match the architecture "
            f"({getattr(model, 'arch', type(model).__name__)}, options {getattr(model, 'arch_kwargs', {})}): "
            + "; ".join(problems)
        )


def _check_normalisation(card: ModelCard, state: Mapping[str, torch.Tensor], where: Path) -> None:
    for key in ("mean", "std"):
        stored = state.get(f"normalize.{key}")
        if stored is None:
            continue
        values = stored.flatten().tolist()
        wanted = getattr(card, key)
        if len(values) != len(wanted) or not all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6) for a, b in zip(values, wanted)):
            raise CheckpointError(f"model card {where} says {key}={list(wanted)} but the weights hold {key}={values}")


def use_branch(model: nn.Module, branch: str) -> nn.Module:
    from engine.models import use_branch as _use_branch

    return _use_branch(model, branch)


def build_from_card(card: ModelCard, where: Path, meta: bool = False) -> nn.Module:
    """A fresh Classifier with the structure the card describes (on the ``meta`` device: no memory)."""
    from engine.models import build_model

    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            return build_model(
                card.arch, card.num_classes, card.input_shape, card.mean, card.std,
                dual_bn=card.dual_bn, **dict(card.arch_kwargs),
            )
    except (InvalidParameterError, TypeError) as exc:
        raise CheckpointError(f"model card {where} describes a model that cannot be built: {exc}") from exc


def _resolve(device) -> torch.device:
    from engine.device import resolve_device

    return resolve_device(device)


def load(path: str | os.PathLike, device: str | torch.device = "cpu", allow_pickle: bool = False,
         bn_branch: str = "main") -> LoadedCheckpoint:
    """Load a RobustScope checkpoint.

    Args:
        path: the stem, the ``.safetensors`` (or ``.pt``) weights file, or the ``.json`` card.
        device: "cpu", "cuda", "auto", ... (see ``engine.device.resolve_device``).
        allow_pickle: only for ``.pt`` weights that need arbitrary unpickling (DANGEROUS, see
            ``engine.checkpoints.safe_io``); safetensors never need it.
        bn_branch: "main", or "aux" to inspect an AdvProp (dual-BN) model's auxiliary branch.

    Returns:
        :class:`LoadedCheckpoint` with the model in eval mode on ``device``.

    Raises:
        InvalidParameterError: ``bn_branch`` "aux" for a model without dual BatchNorm.
        CheckpointError: missing/corrupt/truncated/hostile files, a card that does not describe the
            weights (missing/unexpected keys and shape mismatches are named, checked before the
            model is allocated), a changed weights file.
        UnsafeCheckpointError: ``.pt`` weights that need unpickling, without ``allow_pickle``.
    """
    target = _resolve(device)
    weights_path, card_path = checkpoint_paths(path)
    card = read_card(card_path)
    header = check_safetensors_header(weights_path) if weights_path.suffix.lower() == SAFETENSORS_SUFFIX else None
    digest = sha256_file(weights_path)
    card = _matching_card(weights_path, card_path, card, digest)
    skeleton = build_from_card(card, card_path, meta=True)
    if header is not None:
        check_state_dict(skeleton, {k: shape for k, (_, shape) in header.items()}, str(weights_path))
    contents = parse_weights(weights_path, allow_pickle=allow_pickle)
    state = extract_tensors(contents, weights_path)
    check_state_dict(skeleton, state, str(weights_path))
    _check_normalisation(card, state, card_path)
    model = build_from_card(card, card_path)
    model.load_state_dict(state)
    model.to(target).eval()
    use_branch(model, bn_branch)
    return LoadedCheckpoint(model=model, card=card, path=weights_path, sha256=digest, branch=bn_branch)


# ---------------------------------------------------------------------------------------------
# list


def default_roots() -> list[Path]:
    """The checkpoints root and its ``uploads/`` folder."""
    root = checkpoints_root()
    return [root, root / UPLOADS_FOLDER]


def _info_for_card(card_path: Path) -> CheckpointInfo:
    stem = checkpoint_stem(card_path)
    weights = _find_weights(stem)
    try:
        card = read_card(card_path)
    except RobustScopeError as exc:
        return CheckpointInfo(weights or card_path, stem.name, None, str(exc))
    name = card.name or stem.name
    if weights is None:
        return CheckpointInfo(card_path, name, card, f"weights file missing (expected {_with_suffix(stem, SAFETENSORS_SUFFIX).name})")
    try:
        if weights.suffix.lower() == SAFETENSORS_SUFFIX:
            check_safetensors_header(weights)  # cheap: reads the header only
    except RobustScopeError as exc:
        return CheckpointInfo(weights, name, card, str(exc))
    return CheckpointInfo(weights, name, card, None)


def _orphan_weights(root: Path) -> list[CheckpointInfo]:
    infos = []
    for weights in sorted(root.iterdir()):
        if weights.suffix.lower() in WEIGHT_SUFFIXES and not _with_suffix(checkpoint_stem(weights), CARD_SUFFIX).exists():
            infos.append(CheckpointInfo(
                weights, weights.stem, None,
                "no model card beside it; import it with `python -m engine import FILE --arch A --dataset D`",
            ))
    return infos


def list_checkpoints(roots: str | os.PathLike | Iterable[str | os.PathLike] | None = None) -> list[CheckpointInfo]:
    """Every checkpoint found in ``roots`` (not recursive), without loading weights.

    Args:
        roots: a folder or folders; default ``$ROBUSTSCOPE_CHECKPOINTS`` (else ``./checkpoints``)
            and its ``uploads/`` folder. Missing folders are skipped.

    Returns:
        ``list[CheckpointInfo]`` ordered by folder then file name. Broken entries (unreadable card,
        missing weights, weights without a card) are included with ``error`` set, never raised.
    """
    if roots is None:
        folders = default_roots()
    elif isinstance(roots, (str, os.PathLike)):
        folders = [Path(roots)]
    else:
        folders = [Path(r) for r in roots]
    infos: list[CheckpointInfo] = []
    for folder in dict.fromkeys(f.resolve() for f in folders):
        if not folder.is_dir():
            continue
        infos += [_info_for_card(card) for card in sorted(folder.glob("*" + CARD_SUFFIX))]
        infos += _orphan_weights(folder)
    return infos
