"""What a stored result of a kind must hold: a small schema language for metadata and arrays.

A kind module declares ``SCHEMA = Schema(meta={...}, arrays={...})``; the result store checks a
result against it when it saves one (a mismatch is a bug of the kind: TypeError) and when it
reads one back (a mismatch is a damaged entry: ``CorruptResult``), so nothing that does not
decode is ever served. Specs, torch-free and plain:

- a type: ``str``, ``int`` (not bool), ``bool``, ``dict``, ``list``, ``float`` (any number; or
  None, because stored metadata writes NaN and infinity as null, ``engine.analysis.base.finite``);
- ``None``: null;
- a tuple of specs: any of them (``(str, None)``: a string or null);
- ``[spec]``: a list whose items all match ``spec``;
- ``{name: spec}``: an object with at least these fields (more are allowed: newer versions add);
- :class:`Array` (in ``arrays`` only): a NumPy array of these dtype kinds and dimensions.

Array names may be shell patterns (``"stats_*"``): every array matching one must fit it, and any
number may match; a plain name must be there. An array that matches nothing is unexpected (an
arrays file of another result). ``rule(meta, arrays)`` checks what ties fields together (e.g. a
matrix's size is the number of layers named), returning what is wrong or None.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Callable, Mapping

import numpy as np


@dataclass(frozen=True)
class Array:
    """An array's dtype kinds (``"f"`` floats, ``"iu"`` integers, ``"b"`` bools ...), number of
    dimensions (None: any) and whether every result has it (a pattern never is required)."""

    kinds: str
    ndim: int | None = None
    required: bool = True

    def problem(self, value: np.ndarray) -> str | None:
        if value.dtype.kind not in self.kinds:
            return f"has dtype {value.dtype}, expected kind {self.kinds!r}"
        if self.ndim is not None and value.ndim != self.ndim:
            return f"has {value.ndim} dimensions, expected {self.ndim}"
        return None


@dataclass(frozen=True)
class Schema:
    """A kind's stored result: required metadata fields and arrays.

    Attributes:
        meta: ``{field: spec}`` of the metadata (see the module docstring).
        arrays: ``{name or pattern: Array}``.
        rule: ``rule(meta, arrays) -> problem or None``, run when everything else fits.
    """

    meta: Mapping[str, Any] = field(default_factory=dict)
    arrays: Mapping[str, Array] = field(default_factory=dict)
    rule: Callable[[dict, Mapping[str, np.ndarray]], str | None] | None = None

    def problems(self, meta: Any, arrays: Mapping[str, np.ndarray]) -> list[str]:
        """What in ``meta``/``arrays`` does not match (empty when all is well)."""
        found = mismatch(meta, dict(self.meta), "meta")
        out = [found] if found else []
        out += [f"array {name!r} is missing" for name, spec in self.arrays.items()
                if spec.required and not _pattern(name) and name not in arrays]
        for name, value in arrays.items():
            spec = next((s for key, s in self.arrays.items() if key == name or (_pattern(key) and fnmatchcase(name, key))),
                        None)
            problem = "is not one this kind stores" if spec is None else spec.problem(np.asarray(value))
            if problem:
                out.append(f"array {name!r} {problem}")
        if not out and self.rule is not None:
            problem = self.rule(meta, arrays)
            out += [problem] if problem else []
        return out


def _pattern(name: str) -> bool:
    return any(c in name for c in "*?[")


def mismatch(value: Any, spec: Any, where: str) -> str | None:
    """Where and how ``value`` does not match ``spec`` (None when it does)."""
    if isinstance(spec, tuple):
        found = [mismatch(value, s, where) for s in spec]
        return None if any(f is None for f in found) else found[0]
    if isinstance(spec, list):
        if not isinstance(value, list):
            return f"{where}: expected a list, got {_name(value)}"
        return next((m for i, item in enumerate(value) if (m := mismatch(item, spec[0], f"{where}[{i}]"))), None)
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            return f"{where}: expected an object, got {_name(value)}"
        for name, inner in spec.items():
            if name not in value:
                return f"{where}: field {name!r} is missing"
            found = mismatch(value[name], inner, f"{where}.{name}")
            if found:
                return found
        return None
    return None if _is(value, spec) else f"{where}: expected {_spec_name(spec)}, got {_name(value)}"


def _is(value: Any, spec: Any) -> bool:
    if spec is None:
        return value is None
    if spec is float:
        return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    if spec is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, spec)


def _name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _spec_name(spec: Any) -> str:
    return "null" if spec is None else "a number" if spec is float else getattr(spec, "__name__", str(spec))
