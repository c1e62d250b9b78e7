"""``activations``: per-layer activation statistics of one or more models (mean, mean |a|, share of
positive entries) on the same test images — a stored analysis (``engine.analysis.kinds.activations``)."""
from __future__ import annotations

import argparse

from engine.cli import MAX_BATCH, add_analysis_options, add_branch_option, check_int


def register(sub) -> None:
    """Add the ``activations`` command."""
    p = sub.add_parser("activations", help="per-layer activation statistics (mean, mean |a|, share positive)")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint path (repeat for a second model, e.g. standard then robust)")
    p.add_argument("--dataset", help="dataset name (default: the first card's dataset)")
    p.add_argument("--n", type=int, default=256, help="test images (the first N)")
    p.add_argument("--layer", action="append", help="dotted layer name (repeatable; default: main blocks)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    add_branch_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", help="write the table (.csv), the JSON (.json) or the arrays (.npz)")
    add_analysis_options(p)
    p.set_defaults(func=run_activations)


def activations_request(args: argparse.Namespace):
    """The request of ``activations --checkpoint ...`` (no torch needed)."""
    from engine.analysis import ModelRef
    from engine.analysis.kinds.activations import ActivationsRequest

    check_int("--n", args.n, 1)
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    return ActivationsRequest.make(models=tuple(ModelRef.of(path, args.bn_branch) for path in args.checkpoint),
                                   dataset=args.dataset, n=args.n, batch_size=args.batch_size,
                                   layers=tuple(args.layer) if args.layer else None)


def run_activations(args: argparse.Namespace) -> int:
    """Answer from the result store or compute; print a table, ``--json``, or write ``--out``."""
    from engine.cli import run_request

    return run_request(activations_request(args), args, "activations",
                       out_handler=None if args.json or args.out else print_table)


def print_table(result) -> int:
    """The terminal form: one line per model and layer."""
    from engine.cli import warn_result_notes

    warn_result_notes(result)
    print(f"{'model':<28} {'layer':<24} {'mean':>10} {'mean |a|':>10} {'positive':>9}")
    for model, by_layer in result.value().items():
        for layer, stats in by_layer.items():
            print(f"{model:<28} {layer:<24} {stats['mean']:>10.4f} {stats['mean_abs']:>10.4f} "
                  f"{stats['positive_share']:>8.1%}")
    print(f"result {result.key} · {'stored earlier' if result.cached else 'computed'} in {result.seconds:.1f} s")
    return 0
