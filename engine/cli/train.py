"""``python -m engine train | worker``: training from the shell, and the job worker (its options and
loop are ``engine.jobs.worker``'s, shared with ``python -m engine.jobs``). The job actions
(``python -m engine jobs submit|list|...``) are ``engine/cli/jobs.py``'s."""
from __future__ import annotations

import logging
import sys
import time

from engine.jobs.command import add_worker_arguments


class _Bar:
    """A one-line progress bar on stderr."""

    def __init__(self):
        self.last = 0.0
        self.open = False  # a bar is drawn and its line not ended yet

    def end(self) -> None:
        """End a half-drawn bar's line, so what follows (an ``error: ...``) starts on its own."""
        if self.open:
            sys.stderr.write("\n")
            self.open = False

    def __call__(self, ev) -> None:
        now = time.monotonic()
        if ev.kind == "epoch":
            m = ev.metrics
            rob = m.get("robust_acc")
            sys.stderr.write(
                f"\repoch {ev.epoch}/{ev.epochs}  loss {m['train_loss']:.4f}  train acc {m['train_acc']:.3f}"
                f"  clean {m.get('clean_acc') or 0:.3f}  robust {rob if rob is None else round(rob, 3)}\n")
            self.open = False
            return
        if now - self.last < 0.2 and ev.batch < ev.batches:
            return
        self.last = now
        filled = int(30 * ev.batch / max(ev.batches, 1))
        eta = f"{ev.eta_s:.0f}s" if ev.eta_s is not None else "?"
        sys.stderr.write(f"\repoch {ev.epoch}/{ev.epochs} [{'#' * filled}{'.' * (30 - filled)}] "
                         f"{ev.batch}/{ev.batches} loss {ev.metrics['train_loss']:.4f} eta {eta}   ")
        sys.stderr.flush()
        self.open = True


def cmd_train(args) -> int:
    """Train in the foreground. A run folder or checkpoints folder that refuses a write (read-only,
    full disk) ends it with ``error: <one sentence>`` and exit status 1 (``StorageError``, printed
    by ``engine.cli.main``); the run folder's earlier epochs stay, and the same command resumes."""
    from engine.cli import print_json, read_train_config
    from engine.training import train

    config = read_train_config(args.config)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    bar = None if args.quiet else _Bar()
    try:
        result = train(config, run_dir=args.run_dir, progress=bar, resume=not args.no_resume)
    finally:
        if bar is not None:
            bar.end()
    if result.checkpoint is not None or args.json:
        print_json({"status": result.status, "epochs_completed": result.epochs_completed,
                    "checkpoint": result.checkpoint, "best_checkpoint": result.best_checkpoint,
                    "history": result.history, "seconds": round(result.seconds, 2)})
    return 0


def register(subparsers) -> None:
    """Add ``train`` and ``worker`` (``jobs`` is registered by ``engine/cli/jobs.py``)."""
    p = subparsers.add_parser("train", help="train a model in the foreground from a JSON config")
    p.add_argument("--config", required=True, help="TrainConfig JSON file")
    p.add_argument("--run-dir", default=None, help="resumable state folder (default runs/train/<name>)")
    p.add_argument("--no-resume", action="store_true", help="start over even if the run folder has state")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_train)

    add_worker_arguments(subparsers.add_parser("worker", help="run queued jobs (training and analyses)"))
