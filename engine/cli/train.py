"""``python -m engine train | worker``: training from the shell, and the job actions that
``engine/cli/jobs.py`` registers as ``python -m engine jobs submit|list|cancel|resume|logs|wait|result``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from engine.errors import InvalidParameterError


def _read_config(path: str):
    from engine.training import TrainConfig

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidParameterError(f"cannot read config file {path!r}: {exc}") from exc
    return TrainConfig.from_json(text).validate()


class _Bar:
    """A one-line progress bar on stderr."""

    def __init__(self):
        self.last = 0.0

    def __call__(self, ev) -> None:
        now = time.monotonic()
        if ev.kind == "epoch":
            m = ev.metrics
            rob = m.get("robust_acc")
            sys.stderr.write(
                f"\repoch {ev.epoch}/{ev.epochs}  loss {m['train_loss']:.4f}  train acc {m['train_acc']:.3f}"
                f"  clean {m.get('clean_acc') or 0:.3f}  robust {rob if rob is None else round(rob, 3)}\n")
            return
        if now - self.last < 0.2 and ev.batch < ev.batches:
            return
        self.last = now
        filled = int(30 * ev.batch / max(ev.batches, 1))
        eta = f"{ev.eta_s:.0f}s" if ev.eta_s is not None else "?"
        sys.stderr.write(f"\repoch {ev.epoch}/{ev.epochs} [{'#' * filled}{'.' * (30 - filled)}] "
                         f"{ev.batch}/{ev.batches} loss {ev.metrics['train_loss']:.4f} eta {eta}   ")
        sys.stderr.flush()


def cmd_train(args) -> int:
    from engine.cli import print_json
    from engine.training import train

    config = _read_config(args.config)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    result = train(config, run_dir=args.run_dir, progress=None if args.quiet else _Bar(),
                   resume=not args.no_resume)
    if result.checkpoint is not None or args.json:
        print_json({"status": result.status, "epochs_completed": result.epochs_completed,
                    "checkpoint": result.checkpoint, "best_checkpoint": result.best_checkpoint,
                    "history": result.history, "seconds": round(result.seconds, 2)})
    return 0


def cmd_submit(args) -> int:
    from engine.cli import print_json, warn
    from engine.jobs import JobStore, worker_alive

    store = JobStore(args.runs)
    job = store.submit(_read_config(args.config), submitter="cli")
    running = worker_alive(store)
    print_json({"id": job.id, "name": job.name, "status": job.status, "worker_running": running})
    if not running:
        runs = f" --runs {store.root}" if args.runs else ""
        warn(f"no worker is running for {store.root}, so job {job.id} waits in the queue; start one "
             f"with `python -m engine worker{runs}` (it runs queued jobs one at a time until stopped)")
    return 0


def cmd_list(args) -> int:
    from engine.cli import print_json
    from engine.jobs import JobStore

    store = JobStore(args.runs)
    jobs = store.list()
    if args.json:
        print_json([j.to_dict() for j in jobs])
        return 0
    print(f"{'id':>4}  {'status':<11} {'kind':<12} {'progress':>8}  name")
    for j in jobs:
        if j.is_analysis:
            last = store.latest_progress(j.id) if j.status == "running" else None
            where = f"{last.batch}/{last.batches}" if last is not None and last.batches else (j.result_key or "")[:8]
        else:
            where = f"{len(store.history(j.id))}/{j.config.epochs} ep"
        print(f"{j.id:>4}  {j.status:<11} {(j.config.method if not j.is_analysis else j.kind):<12} {where:>8}  {j.name}")
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
    return 0


def cmd_worker(args) -> int:
    from engine.jobs import JobStore, run_worker

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    ran = run_worker(JobStore(args.runs), once=args.once, idle_exit_s=args.idle_exit, lane=args.lane)
    if ran < 0:
        print(f"another {args.lane}-lane worker is already running for this runs folder", file=sys.stderr)
        return 1
    print(json.dumps({"jobs_run": ran}))
    return 0


def _add_worker_args(w: argparse.ArgumentParser) -> None:
    w.add_argument("--once", action="store_true", help="exit when the queue is empty")
    w.add_argument("--idle-exit", type=float, default=None, help="exit after this many idle seconds")
    w.add_argument("--runs", default=None, help="runs folder (default $ROBUSTSCOPE_RUNS or ./runs)")
    w.add_argument("--lane", default="all", choices=["all", "analysis"],
                   help="all: analyses first, then training (default); analysis: analyses only (a second "
                        "worker so analyses do not wait behind a training run)")
    w.set_defaults(func=cmd_worker)


def worker_main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m engine.jobs`` (the worker without the CLI's command discovery)."""
    parser = argparse.ArgumentParser(prog="python -m engine.jobs", description="RobustScope job worker")
    _add_worker_args(parser)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


def register(subparsers) -> None:
    """Add ``train`` and ``worker`` (``jobs`` is registered by ``engine/cli/jobs.py``)."""
    p = subparsers.add_parser("train", help="train a model in the foreground from a JSON config")
    p.add_argument("--config", required=True, help="TrainConfig JSON file")
    p.add_argument("--run-dir", default=None, help="resumable state folder (default runs/train/<name>)")
    p.add_argument("--no-resume", action="store_true", help="start over even if the run folder has state")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_train)

    _add_worker_args(subparsers.add_parser("worker", help="run queued jobs (training and analyses)"))
