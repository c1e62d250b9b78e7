"""The original code of the peer libraries, for tests that compare RobustScope's copies with it.

RobustBench 1.1.1 and MadryLab robustness 1.2.1 cannot be installed beside our pins (robustbench
pins timm==1.0.9 and imports pkg_resources/autoattack at import time; robustness imports the
removed ``torchvision.models.utils``). Their wheels are downloaded once with
``pip download --no-deps`` into ``$ROBUSTSCOPE_PEER_CACHE`` (default ``~/.cache/robustscope-peers``,
outside the repository), unpacked beside, and only the architecture files the tests need are
imported, under private package names (``_peer_robustbench``, ``_peer_robustness``) whose parent
packages are empty stand-ins, so no package ``__init__`` (and none of its imports) runs.

A test calls :func:`robustbench_module` / :func:`robustness_module`; when the wheel is not cached
and the registry cannot be reached they ``pytest.skip`` with the reason.
"""
from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import types
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

PEERS = {"robustbench": "1.1.1", "robustness": "1.2.1"}
PREFIX = "_peer_"


def peer_cache() -> Path:
    """Where the peer wheels are kept: ``$ROBUSTSCOPE_PEER_CACHE`` or ``~/.cache/robustscope-peers``."""
    env = os.environ.get("ROBUSTSCOPE_PEER_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "robustscope-peers"


def _wheel(name: str) -> Path:
    version = PEERS[name]
    cache = peer_cache()
    found = sorted(cache.glob(f"{name}-{version}-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
             f"{name}=={version}", "-d", str(cache)],
            capture_output=True, text=True, timeout=180,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot download {name}=={version} (the package registry cannot be reached: {exc})")
    found = sorted(cache.glob(f"{name}-{version}-*.whl"))
    if result.returncode != 0 or not found:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        pytest.skip(f"cannot download {name}=={version} (the package registry cannot be reached: {tail[0]})")
    return found[0]


def peer_root(name: str) -> Path:
    """The folder holding the unpacked wheel of ``name`` (``<root>/<name>/...``)."""
    target = peer_cache() / f"{name}-{PEERS[name]}-unpacked"
    if (target / name).is_dir():
        return target
    wheel = _wheel(name)
    scratch = Path(tempfile.mkdtemp(dir=peer_cache(), prefix=f".{name}-"))
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(scratch)
        try:
            os.replace(scratch, target)
        except OSError:  # another process unpacked it first
            if not (target / name).is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _stand_in_package(dotted: str, folder: Path) -> None:
    """Register an empty package ``dotted`` whose submodules are looked up in ``folder``."""
    if dotted in sys.modules:
        return
    package = types.ModuleType(dotted)
    package.__path__ = [str(folder)]
    package.__package__ = dotted
    sys.modules[dotted] = package


def _import(name: str, relative: str) -> types.ModuleType:
    """``<name>/<relative>.py`` imported as ``_peer_<name>.<relative>``, parents as stand-ins."""
    root = peer_root(name) / name
    parts = relative.split(".")
    _stand_in_package(PREFIX + name, root)
    for depth in range(1, len(parts)):
        _stand_in_package(".".join([PREFIX + name, *parts[:depth]]), root.joinpath(*parts[:depth]))
    return importlib.import_module(".".join([PREFIX + name, *parts]))


def robustbench_module(relative: str) -> types.ModuleType:
    """A module of the robustbench wheel, e.g. ``"model_zoo.architectures.wide_resnet"``."""
    return _import("robustbench", relative)


@contextlib.contextmanager
def _missing_modules_stubbed(names: dict[str, dict]) -> Iterator[None]:
    """While inside: each module of ``names`` that cannot be imported is an empty stand-in with
    the given attributes; afterwards the stand-ins are removed from ``sys.modules`` again."""
    added = []
    for dotted, attrs in names.items():
        try:
            importlib.import_module(dotted)
            continue
        except ImportError:
            pass
        stub = types.ModuleType(dotted)
        stub.__dict__.update(attrs)
        sys.modules[dotted] = stub
        added.append(dotted)
    try:
        yield
    finally:
        for dotted in added:
            sys.modules.pop(dotted, None)


def robustness_module(relative: str) -> types.ModuleType:
    """A module of the robustness wheel, e.g. ``"cifar_models.resnet"`` or ``"attacker"``.

    Imports it needs but that robustness' pins no longer provide are stood in for while it is
    imported: ``dill`` and ``cox`` (used by its checkpoint saving and logging, not by the models
    or ``AttackerModel``), ``torchvision.models.utils`` (moved to ``torch.hub``).
    """
    import torch.hub

    stubs = {
        "dill": {},
        "cox": {},
        "cox.store": {},
        "torchvision.models.utils": {"load_state_dict_from_url": torch.hub.load_state_dict_from_url},
    }
    with _missing_modules_stubbed(stubs):
        if "cox" in sys.modules and "cox.store" in sys.modules and not hasattr(sys.modules["cox"], "store"):
            sys.modules["cox"].store = sys.modules["cox.store"]
        return _import("robustness", relative)
