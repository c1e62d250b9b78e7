"""``sweep``: robust accuracy of checkpoints at several ε (the Attack Lab's ε-sweep).

    python -m engine sweep --checkpoint checkpoints/std --checkpoint checkpoints/rob --eps 0 0.01 0.03 --json

One ``engine.analysis`` request (:class:`~engine.analysis.EpsSweepRequest`): the same command
again answers from the result store (``"cached": true``), ``--background`` queues it as a job
(``jobs wait`` / ``jobs result``) and ``--no-cache`` measures again.
"""
from __future__ import annotations

import argparse

from engine.cli import run_request
from engine.cli.attack import add_comparison_arguments, attack_options, checked, models_and_dataset


def register(sub) -> None:
    """Add the ``sweep`` command."""
    p = sub.add_parser("sweep", help="ε-sweep: robust accuracy of checkpoints at several ε")
    p.add_argument("--eps", type=float, nargs="+", required=True, help="the ε values, e.g. 0 0.01 0.03")
    add_comparison_arguments(p, "write it: FILE.json, FILE.csv (slot, ε, robust accuracy) or FILE.npz", eps=False)
    p.set_defaults(func=run_sweep)


def sweep_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.EpsSweepRequest` of ``sweep --checkpoint ...``."""
    from engine.analysis.kinds.sweep import EpsSweepRequest

    models, dataset = models_and_dataset(args, args.checkpoint)
    return checked(EpsSweepRequest(models=models, dataset=dataset, eps=tuple(args.eps),
                                   attack=args.attack, params=attack_options(args, skip=("eps",)), n=args.n,
                                   batch_size=args.batch_size, seed=args.seed), args)


def run_sweep(args: argparse.Namespace) -> int:
    """Answer from the result store or measure; print (``--json``) or write (``--out``) it."""
    return run_request(sweep_request(args), args, "ε-sweep")
