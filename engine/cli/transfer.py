"""``transfer``: the transfer matrix of checkpoints: an attack crafted on each (rows), evaluated on
each (columns) (the Attack Lab's Transfer; Szegedy et al. 2013).

    python -m engine transfer --checkpoint checkpoints/std --checkpoint checkpoints/rob --attack pgd --json

One ``engine.analysis`` request (:class:`~engine.analysis.TransferRequest`): the same command
again answers from the result store (``"cached": true``), ``--background`` queues it as a job
(``jobs wait`` / ``jobs result``) and ``--no-cache`` measures again.
"""
from __future__ import annotations

import argparse

from engine.cli import MAX_BATCH, add_analysis_options, check_int, run_request
from engine.cli.attack import add_attack_arguments, attack_options, card_dataset, check_images, model_refs


def register(sub) -> None:
    """Add the ``transfer`` command."""
    p = sub.add_parser("transfer", help="transfer matrix: an attack crafted on each checkpoint, evaluated on each")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="a checkpoint (repeat for several: slots A, B, ...)")
    p.add_argument("--dataset", help="dataset name (default: the first card's dataset)")
    p.add_argument("--n", type=int, default=64, help="test images, the first N (default 64)")
    add_attack_arguments(p, default="pgd")
    p.add_argument("--seed", type=int, default=0, help="seeds torch's RNG around the attacks (default 0)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    add_analysis_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", help="write it: FILE.json or FILE.csv (crafted on, evaluated on, accuracy, fooling rate)")
    p.set_defaults(func=run_transfer)


def transfer_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.TransferRequest` of ``transfer --checkpoint ...``."""
    from engine.analysis import TransferRequest

    check_int("--n", args.n, 1)
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    models = model_refs(args.checkpoint)
    dataset = card_dataset(args, models[0])
    check_images(args, dataset)
    return TransferRequest(models=models, dataset=dataset, attack=args.attack,
                           params=attack_options(args), n=args.n, batch_size=args.batch_size,
                           seed=args.seed).validate()


def run_transfer(args: argparse.Namespace) -> int:
    """Answer from the result store or measure; print (``--json``) or write (``--out``) it."""
    return run_request(transfer_request(args), args, "transfer")
