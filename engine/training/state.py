"""A run folder's resumable state: per-epoch checkpoint folders and an atomically swapped pointer.

Layout of ``run_dir``::

    state.json            pointer {"epoch", "last", "best", "best_metric", "history", "config"}
    epoch-0003/model.*    engine checkpoint (weights + card) of the model after epoch 3
    epoch-0003/optim.pt   optimiser (+ AMP scaler) state: tensors and primitives only
                          (loadable with ``torch.load(weights_only=True)``; no pickled objects)

``state.json`` is replaced (temp file + ``os.replace``) only after an epoch folder is complete,
so a process killed at any moment leaves the previous pointer and a loadable checkpoint.
"""
from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from engine.errors import CheckpointError

STATE_FILE = "state.json"


@dataclass
class RunState:
    """The pointer file's content: completed ``epoch`` (0 = none), folder names and history."""

    epoch: int = 0
    last: str | None = None
    best: str | None = None
    best_metric: float | None = None
    history: list = field(default_factory=list)
    config: dict = field(default_factory=dict)


def write_json_atomic(path: Path, data) -> None:
    """Write JSON to ``path`` through a temp file and ``os.replace`` (never half-written)."""
    from engine.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2, default=str), what="run state file")


def read_json(path: Path):
    """The JSON in ``path``, or ``None`` when it is missing or unreadable (callers start afresh)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def read_state(run_dir: Path) -> RunState | None:
    """The run's :class:`RunState`, or ``None`` when no epoch was ever completed."""
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"run state {path} is unreadable ({exc}); delete the run folder to restart") from exc
    return RunState(**data)


def epoch_dir(run_dir: Path, epoch: int) -> Path:
    """The folder holding the checkpoint after ``epoch``."""
    return Path(run_dir) / f"epoch-{epoch:04d}"


def save_optimizer(folder: Path, optimizer: torch.optim.Optimizer, scaler=None) -> None:
    """Save optimiser (+ scaler) state dicts (tensors/primitives only) atomically to ``optim.pt``.

    Serialised in memory first, then written with ``engine.fileio.atomic_write_bytes``, so a
    disk that refuses the write raises what that raises (a one-sentence ``StorageError`` naming
    the file and the fault, not torch's opaque stream error) and leaves no partial file."""
    from engine.fileio import atomic_write_bytes

    payload = {"optimizer": optimizer.state_dict()}
    if scaler is not None and scaler.is_enabled():
        payload["scaler"] = scaler.state_dict()
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(Path(folder) / "optim.pt", buffer.getvalue(), what="optimiser state")


def load_optimizer(folder: Path, optimizer: torch.optim.Optimizer, scaler=None) -> None:
    """Restore ``optim.pt`` with ``torch.load(weights_only=True)`` (no arbitrary unpickling)."""
    payload = torch.load(Path(folder) / "optim.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(payload["optimizer"])
    if scaler is not None and "scaler" in payload:
        scaler.load_state_dict(payload["scaler"])


def is_snapshot(folder_name: str, snapshot_every: int) -> bool:
    """Whether ``epoch-NNNN`` is one of the run's kept snapshots (every ``snapshot_every`` epochs)."""
    try:
        epoch = int(folder_name.split("-")[1])
    except (IndexError, ValueError):
        return False
    return snapshot_every > 0 and epoch % snapshot_every == 0


def commit_state(run_dir: Path, state: RunState, snapshot_every: int = 0) -> None:
    """Point ``state.json`` at the new folders, then delete epoch folders no longer referenced
    (the last, the best and, with ``snapshot_every`` > 0, every k-th epoch are kept)."""
    write_json_atomic(Path(run_dir) / STATE_FILE, state.__dict__)
    keep = {state.last, state.best}
    for folder in Path(run_dir).glob("epoch-*"):
        if folder.name not in keep and not is_snapshot(folder.name, snapshot_every):
            shutil.rmtree(folder, ignore_errors=True)


def list_snapshots(run_dir: Path) -> list[tuple[int, Path]]:
    """``(epoch, checkpoint stem)`` of every epoch checkpoint kept in a run folder, in order."""
    found = []
    for folder in Path(run_dir).glob("epoch-*"):
        try:
            epoch = int(folder.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if (folder / "model.json").is_file():
            found.append((epoch, folder / "model"))
    return sorted(found)
