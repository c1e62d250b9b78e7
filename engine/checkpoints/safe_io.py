"""Reading weight files without running code from them, and without allocating more than they hold.

``.safetensors`` files hold only tensors. PyTorch files (``.pt``, ``.pth``, ``.ckpt``, ``.bin``)
are pickles: unpickling may call any Python function named in the file (a checkpoint can delete
files or open a shell while it "loads"). They are read with ``torch.load(weights_only=True)``,
whose restricted unpickler accepts only tensors and plain containers and refuses everything else
*before* calling it. A file that needs more is refused with :class:`UnsafeCheckpointError`, unless
the caller explicitly passes ``allow_pickle=True`` (CLI ``--allow-pickle``; in the dashboard only
when the operator started it with ``ROBUSTSCOPE_ALLOW_PICKLE_UPLOADS=1``), which uses
``torch.load(weights_only=False)``.

What a file is comes from its first bytes, not its name (:func:`sniff`), tried in the order HTML
page -> safetensors -> zip (PyTorch's format) -> legacy pickle (older PyTorch) -> unknown. An HTML
page (Google Drive's quota or virus-scan page saved as ``.pt``) and unknown bytes are refused with
their own message; only a real pickle can get the "contains pickled Python objects" refusal.
Messages name the file as the user knows it (``display_name``: an upload's own name, never the
temporary file it was written to).

Bounds (checked from the file's header before its tensors are read):

- safetensors: the header must be valid JSON of known dtypes whose byte ranges tile the data
  section exactly, so the tensors can never be larger than the file;
- PyTorch zip files: every member must be *stored* (a deflate-compressed storage could inflate a
  2 MB file to gigabytes) and the members must fit in the file;
- after loading: every tensor must be an ordinary dense CPU tensor (no meta, sparse or quantised
  tensors) that does not claim more elements than its storage holds (a stride-0 view of a small
  storage can stand for 40 M elements and blow up on first copy).
"""
from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from pathlib import Path
from typing import Any, Iterable

import torch

from engine.checkpoints.files import (  # noqa: F401 (re-exported: torch-free, defined once there)
    MAX_WEIGHTS_BYTES,
    SAFETENSORS_SUFFIX,
    TORCH_SUFFIXES,
    file_size,
    read_bytes,
    sha256_bytes,
    sha256_file,
)
from engine.errors import CheckpointError, UnsafeCheckpointError

MAX_HEADER_BYTES = 100 << 20
_ST_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}


# ---------------------------------------------------------------------------------------------
# what a file is

#: what :func:`sniff` calls a file, in the order it tries them
KINDS = ("html", "safetensors", "zip", "pickle", "unknown")
#: how many bytes :func:`sniff` reads
SNIFF_BYTES = 1024
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")
_TORCH_KINDS = ("zip", "pickle")


def _is_html(head: bytes) -> bool:
    """Markup (after a byte-order mark and blank space) that opens an HTML page or XML document,
    or holds ``<html`` in its first 512 bytes (a page starting with a comment or a script)."""
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:512].lower()
    return start.startswith(_HTML_STARTS) or (start.startswith(b"<") and b"<html" in start)


def _is_safetensors(head: bytes) -> bool:
    """8 bytes of header length (little-endian, plausible), then the header's JSON object."""
    return len(head) > 8 and 2 <= struct.unpack("<Q", head[:8])[0] <= MAX_HEADER_BYTES and head[8:9] == b"{"


def _is_pickle(head: bytes) -> bool:
    """A pickle of protocol 2 to 5 (PyTorch's legacy format writes protocol 2)."""
    return len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5


def sniff(head: bytes) -> str:
    """What a file is, from its first bytes: one of :data:`KINDS`, tried in that order (an HTML
    page first: a download that returned a web page; ``zip``: PyTorch's format since 1.6, files
    starting ``PK``; ``pickle``: the legacy format, a pickle of protocol 2 to 5)."""
    if _is_html(head):
        return "html"
    if _is_safetensors(head):
        return "safetensors"
    if head[:2] == b"PK":
        return "zip"
    return "pickle" if _is_pickle(head) else "unknown"


def sniff_file(path: Path, display_name: str | None = None) -> str:
    """:func:`sniff` on the first bytes of the file at ``path`` (missing, special or over-large
    files raise ``CheckpointError`` naming ``display_name``, default the path)."""
    label = display_name or str(path)
    file_size(path, label=label)
    try:
        with open(path, "rb") as handle:
            return sniff(handle.read(SNIFF_BYTES))
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint file {label}: {exc.strerror or exc}") from exc


def kind_error(kind: str, label: str) -> CheckpointError:
    """The refusal of a file of ``kind`` (see :data:`KINDS`) where another kind was needed."""
    if kind == "html":
        return CheckpointError(
            f"{label} is an HTML page, probably a download quota or confirmation page — download the file "
            "again (Google Drive sends such a page instead of a large file when its quota is used up or it "
            "cannot scan the file for viruses; a browser gets the file itself)"
        )
    if kind == "safetensors":
        return CheckpointError(f"{label} is a safetensors file, not a PyTorch file")
    if kind in _TORCH_KINDS:
        return CheckpointError(f"{label} is a PyTorch file, not a safetensors file")
    return CheckpointError(
        f"{label} is not a PyTorch or safetensors file: its first bytes match neither format "
        "(another kind of file, or a damaged download)"
    )


def expect_kind(path: Path, kinds: tuple[str, ...], display_name: str | None = None) -> str:
    """The file's kind (:func:`sniff_file`) when it is one of ``kinds``; otherwise raise
    :func:`kind_error`, naming ``display_name`` (default: the path)."""
    kind = sniff_file(path, display_name)
    if kind not in kinds:
        raise kind_error(kind, display_name or str(path))
    return kind


# ---------------------------------------------------------------------------------------------
# header checks


def _bad_safetensors(label: str, why: str) -> CheckpointError:
    return CheckpointError(f"{label} is not a valid safetensors file (corrupt or truncated?): {why}")


def check_safetensors_header(path: Path, display_name: str | None = None) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Validate a safetensors file's header against its size; returns name -> (dtype, shape).

    Raises:
        CheckpointError: an HTML page or a PyTorch file (said so), not a safetensors file, an
            unknown dtype, or byte ranges that do not tile the data section exactly (the file is
            corrupt, truncated or hostile); the file is named as ``display_name`` (default: its path).
    """
    label = display_name or str(path)
    expect_kind(path, ("safetensors", "unknown"), label)  # unknown: the checks below say what is wrong
    size = file_size(path, label=label)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise _bad_safetensors(label, "too short")
        (length,) = struct.unpack("<Q", head)
        if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
            raise _bad_safetensors(label, f"header length {length}")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise _bad_safetensors(label, f"bad header ({exc})") from None
    if not isinstance(header, dict):
        raise _bad_safetensors(label, "its header is not an object")
    data_bytes = size - 8 - length
    spans, info = [], {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = entry["dtype"], [int(s) for s in entry["shape"]], entry["data_offsets"]
        except (TypeError, KeyError, ValueError):
            raise _bad_safetensors(label, f"tensor {name!r} has a malformed header entry") from None
        if dtype not in _ST_DTYPE_BYTES or min(shape, default=0) < 0:
            raise _bad_safetensors(label, f"tensor {name!r} has an unsupported dtype {dtype!r} or a negative size")
        count = 1
        for s in shape:
            count *= s
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end <= data_bytes
                and end - start == count * _ST_DTYPE_BYTES[dtype]):
            raise _bad_safetensors(label, f"tensor {name!r} claims {count} x {dtype} values outside the file's data")
        spans.append((start, end))
        info[name] = (dtype, tuple(shape))
    covered = 0
    for start, end in sorted(spans):
        if start != covered:
            raise _bad_safetensors(label, "tensor data overlaps or leaves gaps")
        covered = end
    if covered != data_bytes:
        raise _bad_safetensors(label, f"the header describes {covered} bytes of data but the file holds {data_bytes}")
    return info


def check_torch_zip(path: Path, display_name: str | None = None) -> bool:
    """For a PyTorch zip file, check every member is stored uncompressed and fits in the file.

    Returns:
        True for a zip-format file (checked), False for another format (legacy PyTorch files).

    Raises:
        CheckpointError: a file that starts like a zip but has no readable zip directory (a cut
            download), compressed members or members larger than the file.
    """
    label = display_name or str(path)
    size = file_size(path, label=label)
    if not zipfile.is_zipfile(path):
        if sniff_file(path, label) == "zip":
            raise CheckpointError(
                f"{label} starts like a PyTorch (zip) file but its end is missing or damaged (a cut "
                "download?) — download the file again"
            )
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{label} is not a readable PyTorch file (corrupt zip?): {exc}") from None
    compressed = [m.filename for m in members if m.compress_type != zipfile.ZIP_STORED]
    if compressed:
        raise CheckpointError(
            f"{label} holds compressed members ({', '.join(compressed[:3])}); PyTorch never compresses "
            "its files, and compressed storages could inflate far beyond the file's size"
        )
    if sum(m.file_size for m in members) > size:
        raise CheckpointError(f"{label}: its members claim more bytes than the file holds (corrupt or hostile file)")
    return True


def iter_tensors(contents: Any, limit: int = 100_000) -> Iterable[tuple[str, torch.Tensor]]:
    """``(key path, tensor)`` for every tensor inside nested dicts/lists/tuples (no recursion)."""
    stack, seen = [("", contents)], 0
    while stack:
        key, item = stack.pop()
        seen += 1
        if seen > limit:
            raise CheckpointError(f"the file holds more than {limit} objects; refused")
        if isinstance(item, torch.Tensor):
            yield key, item
        elif isinstance(item, dict):
            stack += [(f"{key}.{k}" if key else str(k), v) for k, v in item.items()]
        elif isinstance(item, (list, tuple)):
            stack += [(f"{key}[{i}]", v) for i, v in enumerate(item)]


def check_tensor(name: str, tensor: torch.Tensor, where: Path | str) -> None:
    """Refuse tensors a checkpoint has no business holding (see the module docstring)."""
    if tensor.device.type == "meta":
        raise CheckpointError(f"{where}: tensor {name!r} is a meta tensor (it holds no values)")
    if tensor.layout != torch.strided:
        raise CheckpointError(f"{where}: tensor {name!r} is {tensor.layout} (sparse); only dense tensors are read")
    if tensor.is_quantized:
        raise CheckpointError(f"{where}: tensor {name!r} is quantised ({tensor.dtype}); dequantise it before importing")
    if tensor.is_complex():
        raise CheckpointError(f"{where}: tensor {name!r} is complex ({tensor.dtype}); weights are real numbers")
    needed = tensor.numel() * tensor.element_size()
    held = tensor.untyped_storage().nbytes()
    overlapping = tensor.numel() > 1 and not tensor.is_contiguous() and 0 in tensor.stride()
    if needed > held or overlapping:
        raise CheckpointError(
            f"{where}: tensor {name!r} of shape {tuple(tensor.shape)} is a view over {held} bytes of storage "
            f"(it would need {needed}); such expanded views are refused"
        )


def check_tensors(contents: Any, where: Path | str) -> None:
    """:func:`check_tensor` on every tensor in a loaded file."""
    for name, tensor in iter_tensors(contents):
        check_tensor(name, tensor, where)


# ---------------------------------------------------------------------------------------------
# parsing


def parse_safetensors(path: Path, display_name: str | None = None) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file (on CPU), its header checked first."""
    from safetensors.torch import load_file

    label = display_name or str(path)
    check_safetensors_header(path, label)
    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError (and others) for bad bytes
        raise CheckpointError(f"{label} is not a valid safetensors file (corrupt or truncated?): {exc}") from exc


def _unsafe_message(label: str, exc: Exception) -> str:
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    detail = f" (it references {found.group(1)})" if found else ""
    return (
        f"{label} cannot be loaded safely: it contains pickled Python objects{detail}, and unpickling "
        "them could run arbitrary code from the file. Nothing in it was executed. If you trust where "
        "the file comes from, load it with pickle explicitly: the CLI flag --allow-pickle, or "
        "allow_pickle=True in Python (the dashboard offers it only when its operator started it with "
        "ROBUSTSCOPE_ALLOW_PICKLE_UPLOADS=1). Better: convert it once, in a trusted environment, to a "
        "plain state dict or to our format."
    )


def parse_torch(path: Path, allow_pickle: bool = False, display_name: str | None = None) -> Any:
    """Unpickle a PyTorch file (zip or legacy format, see :func:`sniff`), tensors only unless
    ``allow_pickle``; zip members checked first. Messages name ``display_name`` (default: the path).

    Raises:
        UnsafeCheckpointError: the file needs arbitrary unpickling and ``allow_pickle`` is False
            (nothing from the file ran).
        CheckpointError: an HTML page, a safetensors or unknown file (each said so), or a corrupt,
            truncated or hostile PyTorch file.
    """
    path = Path(path)
    label = display_name or str(path)
    expect_kind(path, _TORCH_KINDS, label)
    is_zip = check_torch_zip(path, label)
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(f"{label} is not a readable PyTorch file (corrupt?): {exc}") from exc
        if not allow_pickle:
            raise UnsafeCheckpointError(_unsafe_message(label, exc)) from None
        contents = _parse_torch_unsafe(path, label)
    except Exception as exc:  # torch raises RuntimeError/KeyError/EOFError... for damaged files
        raise CheckpointError(f"{label} is not a readable PyTorch file (corrupt or truncated?): {exc}") from exc
    check_tensors(contents, label)
    return contents


def _parse_torch_unsafe(path: Path, label: str) -> Any:
    """``torch.load(weights_only=False)``: runs whatever the pickle says. Only after explicit opt-in."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # anything the pickle's code raised
        raise CheckpointError(f"{label} could not be unpickled even with allow_pickle: {exc}") from exc


def parse_weights(path: Path, allow_pickle: bool = False, display_name: str | None = None) -> Any:
    """A weights file's contents, read as what its first bytes say it is (:func:`sniff`), whatever
    its name: a safetensors file gives a dict of tensors, a PyTorch file is read with
    :func:`parse_torch` (a state dict or a dict holding one). An HTML page or an unknown file is
    refused with its own message, naming ``display_name`` (default: the path)."""
    path = Path(path)
    if expect_kind(path, ("safetensors", *_TORCH_KINDS), display_name) == "safetensors":
        return parse_safetensors(path, display_name)
    return parse_torch(path, allow_pickle=allow_pickle, display_name=display_name)


def read_weights(path: Path, allow_pickle: bool = False, display_name: str | None = None) -> tuple[Any, str]:
    """Read a weights file: ``(contents, sha256 of the file)`` (see :func:`parse_weights`)."""
    return parse_weights(path, allow_pickle=allow_pickle, display_name=display_name), sha256_file(Path(path))
