"""``sweep``: robust accuracy of checkpoints at several ε (the Attack Lab's ε-sweep).

    python -m engine sweep --checkpoint checkpoints/std --checkpoint checkpoints/rob --eps 0 0.01 0.03 --json

One ``engine.analysis`` request (:class:`~engine.analysis.EpsSweepRequest`): the same command
again answers from the result store (``"cached": true``), ``--background`` queues it as a job
(``jobs wait`` / ``jobs result``) and ``--no-cache`` measures again.
"""
from __future__ import annotations

import argparse

from engine.cli import MAX_BATCH, add_analysis_options, check_int, run_request
from engine.cli.attack import add_attack_arguments, attack_options, card_dataset, check_images, model_refs


def register(sub) -> None:
    """Add the ``sweep`` command."""
    p = sub.add_parser("sweep", help="ε-sweep: robust accuracy of checkpoints at several ε")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="a checkpoint (repeat for several: slots A, B, ...)")
    p.add_argument("--dataset", help="dataset name (default: the first card's dataset)")
    p.add_argument("--eps", type=float, nargs="+", required=True, help="the ε values, e.g. 0 0.01 0.03")
    p.add_argument("--n", type=int, default=64, help="test images, the first N (default 64)")
    add_attack_arguments(p, default="pgd", eps=False)
    p.add_argument("--seed", type=int, default=0, help="seeds torch's RNG around the attack (default 0)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    add_analysis_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", help="write it: FILE.json, FILE.csv (slot, ε, robust accuracy) or FILE.npz")
    p.set_defaults(func=run_sweep)


def sweep_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.EpsSweepRequest` of ``sweep --checkpoint ...``."""
    from engine.analysis import EpsSweepRequest

    check_int("--n", args.n, 1)
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    models = model_refs(args.checkpoint)
    dataset = card_dataset(args, models[0])
    check_images(args, dataset)
    return EpsSweepRequest(models=models, dataset=dataset, eps=tuple(args.eps),
                           attack=args.attack, params=attack_options(args, skip=("eps",)), n=args.n,
                           batch_size=args.batch_size, seed=args.seed).validate()


def run_sweep(args: argparse.Namespace) -> int:
    """Answer from the result store or measure; print (``--json``) or write (``--out``) it."""
    return run_request(sweep_request(args), args, "ε-sweep")
