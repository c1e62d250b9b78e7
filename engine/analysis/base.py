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

from engine.catalogue import BN_BRANCHES as BRANCHES
from engine.errors import InvalidParameterError, RobustScopeError

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
            CheckpointError: no card or no weights file at ``path``, or an invalid card.
        """
        from engine.checkpoints.files import checkpoint_files, weights_sha256

        weights, _ = checkpoint_files(path)
        return cls(str(weights), weights_sha256(path), branch).validate()

    @classmethod
    def from_loaded(cls, loaded) -> "ModelRef":
        """The reference of a ``LoadedCheckpoint`` (``engine.load``)."""
        return cls(str(loaded.path), str(loaded.sha256), str(getattr(loaded, "branch", "main"))).validate()

    @property
    def name(self) -> str:
        """The checkpoint's file stem (for labels)."""
        return Path(self.path).stem

    def card(self):
        """The checkpoint's validated ``ModelCard``, read without torch (CheckpointError when the
        card is missing or invalid)."""
        from engine.checkpoints.files import checkpoint_files, read_card_file

        return read_card_file(checkpoint_files(self.path)[1])

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
    at construction (``__post_init__``), so a request that exists is valid.
    """

    kind: ClassVar[str] = ""
    MODEL_FIELDS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        """A request that exists is valid: the dataclass constructor runs :meth:`validate`."""
        self.validate()

    def cost_class(self) -> str:
        """The runs whose measured times correct this request's estimate
        (``engine.analysis.cost.correction``): its kind's, unless the kind runs different code for
        different requests (e.g. CKA's other similarity measures)."""
        return self.kind

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
            return cls(**values)
        except TypeError as exc:
            raise InvalidParameterError(f"bad {cls.kind} request: {exc}") from None

    @classmethod
    def make(cls, **intent) -> "Request":
        """The request a user means, with the defaults decided here once (the CLI and the pages
        both call it): model fields may be given as checkpoint paths (or tuples of them), read
        into :class:`ModelRef` values; a missing or empty ``dataset`` is the first model's
        training set (its card), else an InvalidParameterError asking for one; every other
        field keeps its dataclass default."""
        values = dict(intent)
        for name in cls.MODEL_FIELDS:
            if name in values:
                values[name] = _model_refs(values[name])
        names = {f.name for f in dataclasses.fields(cls)}
        if "dataset" in names and not values.get("dataset"):
            values["dataset"] = _default_dataset(cls, values)
        try:
            return cls(**values)
        except TypeError as exc:
            raise InvalidParameterError(f"bad {cls.kind} request: {exc}") from None

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


def _model_refs(value: Any) -> Any:
    """A model field as the user gave it (a path, a ModelRef or a tuple/list of them) as ModelRefs."""
    if isinstance(value, (str, os.PathLike)):
        return ModelRef.of(value)
    if isinstance(value, (tuple, list)):
        return tuple(_model_refs(v) for v in value)
    return value


def _default_dataset(cls, values: dict) -> str:
    """The training set of the request's first model (its card), for a request that names none."""
    first = next((ref for name in cls.MODEL_FIELDS
                  for ref in (values.get(name) if isinstance(values.get(name), tuple) else (values.get(name),))
                  if isinstance(ref, ModelRef)), None)
    if first is None:
        raise InvalidParameterError(f"a {cls.kind} request needs a dataset")
    return dataset_of(first)


def dataset_of(ref: ModelRef) -> str:
    """The dataset ``ref``'s card says it was trained on (InvalidParameterError when it names none)."""
    dataset = ref.card().dataset
    if not dataset:
        raise InvalidParameterError(f"{ref.path}'s card names no dataset; give --dataset")
    return dataset


def unique_names(refs, file_safe: bool = False) -> list[str]:
    """Unique display names of the models ``refs``: file stems, a repeat told apart by its position
    (``"stem (2)"``) or, ``file_safe``, numbered ``stem-2``, ``stem-3`` ... (they name PNG files)."""
    names: list[str] = []
    for position, ref in enumerate(refs, start=1):
        stem = name = Path(ref.path).stem
        k = 2
        while name in names:
            name, k = (f"{stem}-{k}", k + 1) if file_safe else (f"{stem} ({position})", k)
        names.append(name)
    return names


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
