"""``transfer``: the transfer matrix of checkpoints: an attack crafted on each (rows), evaluated on
each (columns) (the Attack Lab's Transfer; Szegedy et al. 2013).

    python -m engine transfer --checkpoint checkpoints/std --checkpoint checkpoints/rob --attack pgd --json

One ``engine.analysis`` request (:class:`~engine.analysis.TransferRequest`): the same command
again answers from the result store (``"cached": true``), ``--background`` queues it as a job
(``jobs wait`` / ``jobs result``) and ``--no-cache`` measures again.
"""
from __future__ import annotations

import argparse

from engine.cli import run_request
from engine.cli.attack import add_comparison_arguments, attack_options, checked, models_and_dataset


def register(sub) -> None:
    """Add the ``transfer`` command."""
    p = sub.add_parser("transfer", help="transfer matrix: an attack crafted on each checkpoint, evaluated on each")
    add_comparison_arguments(p, "write it: FILE.json or FILE.csv (crafted on, evaluated on, accuracy, fooling rate)")
    p.set_defaults(func=run_transfer)


def transfer_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.TransferRequest` of ``transfer --checkpoint ...``."""
    from engine.analysis.kinds.transfer import TransferRequest

    models, dataset = models_and_dataset(args, args.checkpoint)
    return checked(TransferRequest(models=models, dataset=dataset, attack=args.attack, params=attack_options(args),
                                   n=args.n, batch_size=args.batch_size, seed=args.seed), args)


def run_transfer(args: argparse.Namespace) -> int:
    """Answer from the result store or measure; print (``--json``) or write (``--out``) it."""
    return run_request(transfer_request(args), args, "transfer")
