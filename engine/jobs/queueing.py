"""Queue an analysis request as a background job: ``engine.jobs.submit(request)``; queue a
stopped one again with a worker to take it: ``engine.jobs.queueing.resume(job_id)``.

Jobs use analyses (never the reverse): the request is checked by ``engine.analysis.preflight``,
answered at once from the result store when it is stored, else queued for the analysis worker.
"""
from __future__ import annotations

import logging
import os

from engine.analysis import ResultStore, cached_result, preflight
from engine.jobs.store import Job, JobStore
from engine.jobs.worker import ensure_worker

#: an analysis worker started for a submit exits after this many idle seconds
IDLE_EXIT_S = 600.0

log = logging.getLogger("engine.jobs")


def submit(request, use_cache: bool = True, device: str = "auto", submitter: str | None = None,
           jobs: JobStore | None = None, results: ResultStore | None = None,
           start_worker: bool | None = None, owner_pid: int | None = None, estimate_s: float | None = None) -> Job:
    """Queue ``request`` (an ``engine.analysis`` request) as a background job; returns the Job.

    A request whose result is already stored (and ``use_cache``) becomes a job that is done at
    once, pointing at that result. Otherwise an analysis worker with this process's settings is
    started when none runs (``start_worker``; default: unless ``ROBUSTSCOPE_AUTOSTART_WORKER=0``;
    it exits after :data:`IDLE_EXIT_S` idle seconds, and when ``owner_pid`` is gone). The job
    records the settings it depends on (``engine.paths.current_settings``); only a worker with
    the same settings runs it.

    Args:
        owner_pid: the started worker stops when this process is gone (the dashboard passes
            ``os.getpid()``); default: this process when ``submitter == "dashboard"``, else none
            (a worker started by ``--background`` outlives the command).

        estimate_s: the request's measured estimate (``engine.analysis.cost.estimate``), when the
            caller has one: short work (at most ``SHORT_S``) goes to the short lane's worker.

    Raises:
        InvalidParameterError / CheckpointError: the request fails its pre-queue checks.
    """
    if start_worker is None:
        start_worker = os.environ.get("ROBUSTSCOPE_AUTOSTART_WORKER", "1") != "0"
    if owner_pid is None and submitter == "dashboard":
        owner_pid = os.getpid()
    preflight(request)
    jobs = jobs or JobStore()
    results = results or ResultStore(jobs.root / "results")
    done_key = None
    if use_cache:
        found, note = cached_result(request.key(), results)
        if note:
            log.warning(note)  # a damaged entry was moved aside: the job recomputes it
        done_key = found.key if found is not None else None
    job = jobs.submit_analysis(request, use_cache=use_cache, device=device, submitter=submitter, done_key=done_key,
                               estimate_s=estimate_s)
    if done_key is None and start_worker:
        _start_worker_for(jobs, job, owner_pid)
    return job


def resume(job_id: int, jobs: JobStore | None = None, start_worker: bool | None = None,
           owner_pid: int | None = None) -> Job:
    """Queue a cancelled, failed or interrupted (its worker was lost) analysis job again
    (``JobStore.resume``) and start a worker that may take it, as :func:`submit` does (same
    ``start_worker`` default and ``owner_pid``). Returns the queued Job.

    Raises:
        InvalidParameterError: no such job, or it is not one that can be resumed.
    """
    if start_worker is None:
        start_worker = os.environ.get("ROBUSTSCOPE_AUTOSTART_WORKER", "1") != "0"
    jobs = jobs or JobStore()
    job = jobs.resume(job_id)
    if start_worker and job.is_analysis:
        _start_worker_for(jobs, job, owner_pid)
    return job


def _start_worker_for(jobs: JobStore, job: Job, owner_pid: int | None) -> None:
    """Start the analysis worker of ``job``'s lane and settings unless one runs: short work gets
    its own worker, so it never waits behind a long analysis."""
    lane = "short" if job.config.short else "analysis"
    ensure_worker(jobs, idle_exit_s=IDLE_EXIT_S, lane=lane, owner_pid=owner_pid, settings=job.settings)
