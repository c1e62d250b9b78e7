"""``python -m engine jobs submit|list|workers|cancel|resume|logs|wait|result|dismiss``: the background job queue.

Training jobs and analysis jobs (``cka --background`` ...) share one queue (``engine.jobs``);
``wait`` blocks until a job ends (exit 0 when done, 1 when failed or cancelled) and ``result``
prints or writes the stored result of a finished analysis job. ``list`` and ``wait`` say why a
queued job waits (no worker runs with the settings it was submitted with) and show a failed job's
error as one line (``logs ID`` has the traceback); ``workers`` lists the live workers and their
settings. Heavy imports stay inside the functions so ``python -m engine --help`` stays fast.

No wait hangs: every look at a job first marks it ``interrupted`` when its worker died
(``JobStore.refresh``: the pid is gone, or no heartbeat for ``STALE_AFTER_S`` seconds), so ``list``
shows a lost job as interrupted, with what to do. ``wait`` ends (exit 1) when no live worker can
take the job up: at once (after :data:`LOST_GRACE_S`) for a job whose worker was lost, after
:data:`NO_WORKER_S` for a queued job; ``--timeout`` bounds it further (exit 124).

A damaged store moved aside (``JobStore.notices``, by this or any other process) is said on every
action as ``warning: the job store ... was damaged (...); it was moved aside to ... and a fresh one
started — the jobs listed there are not in the new queue`` until ``jobs dismiss``.
"""
from __future__ import annotations

import sys
import time

from engine.errors import InvalidParameterError

#: seconds between looks at the job while waiting
POLL_S = 0.5
#: ``wait`` gives up (exit 1) on a job whose worker was lost once no live worker has taken it up
#: for this many seconds (a worker being restarted registers well within it)
LOST_GRACE_S = 5.0
#: ``wait`` gives up (exit 1) on a queued job that no live worker may claim for this many seconds
#: (a worker started with the job, e.g. by ``--background``, registers well within it)
NO_WORKER_S = 60.0


def open_store(args):
    """The job store of ``args.runs``, after printing its notices (a damaged store was moved
    aside) as warnings on stderr."""
    from engine.cli import open_job_store

    return open_job_store(args.runs)


def warn_without_worker(store, job, args) -> bool:
    """Warn (on stderr) when no worker is running that may claim ``job``, with the command that
    starts one; returns whether one is running."""
    from engine.cli import warn
    from engine.jobs import worker_alive
    from engine.paths import worker_command

    lane = "analysis" if job.is_analysis else "all"
    running = any(worker_alive(store, each, job.settings) for each in job.lanes)
    if not running:
        runs = f" --runs {store.root}" if args.runs else ""
        others = [w for w in store.workers() if w.lane in job.lanes]
        other = (f" (the running worker, pid {others[0].pid}, has other settings: it never takes this job)"
                 if others else "")
        command = worker_command(job.settings, lane) if others and job.settings else \
            f"python -m engine worker{'' if lane == 'all' else ' --lane analysis'}"
        warn(f"no worker is running for {store.root} with this job's settings{other}, so job {job.id} waits in "
             f"the queue; start one with `{command}{runs}` (it runs queued jobs one at a time until stopped)")
    return running


def cmd_submit(args) -> int:
    from engine.cli import print_json, read_train_config

    store = open_store(args)
    job = store.submit(read_train_config(args.config), submitter="cli")
    running = warn_without_worker(store, job, args)
    print_json({"id": job.id, "name": job.name, "status": job.status, "worker_running": running})
    return 0


def job_note(store, job, workers) -> str:
    """The line under a job in ``list``: a lost worker, why it waits, or a failed job's error."""
    lost = store.lost_reason(job, workers)
    if lost:
        return lost
    if job.status == "interrupted" and not job.cancel_requested and store.waiting_reason(job, workers) is None:
        return f"worker lost (pid {job.worker_pid}); a running worker takes it up again from its last checkpoint"
    if job.status == "failed" and job.error:
        return f"{job.error_line} (details: `python -m engine jobs logs {job.id}`)"
    return store.waiting_reason(job, workers) or ""


def cmd_list(args) -> int:
    from engine.cli import print_json

    store = open_store(args)
    store.recover()  # a job whose worker died is listed as interrupted, never as running
    jobs = store.list()
    workers = store.workers()
    if args.json:
        print_json([{**j.to_dict(), "waiting": store.waiting_reason(j, workers), "lost": store.lost_reason(j, workers)}
                    for j in jobs])
        return 0
    print(f"{'id':>4}  {'status':<11} {'kind':<12} {'progress':>8}  name")
    for j in jobs:
        if j.is_analysis:
            last = store.latest_progress(j.id) if j.status == "running" else None
            where = f"{last.batch}/{last.batches}" if last is not None and last.batches else (j.result_key or "")[:8]
        else:
            where = f"{len(store.history(j.id))}/{j.config.epochs} ep"
        print(f"{j.id:>4}  {j.status:<11} {(j.config.method if not j.is_analysis else j.kind):<12} {where:>8}  {j.name}")
        note = job_note(store, j, workers)
        if note:
            print(f"{'':>6}{note}")
    return 0


def cmd_workers(args) -> int:
    """The live workers of the runs folder: pid, lane, owner, device, what they run, their settings."""
    from engine.cli import print_json
    from engine.jobs import describe_settings

    store = open_store(args)
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

    job = open_store(args).cancel(args.id)
    print_json({"id": job.id, "status": job.status, "cancel_requested": job.cancel_requested})
    return 0


def cmd_resume(args) -> int:
    """Queue a cancelled/failed/interrupted job again (a warning when no worker would take it)."""
    from engine.cli import print_json

    store = open_store(args)
    job = store.resume(args.id)
    print_json({"id": job.id, "status": job.status})
    warn_without_worker(store, job, args)
    return 0


def cmd_dismiss(args) -> int:
    """Stop the warning about a damaged job store that was moved aside (its file stays)."""
    store = open_store(args)
    store.dismiss_notices()
    print(f"the notices about {store.path} are dismissed (the moved-aside files stay beside it)", file=sys.stderr)
    return 0


def cmd_logs(args) -> int:
    store = open_store(args)
    job = store.refresh(args.id)
    sys.stdout.write(store.read_log(job.id))
    if job.error:
        sys.stdout.write(f"\n--- error ---\n{job.error}\n")
    reason = store.lost_reason(job) or store.waiting_reason(job)
    if reason:
        sys.stdout.write(f"\n--- {reason} ---\n")
    return 0


def stuck_reason(store, job) -> tuple[str | None, bool]:
    """Why no live worker can take up a queued or interrupted ``job`` (``None`` when one can), and
    whether its worker was lost: ``JobStore.lost_reason`` (one sentence), else
    ``JobStore.waiting_reason`` (``waiting: ...``)."""
    workers = store.workers()
    lost = store.lost_reason(job, workers)
    return (lost, True) if lost else (store.waiting_reason(job, workers), False)


def cmd_wait(args) -> int:
    """Block until job ``args.id`` finishes; exit 0 done, 1 failed/cancelled or no worker can run
    it (its worker was lost, or none may claim it), 124 on --timeout."""
    from engine.cli import warn
    from engine.jobs import CLAIMABLE, FINISHED

    store = open_store(args)
    job = store.refresh(args.id)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    warned, shown, looked, stuck_since = "", "", float("-inf"), None
    while job.status not in FINISHED:
        now = time.monotonic()
        if deadline is not None and now > deadline:
            _end_line(shown)
            print(f"error: job {job.id} is still {job.status} after {args.timeout:g} s", file=sys.stderr)
            return 124
        if job.status not in CLAIMABLE:
            stuck_since = None
        elif now - looked > 5 * POLL_S:
            looked = now
            reason, lost = stuck_reason(store, job)
            stuck_since = None if reason is None else (now if stuck_since is None else stuck_since)
            if reason is not None and now - stuck_since >= (LOST_GRACE_S if lost else NO_WORKER_S):
                _end_line(shown)
                return _finish_wait(job, args, reason if lost else
                                    f"job {job.id} is still {job.status} after {NO_WORKER_S:g} s: "
                                    f"{reason.removeprefix('waiting: ')}")
            if reason and not lost and reason != warned:
                shown = _end_line(shown)
                warn(f"job {job.id} is {reason}")
                warned = reason
        shown = _progress_line(store, job, args, shown)
        time.sleep(POLL_S)
        job = store.refresh(args.id)
    _end_line(shown)
    return _finish_wait(job, args)


def _progress_line(store, job, args, shown: str) -> str:
    """Redraw ``job N: status [batch/batches] (ETA s)`` on stderr when it changed; returns it."""
    last = store.latest_progress(job.id) if job.status == "running" else None
    line = (f"job {job.id}: {job.status}" + (f" {last.batch}/{last.batches}" if last and last.batches else "")
            + (f" (ETA {last.eta_s:.0f} s)" if last and last.eta_s is not None else ""))
    if not args.quiet and line != shown:
        print(f"\r{line}   ", end="", file=sys.stderr, flush=True)
        return line
    return shown


def _end_line(shown: str) -> str:
    """End the progress line (when one is shown) so the next message starts on its own line."""
    if shown:
        print(file=sys.stderr)
    return ""


def _finish_wait(job, args, stuck: str | None = None) -> int:
    """Say how the wait ended (``--json``: ``{job, status, result, error}``; a failure or
    ``stuck``, why no worker can run the job, on stderr); 0 when done, else 1."""
    from engine.cli import print_json

    if stuck is not None:
        print(f"error: {stuck}", file=sys.stderr)
    if args.json:
        print_json({"job": job.id, "status": job.status, "result": job.result_key, "error": stuck or job.error})
    elif job.status != "done" and stuck is None:
        print(f"job {job.id} {job.status}" + (f": {job.error_line}" if job.error else ""), file=sys.stderr)
        if job.status == "failed":
            print(f"details: `python -m engine jobs logs {job.id}`", file=sys.stderr)
    return 0 if job.status == "done" else 1


def cmd_result(args) -> int:
    """Print (``--json``) or write (``--out F``: .json report, .npz arrays, .csv rows) a job's result."""
    store = open_store(args)
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
    s = sub.add_parser("dismiss", help="stop warning that a damaged job store was moved aside (the file stays)")
    s.set_defaults(func=cmd_dismiss)
    s = sub.add_parser("wait", help="wait until a job ends: exit 0 when done, 1 when failed or cancelled, or when "
                                    "no worker can run it (its worker was lost, or none runs with its settings)")
    s.add_argument("id", type=int)
    s.add_argument("--timeout", type=float, default=None,
                   help="give up after this many seconds (exit 124); without it a wait still ends when no worker "
                        f"can run the job (a lost worker: after {LOST_GRACE_S:g} s, none for a queued job: "
                        f"after {NO_WORKER_S:g} s)")
    s.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    s.add_argument("--json", action="store_true", help="print {job, status, result, error} at the end")
    s.set_defaults(func=cmd_wait)
    s = sub.add_parser("result", help="the stored result of a finished analysis job")
    s.add_argument("id", type=int)
    how = s.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="print the result as JSON (as the foreground command does)")
    how.add_argument("--out", help="write it: FILE.json (report), FILE.npz (arrays) or FILE.csv (rows, where defined)")
    s.set_defaults(func=cmd_result)
