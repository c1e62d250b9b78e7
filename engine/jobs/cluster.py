"""Run queued jobs on a Ray cluster (``python -m engine worker --ray ADDRESS``, or
``ROBUSTSCOPE_RAY_ADDRESS``): the SQLite store on the head stays the record of jobs and results;
Ray only runs them.

The head runs one dispatcher (this module's :func:`run_ray_worker`, a worker of lane ``ray``): it
claims jobs as a local worker does and hands each to Ray as a task with the resources it needs
(one CPU; one GPU for a ``cuda`` job), at most as many at once as the cluster has CPUs. A task:

- receives the request (as JSON) and the models' weights and cards through Ray's object store,
  keyed by sha256 (each node keeps them in ``$ROBUSTSCOPE_WEIGHTS_CACHE``, default
  ``~/.cache/robustscope/weights/<sha256>/``, checks the sha256, and drops the least recently used
  copies beyond ``$ROBUSTSCOPE_WEIGHTS_CACHE_MB``, default 20,000 MB), and reads the dataset from the
  data root its node was started with (``ROBUSTSCOPE_DATA`` in the environment of ``ray start``);
- reports progress and its partial (resume) state to a :class:`Channel` actor on the head, which
  the dispatcher copies into the job store's events and the results folder's ``.partial/<key>/``
  (the files changed since the last report, and which files the folder holds now);
- returns the result (arrays as ``.npz`` bytes, metadata): the dispatcher stores it atomically, as
  a local worker would, and records on the job which node ran it.

Faults: a node that dies mid-job makes Ray retry the task (``max_retries``) on another node, which
resumes from the partial state the head holds; an exception in the analysis itself is not retried:
the job fails with its one-line error (the traceback in the job's log). If the head's dispatcher
dies, Ray ends its tasks with it; the jobs it held are then marked interrupted by the next reader
(its pid is gone) and claimed again by the next dispatcher, resuming from the partial state on the
head — none is lost, none completes twice. Cancel reaches the task through the channel (it stops at
the next batch, storing nothing) and, when it does not stop within :data:`CANCEL_GRACE_S`, by
``ray.cancel``.

Ray is optional (``pip install -r requirements-cluster.txt``); without it this module says so.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import InvalidParameterError, RobustScopeError
from engine.jobs.store import Job, JobStore

RAY_ENV = "ROBUSTSCOPE_RAY_ADDRESS"
WEIGHTS_CACHE_ENV = "ROBUSTSCOPE_WEIGHTS_CACHE"
#: megabytes a node's weights cache may hold before its least recently used models are dropped
WEIGHTS_CACHE_MB_ENV, WEIGHTS_CACHE_MB = "ROBUSTSCOPE_WEIGHTS_CACHE_MB", 20_000
#: node failures Ray retries a task for (a task that raises is not retried)
MAX_RETRIES = 3
#: seconds a cancelled task may take to stop by itself before ``ray.cancel(force=True)``
CANCEL_GRACE_S = 15.0
#: seconds between a task's progress reports and looks at its cancel flag
REPORT_EVERY_S = 1.0


def require_ray():
    """The ``ray`` module, or InvalidParameterError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InvalidParameterError("running jobs on a Ray cluster needs Ray: pip install -r requirements-cluster.txt"
                                    ) from None
    return ray


def ray_address(explicit: str | None = None) -> str | None:
    """The cluster to use: ``explicit`` (``--ray``), else ``$ROBUSTSCOPE_RAY_ADDRESS``, else None."""
    return explicit or os.environ.get(RAY_ENV) or None


# ------------------------------------------------------------------------------- the channel
class Channel:
    """The head-side mailbox of running tasks (a Ray actor): progress events, partial state, the
    node each job runs on, and cancel flags. The dispatcher drains it every poll."""

    def __init__(self):
        self.events: list[tuple] = []
        self.states: dict[str, dict[str, bytes]] = {}
        self.changed: dict[str, tuple[dict[str, bytes], list[str]]] = {}
        self.nodes: list[tuple[int, dict]] = []
        self.cancelled: set[int] = set()
        self.outcomes: dict[int, dict] = {}

    def put_outcome(self, job_id: int, outcome: dict) -> None:
        """What rank 0 of a data-parallel training job finished with (its checkpoint's files)."""
        self.outcomes[job_id] = outcome

    def take_outcome(self, job_id: int) -> dict | None:
        return self.outcomes.pop(job_id, None)

    def event(self, job_id: int, kind: str, metrics: dict, position: dict) -> None:
        """A progress event, as ``JobStore.add_event`` takes it (``position``: epoch, epochs, batch,
        batches, eta_s)."""
        self.events.append((job_id, kind, metrics, position))

    def node(self, job_id: int, where: dict) -> None:
        self.nodes.append((job_id, where))

    def save_state(self, key: str, files: dict, present: list) -> None:
        """A task's state folder now: the ``files`` changed since its last report (name -> bytes)
        and the names of every file it holds (``present``: the others were deleted)."""
        kept = {name: data for name, data in self.states.get(key, {}).items() if name in present}
        self.states[key] = {**kept, **files}
        earlier, _ = self.changed.get(key, ({}, []))
        self.changed[key] = ({**earlier, **files}, list(present))

    def state(self, key: str) -> dict | None:
        return self.states.get(key)

    def cancel(self, job_id: int) -> None:
        self.cancelled.add(job_id)

    def is_cancelled(self, job_id: int) -> bool:
        return job_id in self.cancelled

    def drain(self) -> tuple[list, dict, list]:
        """(events, {key: (files changed since the last drain, names present now)}, nodes)."""
        events, self.events = self.events, []
        nodes, self.nodes = self.nodes, []
        states, self.changed = self.changed, {}
        return events, states, nodes

    def forget(self, key: str, job_id: int) -> None:
        self.states.pop(key, None)
        self.changed.pop(key, None)
        self.cancelled.discard(job_id)


# ------------------------------------------------------------------------------- on a node
def node_identity() -> dict:
    """Where this code runs: the Ray node id and the host name."""
    ray = require_ray()
    return {"node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


def weights_cache() -> Path:
    return Path(os.environ.get(WEIGHTS_CACHE_ENV) or Path.home() / ".cache" / "robustscope" / "weights")


def materialise(models: dict) -> dict[str, str]:
    """Write each model (sha256 -> {"name", "weights": bytes or ObjectRef, "card": bytes}) into
    this node's weights cache (once: checked by sha256); returns sha256 -> local weights path."""
    ray = require_ray()
    paths = {}
    for digest, spec in models.items():
        folder = weights_cache() / digest
        target = folder / f"{spec['name']}.safetensors"
        if not (target.is_file() and _sha256(target) == digest):
            data = spec["weights"] if isinstance(spec["weights"], bytes) else ray.get(spec["weights"])
            if hashlib.sha256(data).hexdigest() != digest:
                raise RobustScopeError(f"the weights sent for {spec['name']} do not have sha256 {digest[:12]}…")
            folder.mkdir(parents=True, exist_ok=True)
            from engine.fileio import atomic_write_bytes

            atomic_write_bytes(folder / f"{spec['name']}.json", spec["card"], what="model card")
            atomic_write_bytes(target, data, what="model weights")
        os.utime(folder)  # used now: the last to be dropped
        paths[digest] = str(target)
    prune_weights_cache(keep=set(models))
    return paths


def prune_weights_cache(keep: set[str], limit_mb: float | None = None) -> list[str]:
    """Drop the least recently used models of this node's weights cache (a model's folder is
    touched each time a task uses it) until it holds at most ``limit_mb`` megabytes (default
    ``$ROBUSTSCOPE_WEIGHTS_CACHE_MB``, else :data:`WEIGHTS_CACHE_MB`), never one of ``keep`` (the
    running task's); returns the sha256 of those dropped. A folder another task removes or uses
    meanwhile is skipped."""
    limit = float(os.environ.get(WEIGHTS_CACHE_MB_ENV) or WEIGHTS_CACHE_MB) if limit_mb is None else limit_mb
    try:
        folders = [f for f in weights_cache().iterdir() if f.is_dir()]
        sizes = {f: sum(p.stat().st_size for p in f.iterdir() if p.is_file()) for f in folders}
        used = {f: f.stat().st_mtime for f in folders}
    except OSError:
        return []
    total, dropped = sum(sizes.values()), []
    for folder in sorted(folders, key=used.get):
        if total <= limit * 2**20:
            break
        if folder.name in keep:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        total -= sizes[folder]
        dropped.append(folder.name)
    return dropped


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _localised(request_dict: dict, kind: str, paths: dict[str, str]):
    """The request with each model's path replaced by this node's copy (same sha256: same key)."""
    from engine.analysis import get_analysis

    analysis = get_analysis(kind)
    data = json.loads(json.dumps(request_dict))
    for name in analysis.request.MODEL_FIELDS:
        value = data[name]
        for ref in value if isinstance(value, list) else [value]:
            ref["path"] = paths[ref["sha256"]]
    return analysis.request.from_dict(data)


class _TaskLink:
    """A task's progress callback and stop flag, through the head's :class:`Channel`."""

    def __init__(self, channel, job_id: int):
        from engine.jobs.worker import BatchProgress

        self.channel, self.job_id = channel, job_id
        self.last_report = self.last_look = 0.0
        self.cancelled = False
        self.progress = BatchProgress(lambda metrics, position: channel.event.remote(job_id, "batch", metrics,
                                                                                    position), REPORT_EVERY_S)

    def training(self, ev) -> None:
        """A trainer's progress event (``ProgressEvent``): epochs always, batches at most once a
        second — what a local worker records, so the Training page's curves look the same."""
        now = time.monotonic()
        if ev.kind == "batch" and now - self.last_report < REPORT_EVERY_S and ev.batch < ev.batches:
            return
        self.last_report = now
        self.channel.event.remote(self.job_id, ev.kind, ev.metrics, {"epoch": ev.epoch, "epochs": ev.epochs,
                                                                     "batch": ev.batch, "batches": ev.batches,
                                                                     "eta_s": ev.eta_s})

    def should_stop(self) -> bool:
        ray = require_ray()
        now = time.monotonic()
        if not self.cancelled and now - self.last_look >= REPORT_EVERY_S:
            self.last_look = now
            self.cancelled = bool(ray.get(self.channel.is_cancelled.remote(self.job_id)))
        return self.cancelled


class _StateSync(threading.Thread):
    """Copies a task's state folder (an analysis' partial state, a training run's folder) to the
    head's channel, whole, whenever a file in it changes; the head writes it where a local worker
    keeps it, so a retry on another node (or ``jobs resume``) continues from it."""

    def __init__(self, folder: Path, channel, key: str):
        super().__init__(daemon=True, name=f"state-sync-{key[:12]}")
        self.folder, self.channel, self.key = folder, channel, key
        self.done = threading.Event()
        self.seen: dict[str, tuple[int, int]] = {}

    def run(self) -> None:
        while not self.done.wait(REPORT_EVERY_S):
            self.push()

    def push(self, wait: bool = False) -> None:
        """Send the files changed since the last push and the names of all (a training run sends
        each epoch once, not the whole folder at every epoch); a folder being replaced this instant
        is sent at the next look. ``wait``: until the head's channel has it (the last push of a
        task, before it returns)."""
        try:
            now = folder_stamps(self.folder)
            changed = [name for name, stamp in now.items() if self.seen.get(name) != stamp]
            if now and (changed or now.keys() != self.seen.keys()):
                files = {name: (self.folder / name).read_bytes() for name in changed}
                sent = self.channel.save_state.remote(self.key, files, sorted(now))
                if wait:
                    require_ray().get(sent)
                self.seen = now
        except OSError as exc:
            logging.getLogger("engine.jobs").debug("state of %s not sent this time: %s", self.key, exc)


def folder_stamps(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` by its relative path (``/``-separated): (mtime in ns, size)."""
    stamps = {}
    for path in folder.rglob("*"):
        if path.is_file():
            info = path.stat()
            stamps[path.relative_to(folder).as_posix()] = (info.st_mtime_ns, info.st_size)
    return stamps


def folder_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by its relative path (``/``-separated)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def write_files(folder: Path, files: dict[str, bytes], present: list[str] | None = None) -> None:
    """Write :func:`folder_files`' output under ``folder`` (atomically per file); a path that
    would leave the folder is refused. ``present``: the names the folder holds now; any other
    file under it is deleted (what the task deleted, e.g. a training run's superseded epochs)."""
    from engine.fileio import atomic_write_bytes

    for name in [*files, *(present or [])]:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise RobustScopeError(f"refusing a state file outside its folder: {name!r}")
    for name, data in files.items():
        target = folder.joinpath(*Path(name).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data, what="job state")
    if present is not None and folder.is_dir():
        for name in set(folder_stamps(folder)) - set(present) - set(files):
            (folder / name).unlink(missing_ok=True)
        for sub in sorted((d for d in folder.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
            if not any(sub.iterdir()):
                sub.rmdir()  # an epoch folder the task deleted: gone here too, not left empty


#: the channel key of a training job's run folder
def run_key(job_id: int) -> str:
    return f"run/{int(job_id)}"


def run_analysis_task(payload: dict, channel) -> dict:
    """Run one analysis job on this node (a Ray task body): see the module docstring.

    Returns:
        ``{"status": "done", "key", "arrays": npz bytes, "meta", "seconds", "created", "version",
        "notes", "node"}`` or ``{"status": "cancelled", "node"}``.
    """
    import numpy as np
    import torch

    from engine.analysis import AnalysisCancelled, ResultStore, run_analysis

    ray = require_ray()
    torch.set_num_threads(max(1, int(payload.get("threads", 1))))
    where = node_identity()
    channel.node.remote(payload["job_id"], where)
    request = _localised(payload["request"], payload["kind"], materialise(payload["models"]))
    link = _TaskLink(channel, payload["job_id"])
    with tempfile.TemporaryDirectory(prefix="robustscope-task-") as scratch:
        store = ResultStore(Path(scratch) / "results")
        key = request.key()
        partial = store.partial_dir(key)
        files = ray.get(channel.state.remote(key)) or payload.get("state")
        if files:
            write_files(partial, files)
        sync = _StateSync(partial, channel, key)
        sync.start()
        try:
            result = run_analysis(request, progress=link.progress, should_stop=link.should_stop,
                                  use_cache=False, device=payload.get("device", "auto"), store=store, resume=True)
        except AnalysisCancelled:
            return {"status": "cancelled", "node": where}
        finally:
            sync.done.set()
            sync.join(timeout=5)
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in result.arrays.items()})
    return {"status": "done", "key": result.key, "arrays": buffer.getvalue(), "meta": result.meta,
            "seconds": result.seconds, "created": result.created, "version": result.version,
            "notes": list(result.notes), "node": where}


def _train_here(payload: dict, channel, rank: int = 0) -> dict:
    """Train ``payload``'s job in this process into a scratch run folder (rank 0 reports progress);
    returns its status, epochs and the published checkpoint's files (weights and card bytes) for the
    head to publish."""
    import torch

    from engine.training import train
    from engine.training.config import TrainConfig

    torch.set_num_threads(max(1, int(payload.get("threads", 1))))
    where = node_identity()
    channel.node.remote(payload["job_id"], {**where, "rank": rank})
    link = _TaskLink(channel, payload["job_id"])
    config = TrainConfig.from_dict(payload["config"])

    def progress(ev) -> None:
        if rank == 0:
            link.training(ev)

    ray = require_ray()
    with tempfile.TemporaryDirectory(prefix="robustscope-train-") as scratch:
        os.environ["ROBUSTSCOPE_CHECKPOINTS"] = str(Path(scratch) / "checkpoints")
        run_dir = Path(scratch) / "run"
        key = run_key(payload["job_id"])
        earlier = ray.get(channel.state.remote(key)) or payload.get("run_files")
        if earlier:   # an earlier attempt's finished epochs: resume from them, as a local job does
            write_files(run_dir, earlier)
        sync = _StateSync(run_dir, channel, key) if rank == 0 else None
        if sync is not None:
            sync.start()
        try:
            result = train(config, run_dir=run_dir, progress=progress, should_stop=link.should_stop)
        finally:
            if sync is not None:
                sync.done.set()
                sync.join(timeout=5)
                sync.push(wait=True)
        files = {}
        if result.checkpoint:
            stem = Path(result.checkpoint).with_suffix("")
            files = {suffix: stem.with_suffix(suffix).read_bytes() for suffix in (".safetensors", ".json")}
    return {"status": result.status, "files": files, "name": Path(result.checkpoint).stem if result.checkpoint
            else None, "epochs": result.epochs_completed, "resumed_from": result.resumed_from, "node": where}


def run_training_task(payload: dict, channel) -> dict:
    """Train one single-process job on this node (a Ray task body): :func:`_train_here`."""
    return _train_here(payload, channel)


def _ddp_worker(loop: dict) -> None:
    """One process of a data-parallel training job, run by Ray Train (which has set up the torch
    process group): the trainer sees ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` as under torchrun;
    rank 0 hands the outcome to the head's channel."""
    import ray.train

    context = ray.train.get_context()
    rank = context.get_world_rank()
    os.environ.update({"WORLD_SIZE": str(context.get_world_size()), "RANK": str(rank),
                       "LOCAL_RANK": str(context.get_local_rank())})
    outcome = _train_here(loop["payload"], loop["channel"], rank)
    if rank == 0:
        ray.get(loop["channel"].put_outcome.remote(loop["payload"]["job_id"], outcome))


def run_ddp_training_task(payload: dict, channel) -> dict:
    """Train one data-parallel job (``workers`` > 1) through Ray Train's ``TorchTrainer``: one
    process per worker (a GPU each for a ``cuda`` job), placed by Ray on one or several nodes."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    ray = require_ray()
    with tempfile.TemporaryDirectory(prefix="robustscope-ddp-") as scratch:
        TorchTrainer(_ddp_worker, train_loop_config={"payload": payload, "channel": channel},
                     scaling_config=ScalingConfig(num_workers=int(payload["workers"]), use_gpu=bool(payload["gpu"])),
                     run_config=RunConfig(storage_path=scratch, name=f"robustscope-job-{payload['job_id']}")).fit()
    outcome = ray.get(channel.take_outcome.remote(payload["job_id"]))
    if outcome is None:
        raise RobustScopeError("the data-parallel run ended without rank 0's checkpoint")
    return outcome


# ------------------------------------------------------------------------------- on the head
@dataclass
class _Running:
    """A job handed to Ray: its task, when it started, and when a cancel was sent."""

    job: Job
    ref: object
    key: str | None = None
    cancel_sent: float | None = None
    node: dict = field(default_factory=dict)


class Dispatcher:
    """The head's loop: claim jobs, hand them to Ray, copy progress and partial state back, store
    results, cancel. One per runs folder, lane and settings (its own lock file, ``ray-*.lock``)."""

    def __init__(self, store: JobStore, address: str, max_in_flight: int | None = None, threads: int = 1):
        self.ray = require_ray()
        self.store, self.address, self.threads = store, address, threads
        self.max_in_flight = max_in_flight
        self.running: dict[object, _Running] = {}
        self.weights: dict[str, object] = {}
        self.log = logging.getLogger("engine.jobs")

    def connect(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise InvalidParameterError(f"cannot reach the Ray cluster at {self.address}: {exc}") from None
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
        self.channel = ray.remote(num_cpus=0)(Channel).options(scheduling_strategy=here).remote()   # on the head
        self.analysis_task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(run_analysis_task)
        self.training_task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(run_training_task)
        self.ddp_task = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(run_ddp_training_task)

    # -- capacity and claiming
    def capacity(self) -> int:
        if self.max_in_flight:
            return self.max_in_flight
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def submit(self, job: Job) -> _Running:
        """Hand a claimed job to Ray."""
        gpus = 1 if str(getattr(job.config, "device", "") or "").startswith("cuda") else 0
        if job.is_analysis:
            request = job.config.request
            payload = {"job_id": job.id, "kind": request.kind, "request": request.to_dict(),
                       "device": job.config.device, "models": self._models(request), "threads": self.threads,
                       "state": self._head_state(request.key())}
            ref = self.analysis_task.options(num_cpus=1, num_gpus=gpus).remote(payload, self.channel)
            return _Running(job, ref, key=request.key())
        run_dir = self.store.job_dir(job.id) / "run"
        payload = {"job_id": job.id, "config": job.config.to_dict(), "threads": self.threads,
                   "workers": job.config.workers, "gpu": bool(gpus),
                   "run_files": folder_files(run_dir) if run_dir.is_dir() else None}
        if job.config.workers > 1:   # Ray Train places the processes; this task only drives them
            return _Running(job, self.ddp_task.options(num_cpus=0).remote(payload, self.channel))
        return _Running(job, self.training_task.options(num_cpus=1, num_gpus=gpus).remote(payload, self.channel))

    def _models(self, request) -> dict:
        """sha256 -> {"name", "weights": object-store ref, "card": bytes} of the request's models."""
        from engine.checkpoints.files import checkpoint_files

        out = {}
        for ref in request.model_refs():
            weights, card = checkpoint_files(ref.path)
            if ref.sha256 not in self.weights:
                data = Path(weights).read_bytes()
                if hashlib.sha256(data).hexdigest() != ref.sha256:
                    raise RobustScopeError(f"{ref.path} now holds other weights than the request names (it was replaced)")
                self.weights[ref.sha256] = self.ray.put(data)
            out[ref.sha256] = {"name": Path(weights).stem, "weights": self.weights[ref.sha256],
                               "card": Path(card).read_bytes()}
        return out

    def _head_state(self, key: str) -> dict | None:
        """The partial state the head holds for ``key`` (from an earlier attempt), as files."""
        folder = self._results().partial_dir(key)
        if not folder.is_dir():
            return None
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} or None

    def _results(self):
        from engine.analysis import ResultStore

        return ResultStore(self.store.root / "results")

    # -- one poll
    def poll(self, timeout_s: float) -> int:
        """Copy progress and state back, send cancels, collect finished tasks; returns how many
        jobs ended."""
        self._drain()
        for running in list(self.running.values()):
            self._heartbeat(running)
        ready, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=timeout_s) \
            if self.running else ([], [])
        for ref in ready:
            self._finish(self.running.pop(ref), ref)
        return len(ready)

    def _drain(self) -> None:
        events, states, nodes = self.ray.get(self.channel.drain.remote())
        for job_id, kind, metrics, position in events:
            _event(self.store, job_id, kind, metrics, **position)
        for job_id, where in nodes:
            _event(self.store, job_id, "node", where)
            for running in self.running.values():
                if running.job.id == job_id:
                    running.node = where
        for key, (files, present) in states.items():
            write_files(self._state_folder(key), files, present)

    def _state_folder(self, key: str) -> Path:
        """Where the head keeps a task's state: a training job's run folder (``run/<id>``), else the
        analysis' partial state in the results folder."""
        if key.startswith("run/"):
            return self.store.job_dir(int(key.split("/", 1)[1])) / "run"
        return self._results().partial_dir(key)

    def _heartbeat(self, running: _Running) -> None:
        try:
            cancel = self.store.heartbeat(running.job.id)
        except RobustScopeError as exc:
            self.log.warning("job %d: heartbeat failed: %s", running.job.id, exc)
            return
        if cancel and running.cancel_sent is None:
            self.channel.cancel.remote(running.job.id)
            running.cancel_sent = time.monotonic()
        elif running.cancel_sent is not None and time.monotonic() - running.cancel_sent > CANCEL_GRACE_S:
            self.ray.cancel(running.ref, force=True)

    def _finish(self, running: _Running, ref) -> None:
        """Record the outcome of a finished task on its job (and store an analysis' result); what
        the task sent before it returned (its last state and events) is drained first."""
        self._drain()
        job = running.job
        try:
            outcome = self.ray.get(ref)
        except self.ray.exceptions.TaskCancelledError:
            self.store.finish(job.id, "cancelled")
            return
        except self.ray.exceptions.RayTaskError as exc:   # the job's own error: one line
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            from engine.jobs.worker import error_message

            self.log.error("job %d failed on %s: %s", job.id, running.node.get("host", "?"), exc)
            self.store.finish(job.id, "failed", error=error_message(cause))
            return
        except self.ray.exceptions.RayError as exc:   # the node kept dying: retries used up
            self.store.finish(job.id, "failed", error=f"the Ray task was lost {MAX_RETRIES + 1} times "
                              f"({type(exc).__name__}); `python -m engine jobs resume {job.id}` to retry")
            return
        if outcome["status"] == "cancelled" or (running.cancel_sent is not None and outcome["status"] != "done"):
            self.store.finish(job.id, "cancelled")
        elif job.is_analysis:
            self._store_result(job, outcome)
        else:
            self._publish_training(job, outcome)
        self.channel.forget.remote(running.key or run_key(job.id), job.id)
        if running.key:   # an analysis done or stopped: no attempt resumes from its partial state any more
            shutil.rmtree(self._results().partial_dir(running.key), ignore_errors=True)

    def _store_result(self, job: Job, outcome: dict) -> None:
        import numpy as np

        from engine.analysis.base import AnalysisResult

        with np.load(io.BytesIO(outcome["arrays"]), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        result = AnalysisResult(job.config.request.kind, outcome["key"], job.config.request, arrays, outcome["meta"],
                                outcome["seconds"], outcome["created"], cached=False, version=outcome["version"])
        self._results().save(result)
        self.store.finish(job.id, "done", result_key=result.key)

    def _publish_training(self, job: Job, outcome: dict) -> None:
        from engine.checkpoints.store import checkpoints_root
        from engine.fileio import atomic_write_bytes, free_stem

        checkpoint = None
        if outcome.get("files"):
            folder = checkpoints_root()
            folder.mkdir(parents=True, exist_ok=True)
            stem = free_stem(folder, outcome["name"], (".safetensors", ".json"))
            for suffix in (".safetensors", ".json"):
                atomic_write_bytes(stem.with_suffix(suffix), outcome["files"][suffix], what="checkpoint")
            checkpoint = str(stem.with_suffix(".safetensors"))
        if outcome.get("resumed_from"):
            _event(self.store, job.id, "resumed", {"from_epoch": int(outcome["resumed_from"])})
        self.store.finish(job.id, outcome["status"], checkpoint=checkpoint)


def _event(store: JobStore, job_id: int, kind: str, metrics: dict, **position) -> None:
    try:
        store.add_event(job_id, kind, metrics, **position)
    except RobustScopeError as exc:
        logging.getLogger("engine.jobs").warning("job %d: progress not recorded: %s", job_id, exc)


def run_ray_worker(store: JobStore | None = None, address: str | None = None, once: bool = False,
                   poll_s: float = 0.5, idle_exit_s: float | None = None, lane: str = "all",
                   max_in_flight: int | None = None, owner_pid: int | None = None) -> int:
    """The dispatcher loop (see the module docstring): claim jobs of ``lane`` while the cluster has
    room, run them as Ray tasks, record their outcomes. Returns the number of jobs that ended;
    -1 when another dispatcher holds the lock for this runs folder.

    Raises:
        InvalidParameterError: Ray is not installed or the cluster cannot be reached.
    """
    from engine.jobs.worker import WorkerLock, _beat, _claim, _Owner, device_description, lock_path, pid_path

    store = store or JobStore()
    address = ray_address(address)
    if not address:
        raise InvalidParameterError(f"give the Ray cluster's address (--ray ADDRESS or {RAY_ENV})")
    settings = store.settings()
    local = lock_path(store, lane, settings)
    lock = WorkerLock(local.with_name(f"ray-{local.name}"))   # one dispatcher per lane and settings
    if not lock.acquire():
        return -1
    dispatcher = Dispatcher(store, address, max_in_flight)
    pid, owner = os.getpid(), _Owner(owner_pid)
    ended, idle_since = 0, time.monotonic()
    pid_file = pid_path(store, lane, settings)   # the dashboard sees a worker for this lane running
    try:
        pid_file.write_text(str(pid))
        dispatcher.connect()
        device = f"Ray cluster {address} ({device_description()} head)"
        while True:
            _beat(store, pid, lane, settings, owner.pid, device)
            while len(dispatcher.running) < dispatcher.capacity():
                job = _claim(store, pid, lane, settings)
                if job is None:
                    break
                try:
                    running = dispatcher.submit(job)
                except RobustScopeError as exc:   # e.g. its checkpoint was replaced since it was queued
                    from engine.jobs.worker import error_message

                    store.finish(job.id, "failed", error=error_message(exc))
                    ended += 1
                    continue
                dispatcher.running[running.ref] = running
            done = dispatcher.poll(poll_s)
            ended += done
            if dispatcher.running or done:
                idle_since = time.monotonic()
                continue
            if owner.is_gone() or once or (idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s):
                return ended
            time.sleep(poll_s)
    finally:
        try:
            store.unregister_worker(pid)
        except RobustScopeError as exc:   # a store that broke meanwhile: the row is ignored once stale
            logging.getLogger("engine.jobs").warning("could not remove dispatcher %d's row: %s", pid, exc)
        pid_file.unlink(missing_ok=True)
        lock.release()
        if dispatcher.ray.is_initialized():
            dispatcher.ray.shutdown()
