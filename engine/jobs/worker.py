"""The worker: claim a job -> train it or run its analysis -> record the outcome, one job at a time.

Liveness: a running worker holds an exclusive ``fcntl`` lock on ``<runs>/worker.lock`` (released by
the OS even on ``kill -9``) and writes its pid to ``<runs>/worker.pid``; a background thread
refreshes the running job's heartbeat and picks up cancel requests. On start the worker marks
running jobs left by a dead worker ``interrupted``; they are claimed again and resume from their
last completed epoch (training) or their last saved partial state (CKA) or from the start.

Lanes (one worker per lane and runs folder): the ``all`` lane (``python -m engine worker``, lock
``worker.lock``) runs analyses and training, analyses first; the ``analysis`` lane (lock
``analysis-worker.lock``, started by ``--background`` and the dashboard when an analysis is queued)
runs analyses only. So a short analysis never waits hours behind a training run: while the main
worker trains, the analysis worker takes it (the two then share the CPU).

Start-up: :func:`worker_main` is ``python -m engine.jobs`` (the worker alone, without the CLI's
command discovery); ``python -m engine worker`` registers the same options
(:func:`add_worker_arguments`) and runs the same :func:`worker_command`.
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

from engine.jobs.store import LANES, Job, JobStore

HEARTBEAT_S = 2.0
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
        raise ValueError(f"worker lane must be 'all' or 'analysis', got {lane!r}")
    return "" if lane == "all" else f"{lane}-"


def lock_path(store: JobStore, lane: str = "all") -> Path:
    return store.root / f"{_lane_prefix(lane)}worker.lock"


def pid_path(store: JobStore, lane: str = "all") -> Path:
    return store.root / f"{_lane_prefix(lane)}worker.pid"


def worker_alive(store: JobStore | None = None, lane: str = "all") -> bool:
    """Whether a worker of ``lane`` currently holds the store's lock (i.e. is alive)."""
    store = store or JobStore()
    probe = WorkerLock(lock_path(store, lane))
    if probe.acquire():
        probe.release()
        return False
    return True


def ensure_worker(store: JobStore | None = None, idle_exit_s: float | None = 1800.0, lane: str = "all") -> int | None:
    """Start a detached worker process (new session) unless one of ``lane`` is alive.

    Args:
        store: the job store (default: ``$ROBUSTSCOPE_RUNS``).
        idle_exit_s: the started worker exits after this many idle seconds (``None`` = never);
            the dashboard calls this on every run, so a new one starts when needed.
        lane: "all" (training and analyses) or "analysis" (analyses only).

    Returns:
        The pid of the started process, or ``None`` when a worker was already alive.
    """
    store = store or JobStore()
    if worker_alive(store, lane):
        return None
    cmd = [sys.executable, "-m", "engine.jobs", "--runs", str(store.root.resolve()), "--lane", lane]
    if idle_exit_s is not None:
        cmd += ["--idle-exit", str(idle_exit_s)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_REPO_ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["ROBUSTSCOPE_RUNS"] = str(store.root.resolve())
    with open(store.root / f"{_lane_prefix(lane)}worker.log", "ab") as out:
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
            except Exception:  # noqa: BLE001 - a busy database must not kill the heartbeat
                logging.getLogger("engine.jobs").warning("heartbeat failed", exc_info=True)


class _Reporter:
    """Progress callback: epoch events always, batch events at most once per second."""

    def __init__(self, store: JobStore, job_id: int):
        self.store, self.job_id, self.last = store, job_id, 0.0

    def __call__(self, ev) -> None:
        now = time.monotonic()
        if ev.kind == "batch" and now - self.last < BATCH_EVENT_EVERY_S and ev.batch < ev.batches:
            return
        self.last = now
        self.store.add_event(self.job_id, ev.kind, ev.metrics, epoch=ev.epoch, epochs=ev.epochs,
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


class _AnalysisReporter:
    """Progress callback of an analysis: ``batch`` events (done/total, ETA), at most once a second."""

    def __init__(self, store: JobStore, job_id: int):
        self.store, self.job_id, self.last, self.start = store, job_id, 0.0, time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < BATCH_EVENT_EVERY_S and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (total - done) / rate if done and rate > 0 else None
        self.store.add_event(self.job_id, "batch", {"done": done, "total": total}, batch=done, batches=total, eta_s=eta)


def _supervised(store: JobStore, job: Job, body) -> str:
    """Run ``body(logger, beat) -> status`` with the job's log file and heartbeat; a crash is
    recorded as a failed job with its traceback. Returns the final status."""
    logger, handler = _job_logger(store.log_path(job.id))
    beat = _Heartbeat(store, job.id)
    beat.start()
    try:
        logger.info("job %d (%s) attempt %d started by worker pid %d", job.id, job.name, job.attempts, os.getpid())
        return body(logger, beat)
    except Exception:  # noqa: BLE001 - any crash is recorded as a failed job with its traceback
        text = traceback.format_exc()
        logger.error("job %d failed:\n%s", job.id, text)
        store.finish(job.id, "failed", error=text)
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
            result = run_analysis(spec.request, progress=_AnalysisReporter(store, job.id),
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
        The final status: ``"done"``, ``"cancelled"`` or ``"failed"`` (with the traceback stored).
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


def run_worker(store: JobStore | None = None, once: bool = False, poll_s: float = 1.0,
               idle_exit_s: float | None = None, lane: str = "all") -> int:
    """The worker loop: recover orphaned jobs, then claim -> run -> record until stopped.

    Args:
        lane: "all" (analyses first, then training; lock ``worker.lock``) or "analysis"
            (analyses only; lock ``analysis-worker.lock``). One worker per lane.
        once: run jobs until the queue is empty, then return.
        poll_s: seconds between looks at an empty queue.
        idle_exit_s: return after this many seconds without work (``None`` = never).

    Returns:
        The number of jobs run; ``-1`` when another worker already holds the lock.
    """
    store = store or JobStore()
    lock = WorkerLock(lock_path(store, lane))
    if not lock.acquire():
        return -1
    pid_path(store, lane).write_text(str(os.getpid()))
    _clean_leftovers(store)
    ran, idle_since = 0, time.monotonic()
    try:
        while True:
            store.recover()
            job = store.claim(os.getpid(), lane=lane)
            if job is not None:
                run_job(store, job)
                ran, idle_since = ran + 1, time.monotonic()
                continue
            if once or (idle_exit_s is not None and time.monotonic() - idle_since > idle_exit_s):
                return ran
            time.sleep(poll_s)
    finally:
        pid_path(store, lane).unlink(missing_ok=True)
        lock.release()


def worker_command(args) -> int:
    """Run the worker loop for parsed ``args`` (``runs``, ``once``, ``idle_exit``, ``lane``); print
    ``{"jobs_run": N}`` on stdout. Exit status 1 when another worker of the lane holds the lock."""
    import json

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    ran = run_worker(JobStore(args.runs), once=args.once, idle_exit_s=args.idle_exit, lane=args.lane)
    if ran < 0:
        print(f"another {args.lane}-lane worker is already running for this runs folder", file=sys.stderr)
        return 1
    print(json.dumps({"jobs_run": ran}))
    return 0


def add_worker_arguments(parser) -> None:
    """The worker's options on an ``argparse`` parser, with ``func=worker_command``."""
    parser.add_argument("--once", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    parser.add_argument("--runs", default=None, help="runs folder (default $ROBUSTSCOPE_RUNS or ./runs)")
    parser.add_argument("--lane", default="all", choices=["all", "analysis"],
                        help="all: analyses first, then training (default); analysis: analyses only (a second "
                             "worker so analyses do not wait behind a training run)")
    parser.set_defaults(func=worker_command)


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m engine.jobs`` (the worker without the CLI's command discovery)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m engine.jobs", description="RobustScope job worker")
    add_worker_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
