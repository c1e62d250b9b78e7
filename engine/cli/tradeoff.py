"""``tradeoff``: the ε-vs-interpretability view (Kim & Seo 2019) from the command line.

    python -m engine tradeoff --checkpoint checkpoints/fashion_standard \\
        --checkpoint checkpoints/fashion_pgd_linf_0p1 --dataset fashion-mnist --n 500 --json

For each checkpoint (its card must record a training ε; standard training counts as ε = 0): clean
accuracy and the share of gradient-attribution mass inside the object mask, on ``--n`` held-out
images (exact masks on ``shapes``, the non-zero pixels on MNIST and Fashion-MNIST).

The measurement is a stored analysis (``tradeoff``): the same command again reads it back
(``"cached": true``; ``--no-cache`` measures again); ``--background`` queues it as a job.
"""
from __future__ import annotations

import argparse

from engine.analysis.kinds.tradeoff import MAX_ALIGNMENT_IMAGES
from engine.catalogue import ALIGNMENT_DATASETS
from engine.catalogue import ATTRIBUTION_METHODS as METHOD_NAMES
from engine.cli import MAX_BATCH, add_analysis_options, check_int, run_request


def register(sub) -> None:
    """Add the ``tradeoff`` command."""
    p = sub.add_parser("tradeoff", help="alignment of attributions and clean accuracy vs training ε")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint path (repeat for each ε)")
    p.add_argument("--dataset", choices=ALIGNMENT_DATASETS, help="default: the first card's dataset")
    p.add_argument("--n", type=int, default=256, help="held-out images (default 256)")
    p.add_argument("--method", default="saliency", choices=list(METHOD_NAMES), help="attribution method")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_analysis_options(p)
    p.set_defaults(func=run_tradeoff)


def tradeoff_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.TradeoffRequest` of the command line (no torch needed)."""
    from engine.analysis.kinds.tradeoff import TradeoffRequest

    check_int("--n", args.n, 1, MAX_ALIGNMENT_IMAGES, "held-out images")
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    return TradeoffRequest.make(models=tuple(args.checkpoint), dataset=args.dataset, n=args.n, method=args.method,
                                batch_size=args.batch_size)


def run_tradeoff(args: argparse.Namespace) -> int:
    """Measure every checkpoint (or read the stored measurement) and print one row per ε (sorted)."""
    return run_request(tradeoff_request(args), args, "checkpoints", out_handler=None if args.json else print_table)


def print_table(result) -> int:
    """The terminal form: one line per checkpoint, sorted by ε."""
    points = result.value()
    request = result.request
    print(f"{request.dataset}, {request.method}, {request.n} images (chance alignment {points[0].chance:.3f})")
    for p in points:
        print(f"  {p.name}: ε={p.epsilon:g} {p.norm}  clean {p.clean_accuracy:.4f}  "
              f"alignment {p.alignment:.3f} ± {p.alignment_std:.3f}")
    return 0
