"""Safe file writing, in one place: validated names, atomic writes into regular files only,
never overwriting a checkpoint by accident.

Every place that writes a file a user named (``--out``, ``--name``, an upload's name, a training
job's checkpoint name) goes through these helpers:

- :func:`check_name` refuses names that would escape their folder (``../x``, ``a/b``), NUL bytes,
  control characters and over-long names, with a message saying why;
- :func:`check_output_file` refuses to replace anything but a regular file (a symlink, a device
  node, a folder) and refuses a missing parent folder;
- :func:`atomic_write_bytes` / :func:`atomic_write_text` write a temp file beside the target and
  ``os.replace`` it, so a reader sees the old or the new file, never a torn one;
- :func:`free_stem` picks ``NAME``, else ``NAME-2``, ``NAME-3`` ... so nothing is overwritten
  unless the caller asks for it.
"""
from __future__ import annotations

import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Iterable

from engine.errors import InvalidParameterError, storage, storage_fault

#: Longest accepted name (most file systems allow 255 bytes; suffixes and temp prefixes need room).
MAX_NAME_LENGTH = 120
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Mode of files we publish (readable by the group and others, as the rest of a checkout).
FILE_MODE = 0o644
TEMP_SUFFIX = ".tmp"


def check_name(name: object, what: str = "name") -> str:
    """``name`` if it is a safe file name (letters, digits, ``.``, ``_``, ``-``; no path parts).

    Raises:
        InvalidParameterError: empty, too long, a path (``/``, ``..``), NUL or other characters.
    """
    if not isinstance(name, str) or not name:
        raise InvalidParameterError(f"{what} must be a non-empty string, got {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidParameterError(f"{what} is {len(name)} characters long; at most {MAX_NAME_LENGTH} are allowed")
    if "\x00" in name or "/" in name or "\\" in name or name in (".", ".."):
        raise InvalidParameterError(f"{what} {name!r} is a path, not a name: use letters, digits, '.', '_' and '-' only")
    if not _NAME_RE.match(name):
        raise InvalidParameterError(
            f"{what} {name!r} has characters that are not allowed: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit"
        )
    return name


def slug(text: str, fallback: str = "model") -> str:
    """A safe name made from free text (e.g. an uploaded file's name): unsafe runs become ``-``."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", str(text)).strip("-._")[:MAX_NAME_LENGTH]
    return cleaned or fallback


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """``path`` as a Path if a file may be (re)written there.

    The target must be missing or a regular file (never a symlink, device, fifo or folder), and
    its parent folder must exist.

    Raises:
        InvalidParameterError: naming what is at the path and why it is refused.
    """
    target = Path(path)
    try:
        info = os.lstat(target)
    except FileNotFoundError:
        info = None
    except OSError as exc:
        raise InvalidParameterError(f"cannot write {what} {target}: {exc.strerror or exc}") from None
    if info is not None and not stat.S_ISREG(info.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(info.st_mode) else "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise InvalidParameterError(f"refusing to write {what} {target}: it is {kind}; give the path of a regular file")
    if not target.parent.is_dir():
        raise InvalidParameterError(f"cannot write {what} {target}: the folder {target.parent} does not exist")
    return target


def output_folder(path: str | os.PathLike, what: str = "--out") -> Path:
    """``path`` as an output folder (created), refusing a file, symlink or device in its place."""
    folder = Path(path)
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise InvalidParameterError(f"{what} {folder} exists and is not a folder; give a folder for the results")
    with storage(f"cannot create the folder {folder}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            if storage_fault(exc):
                raise
            raise InvalidParameterError(f"cannot create the folder {folder}: {exc.strerror or exc}") from None
    return folder


def _temp_beside(target: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name[:60]}.", suffix=TEMP_SUFFIX, dir=target.parent)
    os.close(fd)
    return Path(name)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, what: str = "output file") -> Path:
    """Write ``data`` to ``path`` through a temp file + ``os.replace`` (mode 0644, fsynced).

    Raises:
        InvalidParameterError: the target is not a regular file or its folder is missing.
        StorageError: the disk is full, the folder read-only or not ours, or gone (one sentence;
            the old file, if any, is left untouched and no temp file stays behind).
    """
    target = check_output_file(path, what)
    with storage(f"cannot write the {what} {target}"):
        temp = _temp_beside(target)
        try:
            with open(temp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, FILE_MODE)
            os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
    return target


def atomic_write_text(path: str | os.PathLike, text: str, what: str = "output file") -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), what)


def free_stem(folder: Path, name: str, suffixes: Iterable[str], overwrite: bool = False) -> Path:
    """``folder/name``, or ``folder/name-2``, ``-3`` ... when a file ``name + suffix`` exists.

    Args:
        folder: where the files go.
        name: the wanted (already checked) name.
        suffixes: the suffixes the files will have, e.g. (".safetensors", ".json").
        overwrite: return ``folder/name`` even when taken (the caller was told to replace it).
    """
    suffixes = tuple(suffixes)

    def taken(stem: str) -> bool:
        return any(os.path.lexists(folder / (stem + s)) for s in suffixes)

    if overwrite or not taken(name):
        return folder / name
    index = 2
    while taken(f"{name}-{index}"):
        index += 1
    return folder / f"{name}-{index}"


def remove_stale_temps(folder: str | os.PathLike, older_than_s: float = 3600.0) -> list[Path]:
    """Delete our leftover ``.*.tmp`` files in ``folder`` older than ``older_than_s`` seconds.

    A temp file is left behind only when a process died mid-write; a young one may belong to a
    write in progress, so it is kept. Returns the removed paths.
    """
    import time

    removed = []
    root = Path(folder)
    if not root.is_dir():
        return removed
    now = time.time()
    for temp in root.glob(".*" + TEMP_SUFFIX):
        try:
            if temp.is_file() and not temp.is_symlink() and now - temp.stat().st_mtime > older_than_s:
                temp.unlink()
                removed.append(temp)
        except OSError:
            continue  # raced with another cleaner or not ours to remove: leave it
    return removed


def npz_bytes(arrays: dict) -> bytes:
    """The bytes of a compressed ``.npz`` holding ``arrays`` (name -> NumPy array)."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def save_npz(path: str | os.PathLike, arrays: dict) -> Path:
    """Write ``arrays`` to ``path`` (.npz, its folder made if missing) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, npz_bytes(arrays), what="NPZ file")
