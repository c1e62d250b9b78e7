"""On-disk cache of feature visualisations, keyed by checkpoint hash, layer, target and settings.

Files live under ``$ROBUSTSCOPE_RUNS/featvis-cache`` (else ``./runs/featvis-cache``), one ``.npz``
per (checkpoint sha256, layer, target, :class:`VisConfig`) — the seed is part of the config —
written atomically (temporary file + rename), so a reader never sees half a file.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from engine.errors import InvalidParameterError
from engine.fileio import atomic_write_bytes
from engine.featvis.config import VisConfig, VisResult
from engine.featvis.render import visualise
from engine.featvis.targets import FeatureTarget

#: Bump when the rendering changes so old cache files are no longer used.
CACHE_VERSION = 1


def cache_dir() -> Path:
    """``$ROBUSTSCOPE_RUNS/featvis-cache``, else ``./runs/featvis-cache`` (not created here)."""
    from engine.paths import runs_dir

    return runs_dir() / "featvis-cache"


def cache_key(sha256: str, layer: str, target: FeatureTarget, config: VisConfig) -> str:
    """A hex key naming one visualisation (checkpoint hash, layer, target, settings incl. seed)."""
    if not sha256:
        raise InvalidParameterError("caching needs the checkpoint's sha256")
    parts = {
        "version": CACHE_VERSION, "sha256": sha256, "layer": layer,
        "target": target.key, "config": config.as_dict(),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def load_cached(key: str, root: Path | None = None) -> dict[str, np.ndarray] | None:
    """The arrays stored under ``key``, or ``None`` when absent or unreadable."""
    path = (root or cache_dir()) / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError):
        return None


def save_cached(key: str, arrays: dict[str, np.ndarray], root: Path | None = None) -> Path:
    """Write ``arrays`` under ``key`` atomically; returns the file's path."""
    folder = root or cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(folder / f"{key}.npz", buffer.getvalue(), what="cache file")


def cached_visualise(
    checkpoint,
    layer: str,
    targets: Sequence[FeatureTarget],
    config: VisConfig = VisConfig(),
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    root: Path | None = None,
) -> VisResult:
    """:func:`engine.featvis.render.visualise` with a per-target on-disk cache.

    Args:
        checkpoint: a ``LoadedCheckpoint`` (anything with ``.model`` and ``.sha256``).
        layer, targets, config, progress, should_stop: as for ``visualise``; only the targets
            not in the cache are rendered (in one batch). A stopped run is not cached.
        root: cache folder (default :func:`cache_dir`).

    Returns:
        :class:`VisResult` for all targets in order; ``steps_done`` is ``config.steps`` unless
        the render was stopped. Cache hits return exactly the stored arrays.
    """
    config = config.validate()  # bounds first: a cache hit must not let an invalid config through
    keys = [cache_key(checkpoint.sha256, layer, t, config) for t in targets]
    found = [load_cached(key, root) for key in keys]
    missing = [i for i, hit in enumerate(found) if hit is None]
    stopped, steps_done = False, config.steps
    if missing:
        fresh = visualise(checkpoint.model, layer, [targets[i] for i in missing], config,
                          progress=progress, should_stop=should_stop)
        stopped, steps_done = fresh.stopped, fresh.steps_done
        for column, i in enumerate(missing):
            found[i] = {"image": fresh.images[column], "trajectory": fresh.trajectories[:, column]}
            if not fresh.stopped:
                save_cached(keys[i], found[i], root)
    elif progress is not None:
        progress(config.steps, config.steps)
    return _combine(found, steps_done, stopped)


def _combine(entries: list[dict], steps_done: int, stopped: bool) -> VisResult:
    """Stack per-target entries (trajectories cut to the shortest) into one :class:`VisResult`."""
    length = min(len(e["trajectory"]) for e in entries)
    images = np.stack([e["image"] for e in entries]).astype(np.float32)
    trajectories = np.stack([e["trajectory"][:length] for e in entries], axis=1).astype(np.float32)
    return VisResult(images, trajectories.reshape(length, len(entries)), steps_done, stopped)
