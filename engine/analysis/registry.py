"""The analysis registry: every kind declares itself in its own module; everything else asks here.

A kind is one module (``engine/analysis/kinds/<name>.py``, or a plugin module named in
``ROBUSTSCOPE_ANALYSES``) holding its frozen request dataclass, decorated with :func:`register`,
and module-level functions:

- ``run(request, ctx) -> Payload`` (required): compute; ``ctx`` is the
  :class:`~engine.analysis.runner.RunContext` (models, images, progress, stop, resume state);
- ``decode(result, **options)`` (required): the capability's own typed object from a stored result;
- ``report(result) -> dict`` (required): the CLI's JSON, torch-free so a stored answer prints fast;
- ``rows(result) -> list[dict]`` (optional): CSV rows;
- ``check(request)`` (optional): torch-side checks run before a job is queued;
- ``SCHEMA`` (a module constant, ``engine.analysis.schema.Schema``; every built-in kind has one):
  what a stored result's metadata and arrays must hold; the result store checks it on save and
  on every read;
- ``passes(request, per) -> (passes, images)`` (optional; default one pass over ``request.n``
  images): its cost model, in forward-equivalent passes per image, given ``per`` (each model's
  measured seconds per image) — ``engine.analysis.cost.estimate`` multiplies them out.

The CLI plumbing (``--background``, ``--no-cache``, cached answers), the job worker, the result
store, the cost estimator and the Results page hold no per-kind tables: they call
:func:`get_analysis`. Kinds are found by importing every module of ``engine.analysis.kinds``
whose name does not start with ``_`` (they import no torch at module level), then the modules
named in ``ROBUSTSCOPE_ANALYSES`` (comma-separated dotted names: how a project adds its own kinds
without editing RobustScope; the worker and the dashboard must see the same variable).
See docs/ENGINE_API.md for the recipe.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Iterator

from engine.errors import InvalidParameterError

#: environment variable naming extra kind modules (comma-separated dotted module names)
PLUGINS_ENV = "ROBUSTSCOPE_ANALYSES"
_KINDS_PACKAGE = "engine.analysis.kinds"


@dataclass(frozen=True)
class Analysis:
    """One registered kind: its request type, the module holding its functions, and how it is shown.

    Attributes:
        request: the request dataclass (``kind`` is its ``kind``).
        module: the dotted name of the module holding ``run``/``decode``/``report`` (...).
        title: a human name (Results page, job lists).
        page: the dashboard page that renders it (its ``st.navigation`` URL path).
        permalink: whether that page reopens a result from ``?result=<key>`` (else the page reads
            it back when the same request is made there).
        view: optional dotted module of a page view with ``render(result)``: the Results page
            then renders the result itself (what a plugin kind with no page of its own uses).
    """

    request: type
    module: str
    title: str
    page: str
    permalink: bool = True
    view: str | None = None

    @property
    def kind(self) -> str:
        return self.request.kind

    def _module(self) -> ModuleType:
        return importlib.import_module(self.module)

    def _required(self, name: str) -> Callable:
        found = getattr(self._module(), name, None)
        if not callable(found):
            raise InvalidParameterError(f"analysis {self.kind!r} ({self.module}) defines no {name}()")
        return found

    @property
    def run(self) -> Callable:
        return self._required("run")

    @property
    def decode(self) -> Callable:
        return self._required("decode")

    @property
    def report(self) -> Callable:
        return self._required("report")

    @property
    def rows(self) -> Callable | None:
        return getattr(self._module(), "rows", None)

    @property
    def check(self) -> Callable | None:
        return getattr(self._module(), "check", None)

    @property
    def schema(self):
        """The kind's ``SCHEMA`` (``engine.analysis.schema.Schema``: what its stored metadata and
        arrays must hold), or None for a kind that declares none (then only its ``report`` must
        read a stored result)."""
        return getattr(self._module(), "SCHEMA", None)

    @property
    def passes(self) -> Callable:
        """``passes(request, per) -> (passes per image, images)``; default one pass over ``request.n``."""
        return getattr(self._module(), "passes", _one_pass)


def _one_pass(request, _per, _loaded) -> tuple[float, int]:
    return 1.0, int(getattr(request, "n", None) or 1)


_REGISTRY: dict[str, Analysis] = {}
_discovered = False


def register(title: str, page: str, permalink: bool = True, view: str | None = None):
    """Class decorator: register the request dataclass it decorates as an analysis kind.

    The kind's functions are looked up in the module that defines the class. Registering the
    same kind from another module is refused (two kinds of one name would split results).
    """
    def decorate(request_type: type) -> type:
        kind = getattr(request_type, "kind", "")
        if not isinstance(kind, str) or not kind.isidentifier():
            raise InvalidParameterError(f"{request_type.__name__}.kind must be an identifier, got {kind!r}")
        entry = Analysis(request_type, request_type.__module__, title, page, permalink, view)
        known = _REGISTRY.get(kind)
        if known is not None and known.module != entry.module:
            raise InvalidParameterError(f"analysis kind {kind!r} is registered twice ({known.module}, {entry.module})")
        _REGISTRY[kind] = entry
        return request_type
    return decorate


def _plugin_modules() -> list[str]:
    text = os.environ.get(PLUGINS_ENV, "")
    return [name.strip() for name in text.split(",") if name.strip()]


def discover() -> None:
    """Import the built-in kind modules and the plugin modules (once; a plugin named later in
    ``ROBUSTSCOPE_ANALYSES`` is imported on the next call)."""
    global _discovered
    if not _discovered:
        package = importlib.import_module(_KINDS_PACKAGE)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{_KINDS_PACKAGE}.{info.name}")
        _discovered = True
    for name in _plugin_modules():
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                raise InvalidParameterError(f"{PLUGINS_ENV} names {name!r}, which cannot be imported: {exc}") from None


class _Analyses(Mapping):
    """kind -> :class:`Analysis`, every registered kind (discovered on first use)."""

    def __getitem__(self, kind: str) -> Analysis:
        discover()
        return _REGISTRY[kind]

    def __iter__(self) -> Iterator[str]:
        discover()
        return iter(sorted(_REGISTRY))

    def __len__(self) -> int:
        discover()
        return len(_REGISTRY)

    def __contains__(self, kind) -> bool:
        discover()
        return kind in _REGISTRY


#: every registered analysis kind (a read-only mapping)
ANALYSES: Mapping[str, Analysis] = _Analyses()


def get_analysis(kind: str) -> Analysis:
    """The registered analysis ``kind`` (InvalidParameterError naming the known kinds)."""
    if not isinstance(kind, str) or kind not in ANALYSES:
        raise InvalidParameterError(f"unknown analysis {kind!r}; known: {', '.join(ANALYSES)}")
    return ANALYSES[kind]


def request_from_dict(kind: str, data) -> object:
    """The validated request of analysis ``kind`` from a JSON-style dict."""
    return get_analysis(kind).request.from_dict(data)
