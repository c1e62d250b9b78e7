"""The pieces every analysis shares: model references, the request base class, the result type.

Torch-free on purpose: building a request, hashing it into a result key and reading a stored
result must be fast enough for ``python -m engine cka ... --json`` to answer from the result store
in well under a second once Python is up (torch is imported only when something is computed).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from engine.errors import CheckpointError, InvalidParameterError, RobustScopeError
from engine.runtime import Progress, ShouldStop  # noqa: F401 (re-exported)


#: Weights-file suffixes a checkpoint stem resolves to, in order (the same list as
#: ``engine.checkpoints.store.WEIGHT_SUFFIXES``, kept here so resolving a path needs no torch;
#: ``tests/engine/test_analysis.py`` checks that the two agree).
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".tar")
BRANCHES = ("main", "aux")
_HEX = set("0123456789abcdef")


class AnalysisCancelled(RobustScopeError):
    """The analysis was stopped before it finished; no result was stored."""


@dataclass(frozen=True)
class ModelRef:
    """A checkpoint as an analysis names it: the weights file, its sha256 and the BN branch.

    The sha256 (not the path) identifies the model in result keys: renaming or moving a
    checkpoint keeps its stored results, replacing its weights does not.

    Attributes:
        path: the weights file (``NAME.safetensors``) or the checkpoint stem.
        sha256: 64 hex digits of the weights file's sha256.
        branch: "main", or "aux" for an AdvProp model's auxiliary BatchNorm branch.
    """

    path: str
    sha256: str
    branch: str = "main"

    @classmethod
    def of(cls, path: str | os.PathLike, branch: str = "main") -> "ModelRef":
        """The reference of the checkpoint at ``path`` (stem, weights file or card).

        The sha256 comes from the card's ``weights_sha256`` (which the loader checks against the
        file), else from hashing the weights file. No torch is imported.

        Raises:
            CheckpointError: no card or no weights file at ``path``.
        """
        weights, card = _checkpoint_files(Path(path))
        digest = _card_sha256(card) or _sha256_file(weights)
        return cls(str(weights), digest, branch).validate()

    @classmethod
    def from_loaded(cls, loaded) -> "ModelRef":
        """The reference of a ``LoadedCheckpoint`` (``engine.load``)."""
        return cls(str(loaded.path), str(loaded.sha256), str(getattr(loaded, "branch", "main"))).validate()

    @property
    def name(self) -> str:
        """The checkpoint's file stem (for labels)."""
        return Path(self.path).stem

    def validate(self) -> "ModelRef":
        """Return self, or raise InvalidParameterError naming what is wrong."""
        if not isinstance(self.path, str) or not self.path:
            raise InvalidParameterError(f"a model reference needs a checkpoint path, got {self.path!r}")
        if not isinstance(self.sha256, str) or len(self.sha256) != 64 or not set(self.sha256) <= _HEX:
            raise InvalidParameterError(f"model {self.path}: sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        if self.branch not in BRANCHES:
            raise InvalidParameterError(f"model {self.path}: branch must be one of {BRANCHES}, got {self.branch!r}")
        return self

    def to_dict(self) -> dict:
        return {"path": self.path, "sha256": self.sha256, "branch": self.branch}

    @classmethod
    def from_dict(cls, data: Any) -> "ModelRef":
        if isinstance(data, ModelRef):
            return data.validate()
        if not isinstance(data, Mapping) or set(data) - {"path", "sha256", "branch"}:
            raise InvalidParameterError(f"a model reference is {{path, sha256, branch}}, got {data!r}")
        return cls(data.get("path"), data.get("sha256"), data.get("branch", "main")).validate()


def _checkpoint_files(given: Path) -> tuple[Path, Path]:
    """``(weights file, card file)`` for a stem, a weights file or a ``.json`` card."""
    lower = given.name.lower()
    if lower.endswith(".json") or any(lower.endswith(s) for s in WEIGHT_SUFFIXES):
        stem = given.with_suffix("")
    else:
        stem = given
    card = stem.parent / (stem.name + ".json")
    if any(lower.endswith(s) for s in WEIGHT_SUFFIXES) and given.is_file():
        weights = given
    else:
        weights = next((p for p in (stem.parent / (stem.name + s) for s in WEIGHT_SUFFIXES) if p.is_file()), None)
    if not card.is_file():
        raise CheckpointError(f"no model card {card}: a RobustScope checkpoint is NAME.safetensors + NAME.json")
    if weights is None:
        raise CheckpointError(f"the weights file of {card} is missing")
    return weights, card


def card_json(path: str | os.PathLike) -> dict:
    """The raw JSON of the model card of the checkpoint at ``path`` (``{}`` when unreadable).

    Only for quick look-ups that need no torch (the default dataset of a command); the loader
    (``engine.load``) validates the card properly before any model is built from it.
    """
    try:
        _, card = _checkpoint_files(Path(path))
        if card.stat().st_size > 8 << 20:
            return {}
        data = json.loads(card.read_text(encoding="utf-8"))
    except (OSError, ValueError, CheckpointError):
        return {}
    return data if isinstance(data, dict) else {}


def _card_sha256(card: Path) -> str | None:
    """The card's ``weights_sha256`` when it records a well-formed one (else None: hash the file)."""
    value = card_json(card).get("weights_sha256")
    return value if isinstance(value, str) and len(value) == 64 and set(value) <= _HEX else None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------------------- validation helpers
def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """``value`` if it is an int in [low, high], else an InvalidParameterError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InvalidParameterError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def check_float(name: str, value: Any, low: float, high: float | None = None, optional: bool = True) -> float | None:
    """``value`` (a finite number in [low, high]) or None when ``optional``."""
    if value is None and optional:
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise InvalidParameterError(f"{name} must be a number {bound}, got {value!r}")
    return float(value)


def check_choice(name: str, value: Any, choices) -> str:
    if value not in tuple(choices):
        raise InvalidParameterError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    return value


def check_names(name: str, value: Any, optional: bool = True, limit: int = 512) -> tuple[str, ...] | None:
    """A tuple of non-empty strings (``None`` when ``optional``)."""
    if value is None and optional:
        return None
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value or len(value) > limit:
        raise InvalidParameterError(f"{name} must be a non-empty list of names (at most {limit}), got {value!r}")
    if not all(isinstance(v, str) and v and len(v) <= 400 for v in value):
        raise InvalidParameterError(f"{name}: every entry must be a non-empty string, got {value!r}")
    return tuple(value)


# ------------------------------------------------------------------------------- requests
def _plain(value: Any) -> Any:
    """JSON-friendly form of a request field (ModelRefs as dicts, tuples as lists)."""
    if isinstance(value, ModelRef):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _frozen(value: Any) -> Any:
    """Lists (from JSON) back to tuples, recursively, so requests stay hashable."""
    if isinstance(value, list):
        return tuple(_frozen(v) for v in value)
    return value


class Request:
    """Base of the frozen request dataclasses (one per analysis kind).

    Subclasses set ``kind``, list their model fields in ``MODEL_FIELDS`` (a ``ModelRef`` or a
    tuple of them) and implement ``_check()`` (raise InvalidParameterError). ``validate()`` runs
    at construction through ``from_dict`` and before every run or submit.
    """

    kind: ClassVar[str] = ""
    MODEL_FIELDS: ClassVar[tuple[str, ...]] = ()

    # -- serialisation
    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal requests give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping) -> "Request":
        if not isinstance(data, Mapping):
            raise InvalidParameterError(f"a {cls.kind} request is a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InvalidParameterError(f"unknown {cls.kind} request field(s): {', '.join(unknown)}")
        values = {}
        for key, value in data.items():
            if key in cls.MODEL_FIELDS:
                value = (tuple(ModelRef.from_dict(v) for v in value) if isinstance(value, (list, tuple))
                         else ModelRef.from_dict(value))
            values[key] = _frozen(value)
        try:
            request = cls(**values)
        except TypeError as exc:
            raise InvalidParameterError(f"bad {cls.kind} request: {exc}") from None
        return request.validate()

    @classmethod
    def from_json(cls, text: str) -> "Request":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise InvalidParameterError(f"a {cls.kind} request must be JSON: {exc}") from None
        return cls.from_dict(data)

    # -- checks and identity
    def validate(self) -> "Request":
        for ref in self.model_refs():
            if not isinstance(ref, ModelRef):
                raise InvalidParameterError(f"{self.kind}: models must be ModelRef values, got {ref!r}")
            ref.validate()
        self._check()
        return self

    def _check(self) -> None:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def model_refs(self) -> tuple[ModelRef, ...]:
        """Every model the request names, in field order."""
        out: list[ModelRef] = []
        for name in self.MODEL_FIELDS:
            value = getattr(self, name)
            out += list(value) if isinstance(value, tuple) else [value]
        return tuple(out)

    def key(self, version: str | None = None) -> str:
        """The result key: sha256 of (kind, request without model paths, model sha256s and
        branches, engine version). Moving a checkpoint keeps its results; new weights or a new
        engine version give a new key."""
        if version is None:
            from engine.version import __version__ as version
        body = self.to_dict()
        for name in self.MODEL_FIELDS:
            value = body[name]
            body[name] = ([{k: v for k, v in r.items() if k != "path"} for r in value] if isinstance(value, list)
                          else {k: v for k, v in value.items() if k != "path"})
        text = json.dumps({"kind": self.kind, "request": body, "version": version},
                          sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    def describe(self) -> str:
        """One line for lists (Results page, ``jobs list``)."""
        names = " vs ".join(r.name + ("" if r.branch == "main" else f" [{r.branch}]") for r in self.model_refs())
        return f"{self.kind}: {names}"


def finite(obj: Any) -> Any:
    """``obj`` with NaN/inf floats (nested in dicts, lists, tuples) replaced by None: strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


# ------------------------------------------------------------------------------- results
@dataclass
class Payload:
    """What an analysis' run function returns: arrays and JSON-friendly metadata."""

    arrays: dict
    meta: dict


@dataclass
class AnalysisResult:
    """A finished analysis, fresh or read back from the result store.

    Attributes:
        kind: the analysis kind (key of ``engine.analysis.ANALYSES``).
        key: the result key (``request.key()``).
        request: the request it answers.
        arrays: name -> numpy array (matrices, indices, scores ...).
        meta: JSON-friendly metadata (layer names, tables as records, warnings ...).
        seconds: compute time of the run that produced it.
        created: UNIX time it was computed.
        cached: True when read from the result store instead of computed now.
        version: the engine version that computed it.
        notes: what happened on the way (e.g. a damaged stored entry was recomputed).
    """

    kind: str
    key: str
    request: Request
    arrays: dict
    meta: dict
    seconds: float
    created: float = field(default_factory=time.time)
    cached: bool = False
    version: str = ""
    notes: tuple[str, ...] = ()

    def value(self, **options):
        """The capability's own typed object rebuilt from the arrays (e.g. a ``CKAComparison``)."""
        from engine.analysis.registry import get_analysis

        return get_analysis(self.kind).decode(self, **options)

    def summary(self) -> dict:
        """JSON-friendly description (no arrays)."""
        return {"kind": self.kind, "key": self.key, "cached": self.cached, "seconds": round(self.seconds, 3),
                "created": self.created, "version": self.version, "request": self.request.to_dict(),
                "title": self.request.describe(), "notes": list(self.notes)}
