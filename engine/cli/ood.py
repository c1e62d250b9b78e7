"""``ood`` and ``units``: out-of-distribution accuracy, shape bias and unit statistics.

Agarwal & Chen 2020 (docs/SCIENCE.md, "Generalisation and simplicity"): robust models do better
on texture-less images and their units are smoother and simpler. With two checkpoints both commands add the paper's findings,
computed from the numbers (``engine.generalisation.paper_findings``).
"""
from __future__ import annotations

import argparse
import math

import engine
from engine import data as edata
from engine.cli import MAX_BATCH, add_branch_option, check_int, print_json, require_compatible
from engine.cli.evaluate import stderr_progress
from engine.data.distortions import DISTORTIONS, SEVERITIES
from engine.device import resolve_device
from engine.errors import InvalidParameterError
from engine.generalisation import (
    CUE_CONFLICT_UNAVAILABLE,
    compare_units,
    cue_conflict_set,
    evaluate_ood,
    findings_line,
    paper_findings,
    robust_and_standard,
    shape_bias,
    shapes_image_sets,
    units_frame,
)


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
    p.add_argument("--distortions", nargs="+", choices=list(DISTORTIONS), help="default: all")
    p.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES))
    p.set_defaults(func=run_ood)
    p = sub.add_parser("units", help="per-unit smoothness and label complexity of layers")
    _common(p, 500)
    p.add_argument("--layer", action="append", help="dotted layer name (repeatable; default: main blocks)")
    p.add_argument("--top-k", type=int, default=10)
    p.set_defaults(func=run_units)


def _load(args) -> tuple[dict, dict, str, tuple]:
    """name -> model and name -> card for every --checkpoint; the dataset; its (images, labels)."""
    if args.n is None or args.n < 1:
        raise InvalidParameterError(f"--n must be at least 1, got {args.n}")
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    device = str(resolve_device(args.device))
    models, cards, checkpoints = {}, {}, []
    for path in args.checkpoint:
        loaded = engine.load(path, device=device, bn_branch=args.bn_branch)
        name = loaded.path.stem
        name = name if name not in models else f"{name} ({len(models) + 1})"
        models[name], cards[name] = loaded.model, loaded.card
        checkpoints.append(loaded)
    dataset = args.dataset or next(iter(cards.values())).get("dataset")
    split = edata.load_dataset(dataset, split="test")
    require_compatible(checkpoints, split)
    check_int("--n", args.n, 1, len(split), f"the {dataset} test split's size")
    data = edata.take(split, args.n)
    return models, cards, dataset, data


def _finite(obj):
    """Replace NaN/inf floats (nested) by None so the JSON output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _findings(cards: dict, **numbers) -> dict:
    if len(cards) != 2:
        return {}
    robust, standard, note = robust_and_standard(cards)
    found = paper_findings(robust, standard, **numbers)
    return {"robust": robust, "standard": standard, "note": note, "summary": findings_line(found),
            "findings": [f._asdict() for f in found]}


def _print_findings(report: dict) -> None:
    if report.get("summary"):
        print(report["summary"])
        for f in report["findings"]:
            mark = {True: "yes", False: "NO", None: "n/a"}[f["holds"]]
            print(f"  [{mark}] {f['claim']}: {f['detail']}")


def run_ood(args: argparse.Namespace) -> int:
    """Accuracy table under every distortion/severity, shapes variants and shape bias."""
    models, cards, dataset, (images, labels) = _load(args)
    size = int(images.shape[-1])
    sets = shapes_image_sets(args.n, seed=args.seed, image_size=size) if dataset == "shapes" else None
    result = evaluate_ood(models, images, labels, args.distortions, args.severities, image_sets=sets,
                          batch_size=args.batch_size, seed=args.seed, progress=stderr_progress("ood"))
    conflict = cue_conflict_set(dataset, args.n, seed=args.seed, image_size=size)
    bias = {} if conflict is None else {name: shape_bias(m, *conflict, batch_size=args.batch_size)
                                        for name, m in models.items()}
    report = {
        "dataset": dataset, "n": args.n, "seed": args.seed, "seconds": round(result.seconds, 3),
        "rows": result.table.to_dict(orient="records"),
        "shape_bias": {name: r._asdict() for name, r in bias.items()} or None,
        "shape_bias_note": "" if conflict is not None else CUE_CONFLICT_UNAVAILABLE.format(dataset=dataset),
        **_findings(cards, ood_table=result.table, shape_bias=bias),
    }
    if args.json:
        print_json(_finite(report))
        return 0
    wide = result.table.pivot_table(index=["distortion", "severity"], columns="model", values="accuracy", sort=False)
    print(wide.to_string(float_format=lambda v: f"{v:.3f}"))
    for name, r in bias.items():
        print(f"shape bias {name}: {r.shape_bias:.3f} (shape {r.shape_fraction:.2f}, texture {r.texture_fraction:.2f})")
    if report["shape_bias_note"]:
        print(report["shape_bias_note"])
    _print_findings(report)
    return 0


def run_units(args: argparse.Namespace) -> int:
    """Per-unit roughness / high-frequency share / label complexity per layer, per model."""
    from engine.models import default_layers

    models, cards, dataset, (images, labels) = _load(args)
    layers = {name: args.layer or default_layers(m) for name, m in models.items()}
    reports = compare_units(models, images, labels, layers, top_k=args.top_k,
                            batch_size=args.batch_size, progress=stderr_progress("units"))
    frame = units_frame(reports)
    active = frame[frame["active"]]
    medians = active.groupby(["model", "layer"], sort=False)[
        ["roughness", "high_freq_share", "label_entropy", "distinct_labels"]].median()
    report = {
        "dataset": dataset, "n": args.n, "top_k": args.top_k,
        "layers": {name: {layer: {k: v.tolist() for k, v in s._asdict().items() if k != "layer"}
                          for layer, s in r.layers.items()} for name, r in reports.items()},
        "medians": medians.reset_index().to_dict(orient="records"),
        **_findings(cards, units=frame),
    }
    if args.json:
        print_json(_finite(report))
        return 0
    print(medians.to_string(float_format=lambda v: f"{v:.3f}"))
    _print_findings(report)
    return 0
