"""Add a user's checkpoint file to the uploads folder, validated and converted to our format.

Names are checked (``engine.fileio.check_name``: no paths, NUL bytes or over-long names) and an
existing checkpoint is never replaced: a taken name gets a free suffix (``NAME-2``, ...).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from engine import checkpoints as ckpt
from engine.checkpoints.card import ModelCard
from engine.checkpoints.importers import default_stem, is_weights_name, save_imported
from engine.checkpoints.safe_io import check_safetensors_header
from engine.errors import InvalidParameterError, RobustScopeError, StorageError, storage
from engine.fileio import MAX_NAME_LENGTH, check_name, free_stem, slug

#: Accepted weights file names (robustness' ``checkpoint.pt.best``/``.latest`` and ``.pth.tar`` too).
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".pth.tar", ".tar", ".ckpt", ".bin", ".pt.best", ".pt.latest")
#: Largest accepted upload: 2 GiB, enough for WRN-70-16 (~1.07 GB in fp32) and WRN-94-16 (~1.4 GB).
MAX_UPLOAD_BYTES = 2 << 30
#: Environment variable an operator sets to 1 to offer the dashboard's "allow arbitrary
#: unpickling" option (off by default: a pickled upload could run code on the server).
ALLOW_PICKLE_ENV = "ROBUSTSCOPE_ALLOW_PICKLE_UPLOADS"


def uploads_dir() -> Path:
    """Where uploaded checkpoints go: the ``uploads/`` folder of the checkpoints root."""
    return ckpt.checkpoints_root() / "uploads"


def pickle_uploads_allowed() -> bool:
    """True when the operator started the server with ``ROBUSTSCOPE_ALLOW_PICKLE_UPLOADS=1``."""
    return os.environ.get(ALLOW_PICKLE_ENV, "").strip() == "1"


def safe_name(name: str) -> str:
    """A file-system-safe checkpoint name made from an uploaded file's name (letters, digits,
    ``-``, ``_``, ``.``): ``model.pth.tar`` -> ``model``, ``checkpoint.pt.best`` -> ``checkpoint-best``."""
    if not isinstance(name, str) or "\x00" in name:
        raise InvalidParameterError(f"{name!r} does not give a usable checkpoint name")
    cleaned = default_stem(name)[:MAX_NAME_LENGTH].strip("-.")
    if not cleaned:
        raise InvalidParameterError(f"{name!r} does not give a usable checkpoint name")
    return check_name(cleaned, "checkpoint name")


def _size_text(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB"


def _check_upload(weights_name: str, weights: bytes) -> None:
    """Refuse unknown file types, empty files and files over the size limit."""
    if not isinstance(weights_name, str) or "\x00" in weights_name or len(weights_name) > 1024:
        raise InvalidParameterError("the uploaded file's name is not usable (NUL bytes or over 1024 characters)")
    if not is_weights_name(weights_name):
        raise InvalidParameterError(
            f"{weights_name!r} is not a weights file; expected a name ending in {', '.join(WEIGHT_SUFFIXES)}"
        )
    if not weights:
        raise InvalidParameterError(f"{weights_name!r} is empty")
    if len(weights) > MAX_UPLOAD_BYTES:
        raise InvalidParameterError(
            f"{weights_name!r} is {_size_text(len(weights))}, over the upload limit of {_size_text(MAX_UPLOAD_BYTES)}; "
            "import larger files with `python -m engine import FILE ...` on the server"
        )


def _destination(name: str | None, weights_name: str, dest_dir: Path, overwrite: bool = False) -> Path:
    """The stem to save under: the checked ``name`` (or one made from the file name), with a free
    suffix (``NAME-2`` ...) when a checkpoint of that name exists, unless ``overwrite``."""
    wanted = typed_name(name) if name else safe_name(weights_name)
    return free_stem(dest_dir, wanted, (".safetensors", ".json"), overwrite=overwrite)


def typed_name(name: str) -> str:
    """A name typed in the upload form, checked: paths (``/``, ``\\``, ``..``), NUL and control
    characters and over-long names are refused with a clear message; spaces and other harmless
    characters become ``-`` (``"my upload"`` -> ``"my-upload"``)."""
    if not isinstance(name, str):
        raise InvalidParameterError(f"checkpoint name must be text, got {type(name).__name__}")
    stripped = name.strip()
    if (len(stripped) > MAX_NAME_LENGTH or any(c in stripped for c in "/\\") or stripped in (".", "..")
            or any(ord(c) < 32 or ord(c) == 127 for c in stripped)):
        return check_name(stripped, "checkpoint name")  # raises, saying why
    return check_name(slug(stripped, fallback=""), "checkpoint name")


def _load_with_card(folder: Path, weights_name: str, weights: bytes, card: bytes):
    """Validate a RobustScope upload (safetensors + JSON card) by loading it: the card (guarded
    decoding, every field checked) and the weights' kind and header first, named as uploaded."""
    if not weights_name.lower().endswith(".safetensors"):
        raise InvalidParameterError("a model card goes with a .safetensors weights file")
    ModelCard.from_json(card, f"for {weights_name}")
    weights_path = folder / "upload.safetensors"
    _write_for_checking(weights_path, weights)
    check_safetensors_header(weights_path, weights_name)
    _write_for_checking(weights_path.with_suffix(".json"), card)
    return ckpt.load(weights_path)


def _write_for_checking(path: Path, data: bytes) -> None:
    """Write uploaded bytes into the temporary folder they are checked in (a full or read-only
    disk is a StorageError naming that folder: the operator's to fix, not the user's file)."""
    with storage("cannot write the upload to a temporary folder to check it"):
        path.write_bytes(data)


@contextlib.contextmanager
def _named_as_uploaded(folder: Path, weights_name: str):
    """Inside, a RobustScopeError naming a file of the temporary ``folder`` is raised again (same
    type) with the user's own names instead: the weights as ``weights_name``, the card (which
    messages call "model card <path>") as "for ``weights_name``"; nothing else in the folder is
    the user's. A StorageError (a full or read-only disk) keeps its path: the operator needs it."""
    try:
        yield
    except RobustScopeError as exc:
        message = str(exc)
        if isinstance(exc, StorageError) or str(folder) not in message:
            raise
        for path in sorted(folder.iterdir(), key=lambda p: -len(str(p))):
            own = f"for {weights_name}" if path.suffix == ".json" else weights_name
            message = message.replace(str(path), own)
        raise type(exc)(message.replace(str(folder), "the upload")) from None


def install_upload(
    weights_name: str,
    weights: bytes,
    card: bytes | None = None,
    *,
    name: str | None = None,
    arch: str | None = None,
    dataset: str | None = None,
    fmt: str = "auto",
    arch_kwargs: dict | None = None,
    allow_pickle: bool = False,
    dest_dir: Path | None = None,
    normalization=None,
    overwrite: bool = False,
) -> Path:
    """Validate an uploaded checkpoint and save it, in our format, into the uploads folder.

    With ``card`` (JSON bytes) the weights must be our safetensors format; without it, ``arch``
    and ``dataset`` say how to import a foreign state dict (``fmt``, ``normalization``: see
    ``import_checkpoint``). Nothing is written unless the checkpoint loads.

    Args:
        name: the checkpoint's name (checked: letters, digits, ``.``, ``_``, ``-``; no paths, at
            most ``engine.fileio.MAX_NAME_LENGTH`` characters); default: made from the file name.
        overwrite: replace an existing checkpoint of that name; by default a free name
            (``NAME-2``, ...) is chosen instead and the returned path shows it.

    Returns:
        The saved checkpoint's ``.safetensors`` path (its stem is the name actually used).

    Raises:
        InvalidParameterError: bad name, file type or size (the limit is stated), missing options.
        CheckpointError: the weights do not load (nothing is saved): an HTML page saved under a
            checkpoint's name, bytes of no known format, pickled objects without ``allow_pickle``
            (``UnsafeCheckpointError``), a card nested too deeply or out of bounds, weights that
            do not fit. Messages name the file as uploaded (``weights_name``), never the
            temporary file it was checked in.
        StorageError: the temporary or the uploads folder cannot be written (disk full,
            read-only, permissions).
    """
    _check_upload(weights_name, weights)
    dest_dir = Path(dest_dir) if dest_dir is not None else uploads_dir()
    _destination(name, weights_name, dest_dir, overwrite)  # refuse a bad name before any work
    with storage("cannot create a temporary folder to check the upload in"):
        scratch = tempfile.TemporaryDirectory()
    with scratch as tmp:
        folder = Path(tmp)
        with _named_as_uploaded(folder, weights_name):
            if card is not None:
                loaded = _load_with_card(folder, weights_name, weights, card)
            else:
                if not arch or not dataset:
                    raise InvalidParameterError("without a model card, choose the architecture and the dataset")
                src = folder / (safe_name(weights_name) + _weights_suffix(weights_name))
                _write_for_checking(src, weights)
                loaded = ckpt.import_checkpoint(
                    src, arch, dataset, fmt=fmt, allow_pickle=allow_pickle, arch_kwargs=arch_kwargs,
                    normalization=normalization, display_name=weights_name,
                )
        with storage(f"cannot create the uploads folder {dest_dir}"):
            dest_dir.mkdir(parents=True, exist_ok=True)
        stem = _destination(name, weights_name, dest_dir, overwrite)  # chosen now: the folder may have changed
        return save_imported(loaded, stem).path


def _weights_suffix(weights_name: str) -> str:
    """The file's suffix as the loaders need it (``.safetensors`` read as such, anything else as PyTorch)."""
    return ".safetensors" if weights_name.lower().endswith(".safetensors") else ".pt"
