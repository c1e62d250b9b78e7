"""The result store: one folder per finished analysis under ``<runs>/results/<key>/``.

Each entry is ``result.json`` (kind, request, metadata, timing, engine version, each array's
dtype and shape, and one digest) and ``arrays.npz`` (plain numpy arrays, read with
``allow_pickle=False``). The digest is the sha256 of the record's canonical JSON (everything but
the digest) followed by the arrays file's bytes (:func:`digest_of`), so editing or truncating
either file is seen. An entry is written into a hidden temp folder beside the others (arrays
first, the record with its digest last) and renamed into place in one step, so a reader sees a
whole entry or none; a killed writer leaves only a hidden temp folder, removed later.

Reading verifies the entry as a whole and decodes it against its schema (:meth:`ResultStore.load`):
the record's fields and types, the digest, the key (the request must hash to the folder's name),
each array's dtype and shape, and the kind's own ``report`` (its figures must all be there). Any
failure raises :class:`CorruptResult` with one sentence; the runner moves the entry aside and
recomputes, the Results page lists it as damaged. An entry of an older format (whose metadata was
not covered by a digest) counts as damaged: its figures cannot be verified.

Partial state of analyses that can resume (CKA's running HSIC sums) lives in
``<runs>/results/.partial/<key>/`` and never counts as a result.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.analysis.base import AnalysisResult, finite
from engine.errors import RobustScopeError, storage
from engine.fileio import atomic_write_bytes
from engine.paths import results_dir

RESULT_FILE = "result.json"
ARRAYS_FILE = "arrays.npz"
FORMAT = "robustscope-result"
#: 2: one digest over the record and the arrays, array dtypes and shapes in the record
FORMAT_VERSION = 2
#: the record's fields and their JSON types (:meth:`ResultStore.load` checks them)
RECORD_FIELDS = {"format": str, "format_version": int, "kind": str, "key": str, "version": str,
                 "created": (int, float), "seconds": (int, float), "request": dict, "title": str,
                 "meta": dict, "arrays": dict, "digest": str}
_KEY_CHARS = set("0123456789abcdef")
#: hidden temp/aside folders older than this are removed by :meth:`ResultStore.clean`
STALE_TEMP_S = 3600.0


class CorruptResult(RobustScopeError):
    """A stored result cannot be read back (truncated, edited, damaged); the message says how."""


@dataclass(frozen=True)
class ResultInfo:
    """One entry of :meth:`ResultStore.list` (no arrays loaded).

    Attributes:
        key, kind, title: what it is (``title`` is ``request.describe()``).
        models: the models' file stems; created: UNIX time; seconds: compute time.
        error: why the entry cannot be read (None when it looks fine).
    """

    key: str
    kind: str
    title: str
    models: tuple[str, ...]
    created: float
    seconds: float
    error: str | None = None


def check_key(key: str) -> str:
    """``key`` if it looks like a result key (hex), else InvalidParameterError (never a path)."""
    from engine.errors import InvalidParameterError

    if not isinstance(key, str) or not 8 <= len(key) <= 64 or not set(key) <= _KEY_CHARS:
        raise InvalidParameterError(f"not a result key: {key!r} (expected hex digits)")
    return key


class ResultStore:
    """Stored analysis results under ``root`` (default ``<runs>/results``)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else results_dir()

    # ------------------------------------------------------------------ paths
    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def partial_dir(self, key: str) -> Path:
        """Where a resumable analysis keeps its partial state (not a result)."""
        return self.root / ".partial" / check_key(key)

    def exists(self, key: str) -> bool:
        return (self.path(key) / RESULT_FILE).is_file()

    # ------------------------------------------------------------------ write
    def save(self, result: AnalysisResult) -> Path:
        """Write ``result`` as one entry (temp folder + rename); replaces an older entry.

        Raises:
            StorageError: the results folder is full, read-only or gone (one sentence; any
                older entry is left as it was and no partial entry is ever visible).
        """
        arrays = {name: np.asarray(value) for name, value in result.arrays.items()}
        for name, value in arrays.items():
            if value.dtype == object:
                raise TypeError(f"result array {name!r} has dtype object; store it in meta instead")
        problems = _schema_problems(result.kind, json.loads(json.dumps(finite(result.meta), default=_json_default)),
                                    arrays)
        if problems:
            raise TypeError(f"a {result.kind} result does not match its kind's SCHEMA: {'; '.join(problems)}")
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        data = buffer.getvalue()
        record = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": result.kind, "key": result.key,
            "version": result.version, "created": result.created, "seconds": result.seconds,
            "request": result.request.to_dict(), "title": result.request.describe(), "meta": result.meta,
            "arrays": {name: array_spec(value) for name, value in arrays.items()},
        }
        record = json.loads(json.dumps(finite(record), default=_json_default, allow_nan=False))
        record["digest"] = digest_of(record, data)
        text = json.dumps(record, indent=1, sort_keys=True, allow_nan=False)
        with storage(f"cannot save the result in {self.root}"):
            self._write(result.key, data, text.encode("utf-8"))
        return self.path(result.key)

    def _write(self, key: str, data: bytes, record: bytes) -> None:
        """The entry's files into a temp folder (arrays first, record last), then into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        temp = self.root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
        temp.mkdir()
        try:
            atomic_write_bytes(temp / ARRAYS_FILE, data, what="result arrays")
            atomic_write_bytes(temp / RESULT_FILE, record, what="result record")
            self._publish(temp, self.path(key))
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)

    def _publish(self, temp: Path, final: Path) -> None:
        """Rename the finished temp folder into place; an existing entry (``--no-cache``, or a
        concurrent writer of the same request) is moved aside first. If another writer wins the
        race in between, its entry (the same request's result) stays and ours is dropped."""
        try:
            os.rename(temp, final)
            return
        except OSError:
            pass  # an entry exists: replace it
        aside = self.root / f".old-{final.name}-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(final, aside)
        except FileNotFoundError:
            pass
        try:
            os.rename(temp, final)
        except OSError:
            if not (final / RESULT_FILE).is_file():
                raise
        shutil.rmtree(aside, ignore_errors=True)

    # ------------------------------------------------------------------ read
    def _record(self, folder: Path) -> dict:
        try:
            text = (folder / RESULT_FILE).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CorruptResult(f"{folder.name}: cannot read {RESULT_FILE} ({getattr(exc, 'strerror', None) or exc})") from None
        try:
            record = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CorruptResult(f"{folder.name}: {RESULT_FILE} is not valid JSON ({str(exc)[:200]})") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise CorruptResult(f"{folder.name}: {RESULT_FILE} is not a RobustScope result record")
        return record

    def load(self, key: str) -> AnalysisResult | None:
        """The stored result for ``key`` (``cached=True``), or None when there is none.

        Raises:
            CorruptResult: the entry exists but is not whole and consistent (see the module
                docstring); the message says what is wrong.
        """
        folder = self.path(key)
        if not folder.is_dir():
            return None
        record = self._record(folder)
        check_record(record, key)
        try:
            data = (folder / ARRAYS_FILE).read_bytes()
        except OSError as exc:
            raise CorruptResult(f"{key}: cannot read {ARRAYS_FILE} ({exc.strerror or exc})") from None
        if digest_of(record, data) != record["digest"]:
            raise CorruptResult(f"{key}: its record or arrays do not match their digest (damaged or edited)")
        request = _request(record, key)
        arrays = read_arrays(data, record["arrays"], key)
        result = AnalysisResult(kind=record["kind"], key=key, request=request, arrays=arrays, meta=record["meta"],
                                seconds=float(record["seconds"]), created=float(record["created"]), cached=True,
                                version=record["version"])
        _check_report(result)
        return result

    def quarantine(self, key: str) -> Path:
        """Move a damaged entry aside (``.corrupt-<key>-<time>``) so it is recomputed; returns
        where it went (kept for inspection, removed by :meth:`clean` after a while).

        Raises:
            StorageError: the results folder cannot be changed (read-only, gone).
        """
        target = self.root / f".corrupt-{check_key(key)}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        with storage(f"cannot move the damaged result {key} aside in {self.root}"):
            os.rename(self.path(key), target)
        return target

    def remove(self, key: str) -> bool:
        """Delete an entry; returns whether there was one (StorageError when it cannot be)."""
        folder = self.path(key)
        if not folder.exists():
            return False
        aside = self.root / f".old-{key}-{uuid.uuid4().hex[:8]}"
        with storage(f"cannot remove the result {key} from {self.root}"):
            os.rename(folder, aside)
        shutil.rmtree(aside, ignore_errors=True)
        return True

    def list(self) -> list[ResultInfo]:
        """Every entry, newest first; damaged ones are listed with ``error`` set (never raised)."""
        if not self.root.is_dir():
            return []
        out = []
        for folder in self.root.iterdir():
            if folder.name.startswith(".") or not folder.is_dir() or not set(folder.name) <= _KEY_CHARS:
                continue
            try:
                record = self._record(folder)
                request = record.get("request") or {}
                models = tuple(Path(str(m.get("path", "?"))).stem for m in _model_dicts(request))
                out.append(ResultInfo(folder.name, str(record.get("kind")), str(record.get("title") or record.get("kind")),
                                      models, float(record.get("created") or 0.0), float(record.get("seconds") or 0.0)))
            except (CorruptResult, AttributeError, TypeError, ValueError) as exc:
                try:
                    created = folder.stat().st_mtime
                except OSError:
                    created = 0.0
                out.append(ResultInfo(folder.name, "?", "(damaged entry)", (), created, 0.0, str(exc)))
        return sorted(out, key=lambda info: info.created, reverse=True)

    def clean(self, older_than_s: float = STALE_TEMP_S) -> list[Path]:
        """Remove hidden temp/aside folders left by killed writers (older than ``older_than_s``)."""
        removed = []
        if not self.root.is_dir():
            return removed
        now = time.time()
        for folder in self.root.glob(".*-*"):
            if not folder.name.startswith((".tmp-", ".old-", ".corrupt-")):
                continue
            try:
                if now - folder.stat().st_mtime > older_than_s:
                    shutil.rmtree(folder)
                    removed.append(folder)
            except OSError:
                continue  # another cleaner got there first
        return removed


def array_spec(value: np.ndarray) -> dict:
    """What the record says of one array: ``{"dtype": "<f8", "shape": [3, 3]}``."""
    return {"dtype": value.dtype.str, "shape": list(value.shape)}


def digest_of(record: dict, data: bytes) -> str:
    """sha256 of ``record``'s canonical JSON (without its ``digest``) followed by ``data`` (the
    arrays file): one digest over a whole entry (also used for partial state)."""
    body = {k: v for k, v in record.items() if k != "digest"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8") + b"\n" + data).hexdigest()


def check_record(record: dict, key: str) -> None:
    """CorruptResult unless ``record`` has this format's fields with their JSON types and names
    ``key``."""
    if record.get("format_version") != FORMAT_VERSION:
        raise CorruptResult(f"{key}: written in result format {record.get('format_version')!r} (this version reads "
                            f"{FORMAT_VERSION}, whose digest covers the figures too), so it cannot be verified")
    for name, kind in RECORD_FIELDS.items():
        value = record.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CorruptResult(f"{key}: {RESULT_FILE} has no valid {name!r} field")
    if record["key"] != key:
        raise CorruptResult(f"{key}: {RESULT_FILE} names another result ({record['key'][:40]!r})")


def _request(record: dict, key: str):
    """The record's request, which must hash to ``key`` (CorruptResult otherwise)."""
    from engine.analysis.registry import get_analysis

    try:
        request = get_analysis(record["kind"]).request.from_dict(record["request"])
    except (RobustScopeError, TypeError, ValueError, RecursionError) as exc:
        raise CorruptResult(f"{key}: its request cannot be read back ({str(exc)[:200]})") from None
    if request.key(record["version"]) != key:
        raise CorruptResult(f"{key}: its request is not the one this result answers (edited)")
    return request


def read_arrays(data: bytes, specs: dict, key: str) -> dict:
    """The arrays of an ``.npz`` file's bytes, checked against the record's ``specs`` (names,
    dtypes, shapes); CorruptResult otherwise."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, EOFError, KeyError) as exc:
        raise CorruptResult(f"{key}: {ARRAYS_FILE} cannot be read ({str(exc)[:200]})") from None
    if sorted(arrays) != sorted(specs):
        raise CorruptResult(f"{key}: {ARRAYS_FILE} holds other arrays than its record lists")
    for name, value in arrays.items():
        if specs[name] != array_spec(value):
            raise CorruptResult(f"{key}: array {name!r} is {array_spec(value)}, its record says {specs[name]}")
    return arrays


def _schema_problems(kind: str, meta, arrays: dict) -> list[str]:
    """What does not match the kind's ``SCHEMA`` (none when it declares none)."""
    from engine.analysis.registry import get_analysis

    schema = get_analysis(kind).schema
    return [] if schema is None else schema.problems(meta, arrays)


def _check_report(result: AnalysisResult) -> None:
    """CorruptResult unless ``result`` matches its kind's schema and the kind's ``report`` reads
    every figure it needs from it."""
    from engine.analysis.registry import get_analysis

    problems = _schema_problems(result.kind, result.meta, result.arrays)
    if problems:
        raise CorruptResult(f"{result.key}: it does not match its kind's schema ({'; '.join(problems)[:300]})")
    try:
        get_analysis(result.kind).report(result)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise CorruptResult(f"{result.key}: its figures do not decode ({type(exc).__name__}: {str(exc)[:200]})") from None


def _model_dicts(request: dict) -> list[dict]:
    found = []
    for value in request.values():
        if isinstance(value, dict) and "sha256" in value:
            found.append(value)
        elif isinstance(value, list):
            found += [v for v in value if isinstance(v, dict) and "sha256" in v]
    return found


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a result record")
