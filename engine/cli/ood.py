"""``ood`` and ``units``: out-of-distribution accuracy, shape bias and unit statistics.

Agarwal & Chen 2020 (docs/SCIENCE.md, "Generalisation and simplicity"): robust models do better
on texture-less images and their units are smoother and simpler. With two checkpoints both commands add the paper's findings,
computed from the numbers (``engine.generalisation.paper_findings``).
"""
from __future__ import annotations

import argparse
import sys

from engine.catalogue import DISTORTIONS as DISTORTION_NAMES
from engine.catalogue import SEVERITIES
from engine.cli import MAX_BATCH, add_analysis_options, add_branch_option, check_int
from engine.errors import InvalidParameterError


def _common(p: argparse.ArgumentParser, n_default: int) -> None:
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint path (repeat for a second model, e.g. standard then robust)")
    p.add_argument("--dataset", help="dataset name (default: the first card's dataset)")
    p.add_argument("--n", type=int, default=n_default, help="test images to use")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    add_branch_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")


def register(sub) -> None:
    """Add the ``ood`` and ``units`` commands."""
    p = sub.add_parser("ood", help="accuracy under distortions (+ shape bias on shapes)")
    _common(p, 500)
    p.add_argument("--distortions", nargs="+", choices=list(DISTORTION_NAMES), help="default: all")
    p.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES))
    add_analysis_options(p)
    p.set_defaults(func=run_ood)
    p = sub.add_parser("units", help="per-unit smoothness and label complexity of layers")
    _common(p, 500)
    p.add_argument("--layer", action="append", help="dotted layer name (repeatable; default: main blocks)")
    p.add_argument("--top-k", type=int, help="images per unit for label complexity (default: 10, at most --n)")
    add_analysis_options(p)
    p.set_defaults(func=run_units)


def _print_findings(report: dict) -> None:
    if report.get("summary"):
        print(report["summary"])
        for f in report["findings"]:
            mark = {True: "yes", False: "NO", None: "n/a"}[f["holds"]]
            print(f"  [{mark}] {f['claim']}: {f['detail']}")


def ood_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.OODRequest` of ``ood --checkpoint ...`` (no torch needed)."""
    from engine.analysis import ModelRef
    from engine.analysis.kinds.ood import OODRequest

    if args.n is None or args.n < 1:
        raise InvalidParameterError(f"--n must be at least 1, got {args.n}")
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    refs = tuple(ModelRef.of(path, args.bn_branch) for path in args.checkpoint)
    return OODRequest.make(models=refs, dataset=args.dataset, n=args.n, batch_size=args.batch_size, seed=args.seed,
                      distortions=tuple(args.distortions) if args.distortions else None,
                           severities=tuple(args.severities))


def run_ood(args: argparse.Namespace) -> int:
    """Accuracy table under every distortion/severity, shapes variants and shape bias (answered
    from the result store when the same request ran before; ``--background`` queues it)."""
    from engine.cli import run_request

    def text(result) -> int:
        report = result.value()
        wide = report.table.pivot_table(index=["distortion", "severity"], columns="model", values="accuracy",
                                        sort=False)
        print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
        for name, r in report.shape_bias.items():
            print(f"shape bias {name}: {r.shape_bias:.3f} (shape {r.shape_fraction:.2f}, texture {r.texture_fraction:.2f})")
        if report.shape_bias_note:
            print(report.shape_bias_note)
        _print_findings(result.meta.get("findings") or {})
        for note in result.meta.get("notes", []):
            print(f"warning: {note}", file=sys.stderr)
        return 0

    return run_request(ood_request(args), args, "ood", out_handler=None if args.json or args.background else text)


def units_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.UnitsRequest` of ``units --checkpoint ...`` (no torch needed)."""
    from engine.analysis import ModelRef
    from engine.analysis.kinds.units import UnitsRequest

    if args.n is None or args.n < 1:
        raise InvalidParameterError(f"--n must be at least 1, got {args.n}")
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    top_k = check_int("--top-k", min(10, args.n) if args.top_k is None else args.top_k, 1, args.n, "at most --n")
    refs = tuple(ModelRef.of(path, args.bn_branch) for path in args.checkpoint)
    return UnitsRequest.make(models=refs, dataset=args.dataset, n=args.n,
                             layers=tuple(args.layer) if args.layer else None, top_k=top_k, batch_size=args.batch_size)


def run_units(args: argparse.Namespace) -> int:
    """Per-unit roughness / high-frequency share / label complexity per layer, per model (a stored
    analysis: answered from the result store when the same request ran before; ``--background``
    queues it)."""
    from engine.cli import run_request

    def text(result) -> int:
        import pandas as pd

        from engine.analysis import get_analysis

        report = get_analysis("units").report(result)
        medians = pd.DataFrame(report["medians"]).set_index(["model", "layer"])
        print(medians.to_string(float_format=lambda v: f"{v:.3f}"))
        _print_findings(report)
        return 0

    return run_request(units_request(args), args, "units", out_handler=None if args.json or args.background else text)
