"""``advprop``: an AdvProp model's two BatchNorm branches beside a standard and a robust model.

One ``engine.analysis`` request (:class:`~engine.analysis.AdvPropRequest`): the standard and robust
peers are chosen from the listing when the command runs; the same command again prints the stored
result (``"cached": true``), ``--background`` queues it as a job and ``--no-cache`` measures again.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.cli import MAX_BATCH, add_analysis_options, check_int, needs_checking, run_request, warn_result_notes


def register(sub) -> None:
    """Add the ``advprop`` command."""
    p = sub.add_parser("advprop", help="AdvProp's main and aux BN branches vs standard and PGD-AT models "
                                       "(clean, PGD and distorted accuracy; Xie et al. 2019)")
    p.add_argument("--checkpoint", required=True, help="the AdvProp (dual-BN) checkpoint")
    p.add_argument("--root", action="append", help="where to find the standard and robust models of its dataset "
                                                    "(default: the checkpoints folder)")
    p.add_argument("--n", type=int, default=500, help="test images (default 500)")
    p.add_argument("--eps", type=float, help="PGD ε (default: the dataset's usual one)")
    p.add_argument("--steps", type=int, default=20, help="PGD steps (default 20)")
    p.add_argument("--severity", type=int, default=3, help="distortion severity 1..5 (default 3)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_analysis_options(p)
    p.set_defaults(func=run_advprop)


def advprop_request(args: argparse.Namespace):
    """The request of ``advprop --checkpoint P ...``: the checkpoint and its dataset's standard and
    robust peers (from ``--root`` and the checkpoint's folder); ``--n`` is checked against the test
    split unless the stored result answers."""
    from engine import checkpoints as ckpt
    from engine.analysis import ModelRef
    from engine.analysis.kinds.advprop import advprop_request as request_for

    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    path = ModelRef.of(args.checkpoint).path
    infos = ckpt.list_checkpoints(args.root) + ckpt.list_checkpoints(Path(path).parent)
    request = request_for(infos, path, n=args.n, eps=args.eps, steps=args.steps, severity=args.severity,
                          batch_size=args.batch_size)
    if needs_checking(request, args):
        from engine import data as edata

        size = len(edata.load_dataset(request.dataset, split="test"))
        check_int("--n", args.n, 1, size, "the test split's size")
    return request


def run_advprop(args: argparse.Namespace) -> int:
    """Answer the comparison from the result store or measure it; print the table or its JSON
    (``--background``: queue it as a job)."""
    def show(result) -> int:
        warn_result_notes(result)
        print(result.value().to_string(index=False))
        return 0

    return run_request(advprop_request(args), args, "advprop",
                       out_handler=None if args.json or args.background else show)
