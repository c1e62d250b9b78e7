"""``python -m engine jobs submit|list|workers|cancel|resume|logs|wait|result``: the background job queue.

Training jobs and analysis jobs (``cka --background`` ...) share one queue (``engine.jobs``);
``wait`` blocks until a job ends (exit 0 when done, 1 when failed or cancelled) and ``result``
prints or writes the stored result of a finished analysis job. ``list`` and ``wait`` say why a
queued job waits (no worker runs with the settings it was submitted with) and show a failed job's
error as one line (``logs ID`` has the traceback); ``workers`` lists the live workers and their
settings. Heavy imports stay inside the functions so ``python -m engine --help`` stays fast.
"""
from __future__ import annotations

import sys
import time

from engine.errors import InvalidParameterError

#: seconds between looks at the job while waiting
POLL_S = 0.5


def cmd_submit(args) -> int:
    from engine.cli import print_json, read_train_config, warn
    from engine.jobs import JobStore, worker_alive

    store = JobStore(args.runs)
    job = store.submit(read_train_config(args.config), submitter="cli")
    running = worker_alive(store)
    print_json({"id": job.id, "name": job.name, "status": job.status, "worker_running": running})
    if not running:
        from engine.paths import worker_command

        runs = f" --runs {store.root}" if args.runs else ""
        others = [w for w in store.workers() if w.lane == "all"]
        other = (f" (the running worker, pid {others[0].pid}, has other settings: it never takes this job)"
                 if others else "")
        command = worker_command(job.settings) if others else "python -m engine worker"
        warn(f"no worker is running for {store.root} with this job's settings{other}, so job {job.id} waits in "
             f"the queue; start one with `{command}{runs}` (it runs queued jobs one at a time until stopped)")
    return 0


def cmd_list(args) -> int:
    from engine.cli import print_json
    from engine.jobs import JobStore

    store = JobStore(args.runs)
    jobs = store.list()
    workers = store.workers()
    if args.json:
        print_json([{**j.to_dict(), "waiting": store.waiting_reason(j, workers)} for j in jobs])
        return 0
    print(f"{'id':>4}  {'status':<11} {'kind':<12} {'progress':>8}  name")
    for j in jobs:
        if j.is_analysis:
            last = store.latest_progress(j.id) if j.status == "running" else None
            where = f"{last.batch}/{last.batches}" if last is not None and last.batches else (j.result_key or "")[:8]
        else:
            where = f"{len(store.history(j.id))}/{j.config.epochs} ep"
        print(f"{j.id:>4}  {j.status:<11} {(j.config.method if not j.is_analysis else j.kind):<12} {where:>8}  {j.name}")
        note = store.waiting_reason(j, workers)
        if j.status == "failed" and j.error:
            note = f"{j.error_line} (details: `python -m engine jobs logs {j.id}`)"
        if note:
            print(f"{'':>6}{note}")
    return 0


def cmd_workers(args) -> int:
    """The live workers of the runs folder: pid, lane, owner, device, what they run, their settings."""
    from engine.cli import print_json
    from engine.jobs import JobStore, describe_settings

    store = JobStore(args.runs)
    workers = store.workers()
    if args.json:
        print_json([w.to_dict() for w in workers])
        return 0
    if not workers:
        print(f"no worker is running for {store.root}; start one with `python -m engine worker`")
        return 0
    for w in workers:
        owner = f"stops with pid {w.owner_pid}" if w.owner_pid else "no owner"
        doing = f"running job {w.job_id}" if w.job_id else "idle"
        print(f"pid {w.pid}  {w.lane} lane  {doing}  device {w.device or '?'}  ({owner})\n"
              f"    {describe_settings(w.settings)}")
    return 0


def cmd_cancel(args) -> int:
    from engine.cli import print_json
    from engine.jobs import JobStore

    job = JobStore(args.runs).cancel(args.id)
    print_json({"id": job.id, "status": job.status, "cancel_requested": job.cancel_requested})
    return 0


def cmd_resume(args) -> int:
    from engine.cli import print_json
    from engine.jobs import JobStore

    job = JobStore(args.runs).resume(args.id)
    print_json({"id": job.id, "status": job.status})
    return 0


def cmd_logs(args) -> int:
    from engine.jobs import JobStore

    store = JobStore(args.runs)
    job = store.get(args.id)
    sys.stdout.write(store.read_log(job.id))
    if job.error:
        sys.stdout.write(f"\n--- error ---\n{job.error}\n")
    reason = store.waiting_reason(job)
    if reason:
        sys.stdout.write(f"\n--- {reason} ---\n")
    return 0


def cmd_wait(args) -> int:
    """Block until job ``args.id`` finishes; exit 0 done, 1 failed/cancelled, 124 on --timeout."""
    from engine.cli import print_json, warn
    from engine.jobs import FINISHED, JobStore

    store = JobStore(args.runs)
    job = store.get(args.id)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    warned, shown, looked = "", "", float("-inf")
    while job.status not in FINISHED:
        if deadline is not None and time.monotonic() > deadline:
            print(("\n" if shown else "") + f"error: job {job.id} is still {job.status} after {args.timeout:g} s",
                  file=sys.stderr)
            return 124
        if job.status in ("queued", "interrupted") and time.monotonic() - looked > 5 * POLL_S:
            looked = time.monotonic()
            reason = store.waiting_reason(job)
            if reason and reason != warned:
                if shown:
                    print(file=sys.stderr)
                    shown = ""
                warn(f"job {job.id} is {reason}")
                warned = reason
        last = store.latest_progress(job.id) if job.status == "running" else None
        line = (f"job {job.id}: {job.status}" + (f" {last.batch}/{last.batches}" if last and last.batches else "")
                + (f" (ETA {last.eta_s:.0f} s)" if last and last.eta_s is not None else ""))
        if not args.quiet and line != shown:
            print(f"\r{line}   ", end="", file=sys.stderr, flush=True)
            shown = line
        time.sleep(POLL_S)
        job = store.get(args.id)
    if shown:
        print(file=sys.stderr)
    if args.json:
        print_json({"job": job.id, "status": job.status, "result": job.result_key, "error": job.error})
    elif job.status != "done":
        print(f"job {job.id} {job.status}" + (f": {job.error_line}" if job.error else ""), file=sys.stderr)
        if job.status == "failed":
            print(f"details: `python -m engine jobs logs {job.id}`", file=sys.stderr)
    return 0 if job.status == "done" else 1


def cmd_result(args) -> int:
    """Print (``--json``) or write (``--out F``: .json report, .npz arrays, .csv rows) a job's result."""
    from engine.jobs import JobStore

    store = JobStore(args.runs)
    job = store.get(args.id)
    if not job.is_analysis:
        raise InvalidParameterError(f"job {job.id} is a training job; its checkpoint is {job.checkpoint or '(none yet)'}")
    if job.status != "done" or not job.result_key:
        hint = f"`python -m engine jobs wait {job.id}` first" if job.status not in ("failed", "cancelled") else \
            f"`python -m engine jobs logs {job.id}` says why"
        raise InvalidParameterError(f"job {job.id} is {job.status} and has no result yet; {hint}")
    return print_result(job.result_key, args, runs=store.root)


def print_result(key: str, args, runs=None, notes=()) -> int:
    """The shared output of a stored analysis result: ``--json`` prints the kind's report with
    ``cached``/``key``; ``--out`` writes it; neither prints a short summary."""
    from engine.analysis import ResultStore, load_result
    from engine.cli import emit

    results = ResultStore(None if runs is None else runs / "results")
    result = load_result(key, results)
    return emit(result, args, notes)


def register(subparsers) -> None:
    """Add ``jobs`` (one command, its actions as sub-commands)."""
    jobs = subparsers.add_parser("jobs", help="background jobs: training runs and analyses")
    jobs.add_argument("--runs", default=None, help="runs folder (default $ROBUSTSCOPE_RUNS or ./runs)")
    sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    s = sub.add_parser("submit", help="queue a training job from a JSON config")
    s.add_argument("--config", required=True)
    s.set_defaults(func=cmd_submit)
    s = sub.add_parser("list", help="list jobs (and why a queued one waits, a failed one's error)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)
    s = sub.add_parser("workers", help="list the live workers: pid, lane, device, current job, settings")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_workers)
    for name, func, text in (("cancel", cmd_cancel, "cancel a job (running: at the next batch)"),
                             ("resume", cmd_resume, "queue a cancelled/failed/interrupted job again"),
                             ("logs", cmd_logs, "print a job's log")):
        s = sub.add_parser(name, help=text)
        s.add_argument("id", type=int)
        s.set_defaults(func=func)
    s = sub.add_parser("wait", help="wait until a job ends: exit 0 when done, 1 when failed or cancelled")
    s.add_argument("id", type=int)
    s.add_argument("--timeout", type=float, default=None, help="give up after this many seconds (exit 124)")
    s.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    s.add_argument("--json", action="store_true", help="print {job, status, result, error} at the end")
    s.set_defaults(func=cmd_wait)
    s = sub.add_parser("result", help="the stored result of a finished analysis job")
    s.add_argument("id", type=int)
    how = s.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="print the result as JSON (as the foreground command does)")
    how.add_argument("--out", help="write it: FILE.json (report), FILE.npz (arrays) or FILE.csv (rows, where defined)")
    s.set_defaults(func=cmd_result)
