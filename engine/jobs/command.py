"""The worker command: ``python -m engine worker`` and ``python -m engine.jobs``: the local worker
loop (``engine.jobs.worker.run_worker``), or the Ray dispatcher (``engine.jobs.cluster``) when a
cluster is given with ``--ray ADDRESS`` or ``ROBUSTSCOPE_RAY_ADDRESS``."""
from __future__ import annotations

import logging
import os
import sys

from engine.errors import RobustScopeError, storage
from engine.jobs.store import JobStore
from engine.jobs.worker import run_worker
from engine.paths import RUNS_ENV, runs_dir


def worker_command(args) -> int:
    """Run the worker loop for parsed ``args`` (``runs``, ``once``, ``idle_exit``, ``lane``,
    ``owner_pid``); print ``{"jobs_run": N}`` on stdout. Exit status 1 when another worker of the
    lane with the same settings holds the lock, or when the store cannot be used (``error: ...``,
    one line; the store's notices about a damaged store moved aside are printed as warnings)."""
    import json

    from engine.paths import describe_settings

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    try:
        with storage(f"the worker cannot use the runs folder {args.runs or runs_dir()}"):
            store = JobStore(args.runs)
            for notice in store.notices():
                print(f"warning: {notice}", file=sys.stderr)
            os.environ[RUNS_ENV] = str(store.root.resolve())  # what the jobs' own temp folders use too
            logging.getLogger("engine.jobs").info("worker %d (%s lane) for %s: %s", os.getpid(), args.lane,
                                                  store.root, describe_settings(store.settings()))
            ran = _run_lane(store, args)
    except RobustScopeError as exc:  # the store or folder cannot be used (read-only, full disk): one line
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if ran < 0:
        print(f"another {args.lane}-lane worker with these settings is already running for this runs folder",
              file=sys.stderr)
        return 1
    print(json.dumps({"jobs_run": ran}))
    return 0


def _run_lane(store: JobStore, args) -> int:
    """The local worker loop, or the Ray dispatcher when a cluster is given (``--ray`` or
    ``ROBUSTSCOPE_RAY_ADDRESS``, ``engine.jobs.cluster``)."""
    from engine.jobs.cluster import ray_address, run_ray_worker

    address = ray_address(getattr(args, "ray", None))
    if address:
        logging.getLogger("engine.jobs").info("dispatching to the Ray cluster at %s", address)
        return run_ray_worker(store, address, once=args.once, idle_exit_s=args.idle_exit, lane=args.lane,
                              owner_pid=getattr(args, "owner_pid", None))
    return run_worker(store, once=args.once, idle_exit_s=args.idle_exit, lane=args.lane,
                      owner_pid=getattr(args, "owner_pid", None))


def add_worker_arguments(parser) -> None:
    """The worker's options on an ``argparse`` parser, with ``func=worker_command``."""
    parser.add_argument("--once", action="store_true", help="exit when the queue is empty")
    parser.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    parser.add_argument("--runs", default=None, help="runs folder (default $ROBUSTSCOPE_RUNS or ./runs)")
    parser.add_argument("--lane", default="all", choices=["all", "analysis", "short"],
                        help="all: analyses first, then training (default); analysis: analyses only, short ones "
                             "first (a second worker so analyses do not wait behind a training run); short: only "
                             "analyses estimated at most 60 s (a third, so short work never waits behind a long one)")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="hand the jobs to the Ray cluster at ADDRESS (e.g. 10.0.0.1:6379, or 'auto') instead of "
                             "running them here; default $ROBUSTSCOPE_RAY_ADDRESS (unset: run here)")
    parser.add_argument("--owner-pid", type=int, default=None,
                        help="exit when this process is gone, after the job being run (the dashboard passes its "
                             "own pid; default: no owner)")
    parser.set_defaults(func=worker_command)


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m engine.jobs`` (the worker without the CLI's command discovery)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m engine.jobs", description="RobustScope job worker")
    add_worker_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
