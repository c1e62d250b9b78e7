"""The worker: claim a job -> train it or run its analysis -> record the outcome, one job at a time.

Settings: a worker reads its settings (``engine.paths.current_settings``: data root, checkpoints
folder, analysis plugins, visible GPUs; the runs folder is its job store's) from its environment
when it starts, and claims only jobs submitted with the same settings (and jobs from before
settings were recorded). A job submitted with other settings is never run with the wrong ones: it
waits, and ``JobStore.waiting_reason`` says for which settings; :func:`ensure_worker` starts a
worker with a job's settings (its environment set from them).

Liveness: a running worker holds an exclusive ``fcntl`` lock on
``<runs>/[analysis-]worker-<settings key>.lock`` (released by the OS even on ``kill -9``) and
writes its pid next to it (``.pid``), so workers of different settings coexist; it also keeps a
row in the store's ``workers`` table (lane, settings, device, owner, current job) for the pages.
A background thread refreshes the running job's heartbeat and picks up cancel requests. Before
each claim the worker marks running jobs left by a dead worker ``interrupted``; they are claimed
again and resume from their last completed epoch (training) or their last saved partial state
(CKA) or from the start. A job whose worker died ``MAX_ATTEMPTS`` times is given up on (failed);
a training job's finished epochs are then published and its error says where they are and that
``jobs resume ID`` continues from them (:func:`keep_finished_epochs`).

Owner: a worker started by the dashboard (``ensure_worker(owner_pid=...)``, ``--owner-pid``) exits
when that process is gone (checked every :data:`OWNER_CHECK_S` seconds between jobs; a job it is
running is finished first). A worker started by hand has no owner and runs until stopped (or
``--idle-exit``).

Lanes (one worker per lane, runs folder and settings): the ``all`` lane (``python -m engine
worker``) runs analyses and training, analyses first; the ``analysis`` lane (started by
``--background`` and the dashboard when an analysis is queued) runs analyses only, short ones
first; the ``short`` lane (started when an analysis estimated at most ``SHORT_S`` seconds is
queued) runs only those. So an analysis never waits hours behind a training run, and short work
never waits behind a long analysis: each lane's worker takes its own (they then share the CPU).

Errors: a failed job's ``error`` is one line (a ``RobustScopeError``'s message, else
``"<ExceptionType>: <message>"``); the traceback goes to the job's log. A progress event the store
fails to record is logged, never allowed to stop the job. A store that cannot be used (read-only,
full disk) ends the worker with ``error: <one sentence>`` (exit status 1); a damaged one is moved
aside by the store, and the worker says so in one line and goes on with the fresh store.

Start-up: ``engine.jobs.command.worker_main`` is ``python -m engine.jobs`` (the worker alone, without the CLI's
command discovery); ``python -m engine worker`` registers the same options
(``engine.jobs.command.add_worker_arguments``) and runs the same ``worker_command``, which runs
this loop, or the Ray dispatcher (``engine.jobs.cluster``) when a cluster is given.
"""
from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from engine.errors import RobustScopeError
from engine.jobs.store import LANES, Job, JobStore, JobStoreDamaged, pid_alive, process_started
from engine.paths import apply_env, settings_key

HEARTBEAT_S = 2.0
#: seconds between checks that a worker's owner (the dashboard that started it) is still alive
OWNER_CHECK_S = 2.0
#: the longest stored error line (the log has the rest)
MAX_ERROR_CHARS = 500
BATCH_EVENT_EVERY_S = 1.0
_REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WorkerLock:
    """An exclusive, non-blocking ``fcntl`` lock file; ``acquire()`` -> bool, ``release()``."""

    path: Path
    _fh: object = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            return False
        self._fh = fh
        return True

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


def _lane_prefix(lane: str) -> str:
    if lane not in LANES or lane == "train":
        raise ValueError(f"worker lane must be 'all', 'analysis' or 'short', got {lane!r}")
    return "" if lane == "all" else f"{lane}-"


def _file_stem(store: JobStore, lane: str, settings: dict | None) -> str:
    key = settings_key(store.settings() if settings is None else settings)
    return f"{_lane_prefix(lane)}worker-{key}"


def lock_path(store: JobStore, lane: str = "all", settings: dict | None = None) -> Path:
    """The lock a worker of ``lane`` with ``settings`` (default: this process's) holds."""
    return store.root / f"{_file_stem(store, lane, settings)}.lock"


def pid_path(store: JobStore, lane: str = "all", settings: dict | None = None) -> Path:
    """Where that worker writes its pid."""
    return store.root / f"{_file_stem(store, lane, settings)}.pid"


def log_path(store: JobStore, lane: str = "all", settings: dict | None = None) -> Path:
    """Where a worker :func:`ensure_worker` starts writes its own output (each job has its log)."""
    return store.root / f"{_file_stem(store, lane, settings)}.log"


def worker_alive(store: JobStore | None = None, lane: str = "all", settings: dict | None = None) -> bool:
    """Whether a worker of ``lane`` with ``settings`` (default: this process's, i.e. one that
    claims the jobs submitted here) currently holds its lock (i.e. is alive)."""
    store = store or JobStore()
    probe = WorkerLock(lock_path(store, lane, settings))
    if probe.acquire():
        probe.release()
        return False
    return True


def ensure_worker(store: JobStore | None = None, idle_exit_s: float | None = 1800.0, lane: str = "all",
                  owner_pid: int | None = None, settings: dict | None = None) -> int | None:
    """Start a detached worker process (new session) unless one of ``lane`` with ``settings`` is alive.

    Args:
        store: the job store (default: ``$ROBUSTSCOPE_RUNS``).
        idle_exit_s: the started worker exits after this many idle seconds (``None`` = never);
            the dashboard calls this on every run, so a new one starts when needed.
        lane: "all" (training and analyses) or "analysis" (analyses only).
        owner_pid: the started worker exits when this process is gone (after the job it is
            running); the dashboard passes ``os.getpid()``. ``None``: no owner.
        settings: the settings the worker runs with (a job's ``settings``, so it claims that
            job); default: this process's (``store.settings()``). The child's environment is
            this process's with ``ROBUSTSCOPE_DATA``, ``ROBUSTSCOPE_CHECKPOINTS``,
            ``ROBUSTSCOPE_RUNS``, ``ROBUSTSCOPE_ANALYSES`` and ``CUDA_VISIBLE_DEVICES`` set (or
            removed) from them.

    Returns:
        The pid of the started process, or ``None`` when such a worker was already alive.
    """
    store = store or JobStore()
    settings = dict(store.settings() if settings is None else settings)
    settings["runs_root"] = str(store.root.resolve())  # a worker serves the store it is started for
    if worker_alive(store, lane, settings):
        return None
    cmd = [sys.executable, "-m", "engine.jobs", "--runs", str(store.root.resolve()), "--lane", lane]
    if idle_exit_s is not None:
        cmd += ["--idle-exit", str(idle_exit_s)]
    if owner_pid is not None:
        cmd += ["--owner-pid", str(int(owner_pid))]
    env = apply_env(os.environ, settings)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    with open(log_path(store, lane, settings), "ab") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                cwd=os.getcwd(), start_new_session=True)
    return proc.pid


class _Heartbeat(threading.Thread):
    """Refreshes the job's heartbeat every ``HEARTBEAT_S`` and sets ``cancel`` when requested."""

    def __init__(self, store: JobStore, job_id: int):
        super().__init__(daemon=True, name=f"heartbeat-{job_id}")
        self.store, self.job_id = store, job_id
        self.cancel = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(HEARTBEAT_S):
            try:
                if self.store.heartbeat(self.job_id):
                    self.cancel.set()
            except RobustScopeError as exc:  # the store's own one-line message (busy, full, moved aside)
                logging.getLogger("engine.jobs").warning("heartbeat failed: %s", exc)
            except Exception:  # noqa: BLE001 - a busy database must not kill the heartbeat
                logging.getLogger("engine.jobs").warning("heartbeat failed", exc_info=True)


def _report(store: JobStore, job_id: int, kind: str, metrics: dict, **position) -> None:
    """Store a progress event; a store that fails meanwhile (full disk, damaged and moved aside)
    is logged, never allowed to stop the job (its outcome is recorded, or said, at the end)."""
    try:
        store.add_event(job_id, kind, metrics, **position)
    except RobustScopeError as exc:
        logging.getLogger("engine.jobs").warning("job %d: progress not recorded: %s", job_id, exc)


class _Reporter:
    """Progress callback: epoch events always, batch events at most once per second."""

    def __init__(self, store: JobStore, job_id: int):
        self.store, self.job_id, self.last = store, job_id, 0.0

    def __call__(self, ev) -> None:
        now = time.monotonic()
        if ev.kind == "batch" and now - self.last < BATCH_EVENT_EVERY_S and ev.batch < ev.batches:
            return
        self.last = now
        _report(self.store, self.job_id, ev.kind, ev.metrics, epoch=ev.epoch, epochs=ev.epochs,
                batch=ev.batch, batches=ev.batches, eta_s=ev.eta_s)


def _job_logger(path: Path) -> tuple[logging.Logger, logging.Handler]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("engine")
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    return logger, handler


class BatchProgress:
    """An analysis' ``progress(done, total)`` as ``batch`` events with the time left:
    ``send(metrics, position)`` at most once every ``every_s`` seconds, and always for the last."""

    def __init__(self, send, every_s: float = BATCH_EVENT_EVERY_S):
        self.send, self.every_s, self.last, self.start = send, every_s, 0.0, time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < self.every_s and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (total - done) / rate if done and rate > 0 else None
        self.send({"done": int(done), "total": int(total)}, {"batch": int(done), "batches": int(total), "eta_s": eta})


def _analysis_reporter(store: JobStore, job_id: int) -> BatchProgress:
    """Progress callback of an analysis run here: its batch events go to the job store."""
    return BatchProgress(lambda metrics, position: _report(store, job_id, "batch", metrics, **position))


def error_message(exc: BaseException) -> str:
    """A failed job's stored error: one line (a ``RobustScopeError``'s message, which says what to
    do; else ``"<ExceptionType>: <message>"``), at most :data:`MAX_ERROR_CHARS` characters."""
    text = " ".join(str(exc).split())
    if not isinstance(exc, RobustScopeError) or not text:
        text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _supervised(store: JobStore, job: Job, body) -> str:
    """Run ``body(logger, beat) -> status`` with the job's log file and heartbeat; a crash is
    recorded as a failed job with a one-line error (:func:`error_message`), its traceback in the
    job's log. Returns the final status."""
    logger, handler = _job_logger(store.log_path(job.id))
    beat = _Heartbeat(store, job.id)
    beat.start()
    try:
        logger.info("job %d (%s) attempt %d started by worker pid %d", job.id, job.name, job.attempts, os.getpid())
        return body(logger, beat)
    except Exception as exc:  # noqa: BLE001 - any crash is recorded as a failed job
        error = error_message(exc)
        logger.error("job %d failed: %s\n%s", job.id, error, traceback.format_exc())
        store.finish(job.id, "failed", error=error)
        return "failed"
    finally:
        beat.stopped.set()
        beat.join(timeout=5)
        logger.removeHandler(handler)
        handler.close()


def run_analysis_job(store: JobStore, job: Job) -> str:
    """Run an analysis job (already claimed) through ``engine.analysis.run_analysis``; the result
    goes to ``<runs>/results`` and its key onto the job. Same logging/heartbeat/cancel as training."""
    from engine.analysis import AnalysisCancelled, ResultStore, run_analysis

    def body(logger, beat) -> str:
        spec = job.config
        spec.request.validate()
        try:
            result = run_analysis(spec.request, progress=_analysis_reporter(store, job.id),
                                  should_stop=beat.cancel.is_set, use_cache=spec.use_cache, device=spec.device,
                                  store=ResultStore(store.root / "results"))
        except AnalysisCancelled:
            store.finish(job.id, "cancelled")
            logger.info("job %d cancelled; nothing stored", job.id)
            return "cancelled"
        for note in result.notes:
            logger.warning(note)
        store.finish(job.id, "done", result_key=result.key)
        logger.info("job %d done: result %s (%s, %.1f s)", job.id, result.key,
                    "stored earlier" if result.cached else "computed", result.seconds)
        return "done"

    return _supervised(store, job, body)


def run_job(store: JobStore, job: Job) -> str:
    """Run ``job`` (already claimed): train it, or run its analysis; record events, log,
    heartbeat and the outcome.

    Returns:
        The final status: ``"done"``, ``"cancelled"`` or ``"failed"`` (a one-line error stored,
        the traceback in the job's log).
    """
    if job.is_analysis:
        return run_analysis_job(store, job)
    from engine.training import train

    def body(logger, beat) -> str:
        result = train(job.config, run_dir=store.job_dir(job.id) / "run", progress=_Reporter(store, job.id),
                       should_stop=beat.cancel.is_set)
        store.finish(job.id, result.status,
                     checkpoint=str(result.checkpoint) if result.checkpoint else None,
                     best_checkpoint=str(result.best_checkpoint) if result.best_checkpoint else None)
        logger.info("job %d %s after %d epoch(s)", job.id, result.status, result.epochs_completed)
        return result.status

    return _supervised(store, job, body)


def keep_finished_epochs(store: JobStore, job: Job) -> Job:
    """A training job given up on (its worker died ``MAX_ATTEMPTS`` times, ``JobStore.give_up``):
    publish its last and best finished epochs (``engine.training.publish_saved``; the model picker
    lists them) and name them in its error. A failure to publish is logged: its error already
    says where the run folder keeps the last finished epoch. Returns the job as recorded."""
    if job.is_analysis:
        return job
    from engine.training import publish_saved

    log = logging.getLogger("engine.jobs")
    try:
        checkpoint, best = publish_saved(job.config, store.job_dir(job.id) / "run", status="failed")
    except Exception as exc:  # noqa: BLE001 - the epochs stay in the run folder whatever happens here
        log.warning("job %d: its finished epochs could not be published: %s", job.id, error_message(exc))
        return job
    if checkpoint is None:
        return job
    log.info("job %d given up on: its last finished epoch is published as %s", job.id, checkpoint)
    return store.record_published(job.id, checkpoint, best)


def _clean_leftovers(store: JobStore) -> None:
    """Remove temp files that killed writers left in the runs and checkpoints folders."""
    from engine.checkpoints import default_roots
    from engine.checkpoints.store import recover_publishes
    from engine.fileio import remove_stale_temps

    for folder in default_roots():
        recover_publishes(folder)  # before cleaning: an interrupted publish's card is a temp file
    for folder in [store.root, *default_roots()]:
        for path in remove_stale_temps(folder):
            logging.getLogger("engine.jobs").info("removed leftover temp file %s", path)
    from engine.analysis.store import ResultStore

    for path in ResultStore(store.root / "results").clean():
        logging.getLogger("engine.jobs").info("removed leftover result folder %s", path)


def device_description() -> str:
    """What ``device="auto"`` means in this process: ``"cuda (<GPU name>[ x N])"``, ``"mps"`` or ``"cpu"``."""
    try:
        import torch

        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            return f"cuda ({torch.cuda.get_device_name(0)}{f' x {count}' if count > 1 else ''})"
        backend = getattr(torch.backends, "mps", None)
        return "mps" if backend is not None and backend.is_available() else "cpu"
    except Exception as exc:  # noqa: BLE001 - a broken driver must not stop the worker from listing itself
        return f"unknown ({type(exc).__name__})"


class _Owner:
    """The process a worker stops with (``None``: none); its start time guards against pid reuse."""

    def __init__(self, pid: int | None):
        self.pid = int(pid) if pid else None
        self.started = process_started(self.pid) if self.pid else None
        self.checked = float("-inf")
        self.gone = self.pid is not None and not pid_alive(self.pid)

    def is_gone(self) -> bool:
        """Whether the owner has exited (looked up at most every :data:`OWNER_CHECK_S` seconds)."""
        if self.pid is None or self.gone:
            return self.gone
        now = time.monotonic()
        if now - self.checked >= OWNER_CHECK_S:
            self.checked = now
            self.gone = not pid_alive(self.pid) or (
                self.started is not None and process_started(self.pid) != self.started)
        return self.gone


def run_worker(store: JobStore | None = None, once: bool = False, poll_s: float = 1.0,
               idle_exit_s: float | None = None, lane: str = "all", owner_pid: int | None = None) -> int:
    """The worker loop: recover orphaned jobs, then claim -> run -> record until stopped.

    The worker's settings are this process's (``store.settings()``); it claims only jobs with the
    same settings (or none recorded). Before claiming it gives up on jobs whose worker died
    ``MAX_ATTEMPTS`` times, publishing a training job's finished epochs (:func:`keep_finished_epochs`).
    A store found damaged meanwhile is moved aside by the store (``JobStoreDamaged``): the worker
    logs the one-line notice and goes on with the fresh store (unless that is found damaged at
    once too: then it stops, raising the error).

    Args:
        lane: "all" (analyses first, then training) or "analysis" (analyses only). One worker
            per lane and settings (lock :func:`lock_path`).
        once: run jobs until the queue is empty, then return.
        poll_s: seconds between looks at an empty queue.
        idle_exit_s: return after this many seconds without work (``None`` = never).
        owner_pid: return when this process is gone (looked at every :data:`OWNER_CHECK_S` s
            between jobs: a job being run is finished first). ``None``: no owner.

    Returns:
        The number of jobs run; ``-1`` when another worker already holds the lock.

    Raises:
        JobStoreError: the store cannot be used (read-only, full disk): its one-line message.
    """
    store = store or JobStore()
    settings = store.settings()
    lock = WorkerLock(lock_path(store, lane, settings))
    if not lock.acquire():
        return -1
    log = logging.getLogger("engine.jobs")
    pid, owner = os.getpid(), _Owner(owner_pid)
    pid_file = pid_path(store, lane, settings)
    ran, idle_since, beat_at, just_replaced = 0, time.monotonic(), float("-inf"), False
    try:
        pid_file.write_text(str(pid))
        _clean_leftovers(store)
        device = device_description()
        while True:
            if owner.is_gone():
                log.info("worker %d: its owner (pid %d) is gone; exiting after %d job(s)", pid, owner.pid, ran)
                return ran
            try:
                if time.monotonic() - beat_at >= HEARTBEAT_S:
                    _beat(store, pid, lane, settings, owner.pid, device)
                    beat_at = time.monotonic()
                job = _claim(store, pid, lane, settings)
                if job is not None:
                    run_job(store, job)
                    beat_at = float("-inf")
            except JobStoreDamaged as exc:  # moved aside: go on with the fresh store
                if just_replaced:
                    raise  # the fresh store is damaged at once too: the disk is failing, stop
                log.warning("worker %d: %s", pid, exc)
                beat_at, just_replaced = float("-inf"), True
                continue
            just_replaced = False
            if job is not None:
                ran, idle_since = ran + 1, time.monotonic()
                continue
            if once or (idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s):
                return ran
            time.sleep(poll_s)
    finally:
        try:
            store.unregister_worker(pid)
        except RobustScopeError as exc:  # a store that broke meanwhile: the row is ignored once stale
            log.warning("could not remove worker %d's row: %s", pid, exc)
        pid_file.unlink(missing_ok=True)
        lock.release()


def _beat(store: JobStore, pid: int, lane: str, settings: dict, owner_pid: int | None, device: str) -> None:
    """Refresh this worker's row (idle), registering it when the store has none (at start, or a
    fresh store started in place of a damaged one)."""
    if not store.worker_beat(pid, None, device=device):
        store.register_worker(pid, lane, settings, owner_pid=owner_pid, device=device)


def _claim(store: JobStore, pid: int, lane: str, settings: dict) -> Job | None:
    """Mark jobs of dead workers interrupted, give up on those that died too often (keeping a
    training job's finished epochs), then claim the next job of ``lane`` (or None)."""
    store.recover()
    for given_up in store.give_up():
        keep_finished_epochs(store, given_up)
    return store.claim(pid, lane=lane, settings=settings)
