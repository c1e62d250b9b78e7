"""``atlas``: every unit of a layer, one model or two side by side — a stored analysis
(``engine.analysis.kinds.atlas``); ``--out DIR`` writes it as a static HTML atlas."""
from __future__ import annotations

import argparse

from engine.cli import MAX_BATCH, add_analysis_options, add_branch_option, check_int


def register(sub) -> None:
    """Add the ``atlas`` command."""
    p = sub.add_parser("atlas", help="every unit of a layer: visualisations, top-k images, statistics, matches")
    p.add_argument("--checkpoint", required=True, help="checkpoint path (model A)")
    p.add_argument("--layer", required=True, help="dotted layer name (python -m engine models layers P)")
    p.add_argument("--compare", help="a second checkpoint (model B), shown beside A and matched unit by unit")
    p.add_argument("--compare-layer", help="B's layer (default: --layer)")
    p.add_argument("--dataset", help="dataset name (default: A's card's dataset)")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--n", type=int, default=1000, help="scan the split's first N images (default 1000)")
    p.add_argument("--k", type=int, default=9, help="top-k images per unit (default 9)")
    p.add_argument("--directions", type=int, default=8, help="random directions per model, the baseline row")
    p.add_argument("--steps", type=int, default=128, help="optimisation steps of each visualisation")
    p.add_argument("--seed", type=int, default=0, help="seed of the visualisations")
    p.add_argument("--render-batch", type=int, default=64, help="units optimised together (default 64)")
    p.add_argument("--batch-size", type=int, default=128, help="images per forward pass of the scan")
    p.add_argument("--device", default="auto")
    add_branch_option(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print every unit's figures as JSON")
    out.add_argument("--out", help="write a static HTML atlas into this folder (index.html, a page per unit, PNGs)")
    out.add_argument("--csv", help="write one row per unit to this .csv file")
    add_analysis_options(p)
    p.set_defaults(func=run_atlas)


def atlas_request(args: argparse.Namespace):
    """The request of ``atlas --checkpoint ...`` (no torch needed)."""
    from engine.analysis import ModelRef
    from engine.analysis.kinds.atlas import AtlasRequest

    check_int("--n", args.n, 1)
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    models = (ModelRef.of(args.checkpoint, args.bn_branch),)
    layers = (args.layer,)
    if args.compare:
        models += (ModelRef.of(args.compare, args.bn_branch),)
        layers += (args.compare_layer or args.layer,)
    elif args.compare_layer:
        from engine.errors import InvalidParameterError

        raise InvalidParameterError("--compare-layer needs --compare")
    return AtlasRequest.make(models=models, layers=layers, dataset=args.dataset, split=args.split, n=args.n, k=args.k,
                             directions=args.directions, steps=args.steps, seed=args.seed,
                             render_batch=args.render_batch, batch_size=args.batch_size)


def run_atlas(args: argparse.Namespace) -> int:
    """Answer from the result store or compute; print a summary or ``--json``, or write ``--out``
    (HTML) / ``--csv``."""
    from engine.cli import run_request

    args.out_csv, args.out_html = args.csv, args.out
    if args.csv:
        args.out = args.csv           # the generic writer handles .csv
        return run_request(atlas_request(args), args, "atlas")
    args.out = None
    handler = None if args.json or args.background else (write_html if args.out_html else print_summary)
    if handler is write_html:
        from engine.fileio import output_folder

        output_folder(args.out_html)  # refuse a bad folder before minutes of work
        handler = lambda result: write_html(result, args.out_html)  # noqa: E731
    return run_request(atlas_request(args), args, "atlas", out_handler=handler)


def write_html(result, folder: str) -> int:
    """The static HTML atlas of ``result`` in ``folder``."""
    import sys

    from engine.cli import warn_result_notes
    from engine.featvis.atlas import scanned_images
    from engine.featvis.atlas_html import export_atlas

    warn_result_notes(result)
    atlas = result.value()
    index = export_atlas(atlas, scanned_images(atlas.dataset, atlas.split), folder,
                         title=f"Unit atlas · {result.request.describe()}")
    print(f"wrote {index} (result {result.key}, {'stored earlier' if result.cached else 'computed'}); "
          "open it in a browser, no server needed", file=sys.stderr)
    return 0


def print_summary(result) -> int:
    """The terminal form: per model its units and median figures."""
    from engine.analysis.kinds.atlas import report
    from engine.cli import warn_result_notes

    warn_result_notes(result)
    for model in report(result)["models"]:
        match = "" if model["median_best_match"] is None else f", median best-match r {model['median_best_match']:.3f}"
        print(f"{model['name']} · {model['layer']}: {model['units']} units, {model['directions']} directions, "
              f"median selectivity {model['median_selectivity']:.3f}, median sparsity {model['median_sparsity']:.3f}"
              f"{match}")
    print(f"result {result.key} · {'stored earlier' if result.cached else 'computed'} in {result.seconds:.1f} s; "
          "--out DIR writes the HTML atlas, --json every unit")
    return 0
