"""``python -m engine jobs submit|list|cancel|resume|logs|wait|result``: the background job queue.

Training jobs and analysis jobs (``cka --background`` ...) share one queue (``engine.jobs``);
``wait`` blocks until a job ends (exit 0 when done, 1 when failed or cancelled) and ``result``
prints or writes the stored result of a finished analysis job. Heavy imports stay inside the
functions so ``python -m engine --help`` stays fast.
"""
from __future__ import annotations

import sys
import time

from engine.cli.train import cmd_cancel, cmd_list, cmd_logs, cmd_resume, cmd_submit
from engine.errors import InvalidParameterError

#: seconds between looks at the job while waiting
POLL_S = 0.5


def cmd_wait(args) -> int:
    """Block until job ``args.id`` finishes; exit 0 done, 1 failed/cancelled, 124 on --timeout."""
    from engine.cli import print_json, warn
    from engine.jobs import FINISHED, JobStore, worker_alive

    store = JobStore(args.runs)
    job = store.get(args.id)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    warned, shown = False, ""
    while job.status not in FINISHED:
        if deadline is not None and time.monotonic() > deadline:
            print(f"error: job {job.id} is still {job.status} after {args.timeout:g} s", file=sys.stderr)
            return 124
        lane = "analysis" if job.is_analysis else "all"
        if job.status in ("queued", "interrupted") and not warned and not (
                worker_alive(store, "all") or worker_alive(store, lane)):
            warn(f"no worker is running for {store.root}: start one with `python -m engine worker` "
                 "(analysis jobs started with --background start their own)")
            warned = True
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
        print(f"job {job.id} {job.status}" + (f":\n{job.error}" if job.error else ""), file=sys.stderr)
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

    results = ResultStore(None if runs is None else runs / "results")
    result = load_result(key, results)
    return emit(result, args, notes)


def emit(result, args, notes=()) -> int:
    """Print or write ``result`` as ``--json`` / ``--out`` / a summary (see :func:`print_result`)."""
    import json
    from pathlib import Path

    from engine.analysis import get_analysis
    from engine.analysis.base import finite
    from engine.cli import print_json, warn
    from engine.fileio import atomic_write_bytes, atomic_write_text

    for note in list(notes) + list(result.notes) + list(result.meta.get("notes", [])) + \
            list(result.meta.get("warnings", [])):
        warn(note)
    body = {**get_analysis(result.kind).report(result), "cached": result.cached, "result": result.key}
    out = getattr(args, "out", None)
    if out:
        target = Path(out)
        suffix = target.suffix.lower()
        if suffix == ".npz":
            import io

            import numpy as np

            buffer = io.BytesIO()
            np.savez(buffer, **result.arrays)
            atomic_write_bytes(target, buffer.getvalue(), what="result arrays")
        elif suffix == ".csv":
            import csv

            rows = get_analysis(result.kind).rows
            if rows is None:
                raise InvalidParameterError(f"{result.kind} results have no CSV form; use --out FILE.json or .npz")
            atomic_write_text(target, _csv_text(rows(result), csv), what="CSV file")
        else:
            atomic_write_text(target, json.dumps(finite(body), indent=2, default=str) + "\n", what="result JSON")
        print(f"wrote {target} (result {result.key}, {'stored earlier' if result.cached else 'computed'})",
              file=sys.stderr)
        return 0
    if getattr(args, "json", False):
        print_json(finite(body))
        return 0
    print(f"{result.request.describe()}\nresult {result.key} · {'stored earlier' if result.cached else 'computed'} "
          f"in {result.seconds:.1f} s · engine {result.version}\n(--json prints every number; --out F.json|.npz writes them)")
    return 0


def _csv_text(rows: list[dict], csv) -> str:
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def register(subparsers) -> None:
    """Add ``jobs`` (one command, its actions as sub-commands)."""
    jobs = subparsers.add_parser("jobs", help="background jobs: training runs and analyses")
    jobs.add_argument("--runs", default=None, help="runs folder (default $ROBUSTSCOPE_RUNS or ./runs)")
    sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    s = sub.add_parser("submit", help="queue a training job from a JSON config")
    s.add_argument("--config", required=True)
    s.set_defaults(func=cmd_submit)
    s = sub.add_parser("list", help="list jobs")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)
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
