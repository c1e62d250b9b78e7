"""Background jobs (training and analyses): a persistent SQLite job store and a worker process.

Public API:
- :class:`JobStore` (``submit``, ``get``, ``refresh``, ``list``, ``claim``, ``give_up``, ``cancel``,
  ``resume``, ``recover``, ``events``, ``history``, ``latest_progress``, ``read_log``, ``settings``,
  ``workers``, ``waiting_reason``, ``lost_reason``, ``notices``, ``dismiss_notices``), :class:`Job`,
  :class:`Event`, :class:`WorkerInfo`, :data:`STATUSES`, :func:`runs_dir`, :func:`current_settings`
  (what a job records and a worker must share); :class:`JobStoreError` (the store cannot be used:
  a ``StorageError``) and :class:`JobStoreDamaged` (it was damaged and moved aside);
- :func:`submit` (queue an ``engine.analysis`` request), ``queueing.resume`` (queue a stopped
  analysis job again, with a worker to take it);
- :func:`run_worker` (``python -m engine worker``), :func:`run_job`, :func:`ensure_worker`,
  :func:`worker_alive`.
"""
from engine.jobs.store import (CLAIMABLE, FINISHED, STATUSES, Event, Job, JobStore, JobStoreDamaged,  # noqa: F401
                               JobStoreError, WorkerInfo, error_line, pid_alive, runs_dir)
from engine.jobs.worker import ensure_worker, run_job, run_worker, worker_alive  # noqa: F401
from engine.paths import current_settings, describe_settings  # noqa: F401
from engine.jobs.queueing import submit  # noqa: F401
