"""The result store: one folder per finished analysis under ``<runs>/results/<key>/``.

Each entry is ``result.json`` (kind, request, metadata, timing, engine version, the sha256 of the
arrays file) and ``arrays.npz`` (plain numpy arrays, read with ``allow_pickle=False``). An entry
is written into a hidden temp folder beside the others and renamed into place in one step, so a
reader sees a whole entry or none; a killed writer leaves only a hidden temp folder, removed
later. Reading checks the arrays' sha256: a damaged entry raises :class:`CorruptResult` (the
runner moves it aside and recomputes; the Results page lists it as damaged).

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
from engine.errors import RobustScopeError
from engine.fileio import atomic_write_bytes
from engine.paths import results_dir

RESULT_FILE = "result.json"
ARRAYS_FILE = "arrays.npz"
FORMAT = "robustscope-result"
FORMAT_VERSION = 1
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
        """Write ``result`` as one entry (temp folder + rename); replaces an older entry."""
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.path(result.key)
        temp = self.root / f".tmp-{result.key}-{uuid.uuid4().hex[:8]}"
        temp.mkdir()
        try:
            buffer = io.BytesIO()
            arrays = {name: np.asarray(value) for name, value in result.arrays.items()}
            for name, value in arrays.items():
                if value.dtype == object:
                    raise TypeError(f"result array {name!r} has dtype object; store it in meta instead")
            np.savez(buffer, **arrays)
            data = buffer.getvalue()
            atomic_write_bytes(temp / ARRAYS_FILE, data, what="result arrays")
            record = {
                "format": FORMAT, "format_version": FORMAT_VERSION, "kind": result.kind, "key": result.key,
                "version": result.version, "created": result.created, "seconds": result.seconds,
                "request": result.request.to_dict(), "title": result.request.describe(),
                "meta": result.meta, "arrays": sorted(arrays), "arrays_sha256": hashlib.sha256(data).hexdigest(),
            }
            text = json.dumps(finite(record), indent=1, sort_keys=True, default=_json_default, allow_nan=False)
            atomic_write_bytes(temp / RESULT_FILE, text.encode("utf-8"), what="result record")
            self._publish(temp, final)
        finally:
            if temp.exists():
                shutil.rmtree(temp, ignore_errors=True)
        return final

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
        except OSError as exc:
            raise CorruptResult(f"{folder.name}: cannot read {RESULT_FILE} ({exc.strerror or exc})") from None
        try:
            record = json.loads(text)
        except ValueError as exc:
            raise CorruptResult(f"{folder.name}: {RESULT_FILE} is not valid JSON ({exc})") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise CorruptResult(f"{folder.name}: {RESULT_FILE} is not a RobustScope result record")
        return record

    def load(self, key: str) -> AnalysisResult | None:
        """The stored result for ``key`` (``cached=True``), or None when there is none.

        Raises:
            CorruptResult: the entry exists but cannot be read back intact.
        """
        folder = self.path(key)
        if not folder.is_dir():
            return None
        record = self._record(folder)
        from engine.analysis.registry import get_analysis

        try:
            analysis = get_analysis(record["kind"])
            request = analysis.request.from_dict(record["request"])
        except (KeyError, RobustScopeError) as exc:
            raise CorruptResult(f"{key}: its request cannot be read back ({exc})") from None
        try:
            data = (folder / ARRAYS_FILE).read_bytes()
        except OSError as exc:
            raise CorruptResult(f"{key}: cannot read {ARRAYS_FILE} ({exc.strerror or exc})") from None
        if hashlib.sha256(data).hexdigest() != record.get("arrays_sha256"):
            raise CorruptResult(f"{key}: {ARRAYS_FILE} does not match its recorded sha256 (damaged or edited)")
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (ValueError, OSError, EOFError) as exc:
            raise CorruptResult(f"{key}: {ARRAYS_FILE} cannot be read ({exc})") from None
        if sorted(arrays) != sorted(record.get("arrays", [])):
            raise CorruptResult(f"{key}: {ARRAYS_FILE} holds other arrays than its record lists")
        return AnalysisResult(kind=record["kind"], key=key, request=request, arrays=arrays,
                              meta=record.get("meta") or {}, seconds=float(record.get("seconds") or 0.0),
                              created=float(record.get("created") or 0.0), cached=True,
                              version=str(record.get("version") or ""))

    def quarantine(self, key: str) -> Path:
        """Move a damaged entry aside (``.corrupt-<key>-<time>``) so it is recomputed; returns
        where it went (kept for inspection, removed by :meth:`clean` after a while)."""
        target = self.root / f".corrupt-{check_key(key)}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:4]}"
        os.rename(self.path(key), target)
        return target

    def remove(self, key: str) -> bool:
        """Delete an entry; returns whether there was one."""
        folder = self.path(key)
        if not folder.exists():
            return False
        aside = self.root / f".old-{key}-{uuid.uuid4().hex[:8]}"
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
