"""Background jobs (training and analyses): a persistent SQLite job store and a worker process.

Public API:
- :class:`JobStore` (``submit``, ``get``, ``list``, ``claim``, ``cancel``, ``resume``, ``recover``,
  ``events``, ``history``, ``latest_progress``, ``read_log``, ``settings``, ``workers``,
  ``waiting_reason``), :class:`Job`, :class:`Event`, :class:`WorkerInfo`, :data:`STATUSES`,
  :func:`runs_dir`, :func:`current_settings` (what a job records and a worker must share);
- :func:`submit` (queue an ``engine.analysis`` request);
- :func:`run_worker` (``python -m engine worker``), :func:`run_job`, :func:`ensure_worker`,
  :func:`worker_alive`.
"""
from engine.jobs.store import (CLAIMABLE, FINISHED, STATUSES, Event, Job, JobStore, WorkerInfo,  # noqa: F401
                               error_line, pid_alive, runs_dir)
from engine.jobs.worker import ensure_worker, run_job, run_worker, worker_alive  # noqa: F401
from engine.paths import current_settings, describe_settings  # noqa: F401
from engine.jobs.queueing import submit  # noqa: F401
