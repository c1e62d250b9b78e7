"""``saliency``: attribution maps of one dataset image (PNG heatmaps/overlays + JSON), keep/remove
curves (JSON), and explanation-quality metrics (JSON or CSV) for one or several checkpoints.

    python -m engine saliency --checkpoint ckpt/a --checkpoint ckpt/b --index 3 --out out/
    python -m engine saliency --checkpoint ckpt/a --methods saliency smoothgrad \\
        --param smoothgrad.n_samples=32 --curve remove --n 128 --out out/
    python -m engine saliency --checkpoint ckpt/a --curve remove --retrain \\
        --retrain-epochs 4 --retrain-n 2048 --out out/      # ROAR: retrain at each fraction
    python -m engine saliency --checkpoint ckpt/a --checkpoint ckpt/b --metrics road,localisation \\
        --methods saliency smoothgrad --n 128 --out metrics.csv   # or --json

The maps, the curve and the metrics are stored analyses (``saliency_grid``, ``saliency_curves``,
``saliency_metrics``): the same command again reads them back (``--no-cache`` computes again);
``--background`` queues them as jobs. ``--metrics`` runs the metrics alone (no maps are written).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import engine
from engine import data as edata
from engine.analysis import run_analysis
from engine.analysis.base import unique_names
from engine.attribution import (
    DEFAULT_FRACTIONS,
    METHODS,
    MODES,
    REDUCTIONS,
    REPLACEMENTS,
    colorize,
    image_to_rgb,
    method_params,
    overlay,
    to_png_bytes,
)
from engine.cli import (
    MAX_PNG_SIDE,
    add_analysis_options,
    add_branch_option,
    check_int,
    print_json,
    queue_request,
    require_compatible,
    warn,
)
from engine.device import resolve_device
from engine.errors import InvalidParameterError


def register(sub) -> None:
    """Add the ``saliency`` command."""
    p = sub.add_parser("saliency", help="attribution maps (PNG + JSON), keep/remove curves, explanation metrics")
    p.add_argument("--checkpoint", required=True, action="append",
                   help="checkpoint path (stem, .safetensors or .json); repeat to compare models")
    p.add_argument("--dataset", help="dataset name (default: the first checkpoint's dataset)")
    add_branch_option(p)
    p.add_argument("--index", type=int, default=0, help="test-split image index (default 0)")
    p.add_argument("--target", type=int, help="class to attribute (default: each model's prediction)")
    p.add_argument("--methods", nargs="+", default=["saliency"], choices=list(METHODS), metavar="METHOD",
                   help=f"attribution methods: {', '.join(METHODS)} (default: saliency)")
    p.add_argument("--param", action="append", default=[], metavar="METHOD.NAME=VALUE",
                   help="a method parameter, e.g. smoothgrad.n_samples=32 or integrated_gradients.baseline=mean")
    p.add_argument("--reduce", default="abs_sum", choices=list(REDUCTIONS), help="channel reduction")
    p.add_argument("--percentile", type=float, default=99.0, help="heatmap clipping percentile")
    p.add_argument("--alpha", type=float, default=0.6, help="overlay opacity in [0, 1]")
    p.add_argument("--scale", type=int, default=4, help="PNG upscaling factor (nearest neighbour)")
    p.add_argument("--curve", choices=list(MODES), help="also compute a keep or remove curve (JSON)")
    p.add_argument("--curve-method", choices=list(METHODS), help="method ranking the pixels (default: first of --methods)")
    p.add_argument("--n", type=int, default=64, help="images for the curve or the metrics (default 64)")
    p.add_argument("--seed", type=int,
                   help="random image subset for the curve or the metrics (default: the first n)")
    p.add_argument("--fractions", help="comma-separated fractions in [0, 1] for the curve; with --metrics road, "
                                      "ROAD's fractions in [0, 1) (default 0.1,0.2,...,0.9)")
    p.add_argument("--replacement", default="mean", choices=list(REPLACEMENTS), help="fill for dropped pixels")
    p.add_argument("--retrain", action="store_true",
                   help="with --curve: train a fresh model on masked training images at each fraction "
                        "(KAR for keep, ROAR for remove; Hooker et al. 2019) and evaluate it; slow")
    p.add_argument("--retrain-epochs", type=int, default=4, help="epochs per retraining (default 4)")
    p.add_argument("--retrain-n", type=int, default=2048,
                   help="training-split images per retraining (default 2048; seeded subset with --seed)")
    p.add_argument("--metrics", metavar="NAME[,NAME...]",
                   help="explanation-quality metrics instead of maps: randomisation, road, pixel_flipping, "
                        "pointing_game, relevance_mass, max_sensitivity, avg_sensitivity, or the groups "
                        "faithfulness, localisation, robustness, all; scored on --n test images for every "
                        "--methods method and checkpoint (localisation needs a dataset with masks: shapes)")
    p.add_argument("--road-noise", type=float, default=0.01, help="--metrics road: imputation noise (default 0.01)")
    p.add_argument("--flip-steps", type=int, default=50, help="--metrics pixel_flipping: steps (default 50)")
    p.add_argument("--flip-baseline", type=float, default=0.0,
                   help="--metrics pixel_flipping: value of flipped pixels in [0, 1] (default 0, black)")
    p.add_argument("--radius", type=float, default=0.05,
                   help="--metrics max_/avg_sensitivity: ℓ∞ noise radius in (0, 1] (default 0.05)")
    p.add_argument("--samples", type=int, default=10,
                   help="--metrics max_/avg_sensitivity: draws per image (default 10)")
    p.add_argument("--metric-seed", type=int, default=0,
                   help="--metrics: seed of the noise and of the randomised layers (default 0)")
    p.add_argument("--batch-size", type=int, default=64, help="--metrics: images per forward pass (default 64)")
    p.add_argument("--out", help="output folder (created) for the maps (required without --metrics); with "
                                 "--metrics: F.csv (the table), F.json (the report) or F.npz (per-image values)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print the summary JSON on stdout")
    add_analysis_options(p)  # the maps and the curve are stored analyses; --background queues both
    p.set_defaults(func=run_saliency)


def parse_params(items: list[str], methods: list[str]) -> dict[str, dict]:
    """``["smoothgrad.n_samples=32", ...]`` -> ``{method: {name: typed value}}`` for ``methods``.

    Raises:
        InvalidParameterError: malformed item, unknown method/parameter, or an unparsable value.
    """
    params: dict[str, dict] = {m: {} for m in methods}
    for item in items:
        key, sep, text = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot:
            raise InvalidParameterError(f"--param must look like METHOD.NAME=VALUE, got {item!r}")
        specs = {s.name: s for s in method_params(method)} if method in METHODS else None
        if specs is None or name not in specs:
            raise InvalidParameterError(f"--param {item!r}: unknown method or parameter")
        params.setdefault(method, {})[name] = _parse_value(specs[name].default, text, item)
    return params


def _parse_value(default, text: str, item: str):
    """Parse ``text`` as the type of ``default`` (bool: true/false/1/0)."""
    if isinstance(default, bool):
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise InvalidParameterError(f"--param {item!r}: expected true or false")
        return lowered in ("true", "1", "yes")
    if isinstance(default, str):
        return text
    try:
        return float(text) if isinstance(default, float) else int(text)
    except ValueError:
        raise InvalidParameterError(f"--param {item!r}: expected a {type(default).__name__}") from None


def write_atomic(path: Path, payload: bytes) -> Path:
    """Write ``payload`` to ``path`` atomically (a regular file only; its folder is created)."""
    from engine.fileio import atomic_write_bytes, output_folder

    output_folder(path.parent)
    return atomic_write_bytes(path, payload)


def _stderr_progress(label: str):
    def update(done: int, total: int) -> None:
        print(f"\r{label}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    return update


def _parse_fractions(text: str | None) -> tuple[float, ...]:
    if not text:
        return DEFAULT_FRACTIONS
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InvalidParameterError(f"--fractions must be comma-separated numbers, got {text!r}") from None
    if not all(0.0 <= v <= 1.0 for v in values):  # also refuses nan
        raise InvalidParameterError(f"--fractions must lie in [0, 1], got {text!r}")
    return values


def _check_retrain_args(args: argparse.Namespace) -> None:
    """Clear errors for the retraining options (before any model is loaded)."""
    if not args.retrain:
        return
    if not args.curve:
        raise InvalidParameterError("--retrain needs --curve keep or --curve remove")
    if args.retrain_epochs < 1:
        raise InvalidParameterError(f"--retrain-epochs must be >= 1, got {args.retrain_epochs}")
    if args.retrain_n < 2:
        raise InvalidParameterError(f"--retrain-n must be >= 2 training images, got {args.retrain_n}")


def run_saliency(args: argparse.Namespace) -> int:
    """Load the checkpoints, attribute the chosen image, write PNGs/NPZ/JSON, optionally a curve;
    with ``--metrics`` score the explanations instead (:func:`run_metrics`)."""
    if args.metrics is not None:
        return run_metrics(args)
    if not args.out:
        raise InvalidParameterError("--out DIR is required: the folder the maps are written to")
    if not 0 <= args.alpha <= 1 or args.scale < 1:
        raise InvalidParameterError("--alpha must be in [0, 1] and --scale >= 1")
    _check_retrain_args(args)
    params = parse_params(args.param, args.methods)
    request = grid_request(args, params)
    curve = curve_request(args, params, request) if args.curve else None  # checked before any map is computed
    if args.background:
        return _queue(args, request, curve)
    device = resolve_device(args.device)
    loaded = [engine.load(ref.path, device=str(device), bn_branch=ref.branch) for ref in request.models]
    models = dict(zip(unique_names(request.models, file_safe=True), loaded))
    dataset_name = request.dataset
    dataset = edata.load_dataset(dataset_name, split="test")
    require_compatible(list(models.values()), dataset)
    side = max(dataset.spec.input_shape[1:]) if getattr(dataset, "spec", None) else 1
    check_int("--scale", args.scale, 1, max(1, MAX_PNG_SIDE // side), f"PNGs at most {MAX_PNG_SIDE} pixels wide")
    if args.curve:
        check_int("--n", args.n, 1, len(dataset), f"the {dataset_name} test split's size")
        _check_retrain_size(args, dataset_name)
    if not 0 <= args.index < len(dataset):
        raise InvalidParameterError(f"--index must be in [0, {len(dataset) - 1}] for {dataset_name}, got {args.index}")
    image, label = dataset[args.index]
    out = Path(args.out)
    result = run_analysis(request, progress=_stderr_progress("maps"), use_cache=not args.no_cache,
                          device=str(device), loaded=loaded)
    cells = result.value()
    summary = {
        "result": result.key, "cached": result.cached,
        "dataset": dataset_name, "index": args.index, "label": int(label), "device": str(device),
        "checkpoints": {n: str(c.path) for n, c in models.items()},
        "input": str(write_atomic(out / f"input_{args.index}.png", to_png_bytes(image_to_rgb(image), args.scale))),
        "maps": [_write_cell(cell, image, out, args) for cell in cells],
    }
    arrays = {f"{c.model}__{c.method}": c.attribution.maps[0] for c in cells if c.attribution is not None}
    summary["npz"] = str(_write_npz(out / f"maps_{args.index}.npz", arrays))
    if curve is not None:
        summary["curve"] = _run_curve(args, curve, loaded, out)
    write_atomic(out / "saliency.json", json.dumps(summary, indent=2, default=str).encode())
    if args.json:
        print_json(summary)
    else:
        for cell in summary["maps"]:
            print(f"{cell['model']} {cell['method']}: " + (cell["error"] or cell["overlay"]))
        for line in summary.get("curve", {}).get("curves", {}).values():
            print(_curve_line(line))
        print(f"summary: {out / 'saliency.json'}")
    return 0


def grid_request(args: argparse.Namespace, params: dict):
    """The :class:`~engine.analysis.SaliencyGridRequest` of the maps (``--curve`` is not part of it)."""
    from engine.analysis import ModelRef
    from engine.analysis.kinds.saliency import SaliencyGridRequest

    refs = tuple(ModelRef.of(path, args.bn_branch) for path in args.checkpoint)
    chosen = tuple((m, k, v) for m in args.methods for k, v in params.get(m, {}).items())
    return SaliencyGridRequest.make(models=refs, dataset=args.dataset, index=args.index, target=args.target,
                                    methods=tuple(args.methods), params=chosen, reduce=args.reduce,
                                    percentile=args.percentile)


def curve_request(args: argparse.Namespace, params: dict, grid):
    """The :class:`~engine.analysis.SaliencyCurvesRequest` of ``--curve`` on the maps' models and
    dataset (the ranking method: ``--curve-method``, else the first of ``--methods``)."""
    from engine.analysis.kinds.curves import RETRAIN_EPOCHS, RETRAIN_N, SaliencyCurvesRequest

    method = args.curve_method or args.methods[0]
    retrain = (args.retrain_epochs, args.retrain_n) if args.retrain else (RETRAIN_EPOCHS, RETRAIN_N)
    return SaliencyCurvesRequest(
        models=grid.models, dataset=grid.dataset, modes=(args.curve,), method=method,
        params=tuple(params.get(method, {}).items()), fractions=_parse_fractions(args.fractions),
        replacement=args.replacement, n=args.n, seed=args.seed, retrain=args.retrain,
        retrain_epochs=retrain[0], retrain_n=retrain[1])


def _queue(args, request, curve) -> int:
    """``--background``: queue the maps (and the curve) as jobs and print them (PNGs come from
    ``jobs result ID --out F.npz`` or from running the same command again, which then reads the
    stored results)."""
    body = queue_request(request, args)
    if curve is not None:
        body["curve"] = queue_request(curve, args)
    print_json(body)
    return 0


def _write_cell(cell, image, out: Path, args) -> dict:
    """Write one cell's heatmap and overlay PNGs; return its JSON entry."""
    entry = {"model": cell.model, "method": cell.method, "target": cell.target, "predicted": cell.predicted,
             "probability": round(cell.probability, 6), "error": cell.error}
    if cell.attribution is None:
        return entry
    stem = f"{cell.model}_{cell.method}_{args.index}"
    heat_png = to_png_bytes(colorize(cell.heatmap), args.scale)
    over_png = to_png_bytes(overlay(image, cell.heatmap, args.alpha), args.scale)
    entry.update(
        params=cell.attribution.params,
        delta=None if cell.attribution.delta is None else float(cell.attribution.delta[0]),
        heatmap=str(write_atomic(out / f"{stem}_heatmap.png", heat_png)),
        overlay=str(write_atomic(out / f"{stem}_overlay.png", over_png)),
    )
    return entry


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return write_atomic(path, buffer.getvalue())


def _check_retrain_size(args, dataset_name: str) -> None:
    """``--retrain-n`` fits the training split (named by its flag, before any map is computed)."""
    if not args.retrain:
        return
    size = len(edata.load_dataset(dataset_name, split="train"))
    if args.retrain_n > size:
        raise InvalidParameterError(f"--retrain-n must be <= {size} (the {dataset_name} training split)")


def _run_curve(args, request, loaded: list, out: Path) -> dict:
    """The stored keep/remove curve of every model (computed when not stored yet); writes
    ``curve_<mode>.json`` (``curve_<mode>_retrain.json`` with ``--retrain``)."""
    from engine.analysis.kinds.curves import report

    result = run_analysis(request, progress=_stderr_progress(f"{args.curve} curve"), use_cache=not args.no_cache,
                          device=args.device, loaded=loaded)
    for note in result.notes:
        warn(note)
    body = report(result)
    payload = body["curves"][args.curve]
    suffix = "_retrain" if args.retrain else ""
    path = write_atomic(out / f"curve_{args.curve}{suffix}.json", json.dumps(payload, indent=2).encode())
    entry = {"path": str(path), "curves": payload, "result": result.key, "cached": result.cached}
    if body["retrain"] is not None:
        entry["retrain"] = body["retrain"]
    return entry


def _curve_line(curve: dict) -> str:
    """``name mode [KAR|ROAR retrained]: f=acc ...`` for the terminal."""
    kind = (" (KAR, retrained)" if curve["mode"] == "keep" else " (ROAR, retrained)") if curve["retrained"] else ""
    points = " ".join(f"{f:g}={a:.3f}" for f, a in zip(curve["fractions"], curve["accuracy"]))
    return f"{curve['name']} {curve['mode']}{kind}: {points}"


# ------------------------------------------------------------------------------- --metrics
#: what ``--out`` may name with ``--metrics``
METRICS_OUTPUTS = (".csv", ".json", ".npz")


def run_metrics(args: argparse.Namespace) -> int:
    """``--metrics``: the stored explanation metrics (computed, or queued with ``--background``),
    printed as a table, as ``--json``, or written to ``--out F.csv|F.json|F.npz``."""
    from engine.cli import check_images, needs_checking, run_request

    if args.curve or args.retrain:
        raise InvalidParameterError("--metrics runs on its own; compute --curve in a separate command")
    if args.out and Path(args.out).suffix.lower() not in METRICS_OUTPUTS:
        raise InvalidParameterError(f"with --metrics, --out names a file ending in {', '.join(METRICS_OUTPUTS)}, "
                                    f"got {args.out!r}")
    request = metrics_request(args, parse_params(args.param, args.methods))
    if needs_checking(request, args):
        check_images(args, request.dataset)
    return run_request(request, args, "explanation metrics",
                       out_handler=None if args.json or args.out else print_metrics)


def metrics_request(args: argparse.Namespace, params: dict):
    """The :class:`~engine.analysis.kinds.saliency_metrics.SaliencyMetricsRequest` of ``--metrics``
    (no torch needed; every value checked by the request)."""
    from engine.analysis import ModelRef
    from engine.analysis.kinds.saliency_metrics import ROAD_FRACTIONS, SaliencyMetricsRequest, expand_metrics

    check_int("--n", args.n, 1)
    refs = tuple(ModelRef.of(path, args.bn_branch) for path in args.checkpoint)
    names = [name.strip() for name in args.metrics.split(",") if name.strip()]
    fractions = _parse_fractions(args.fractions) if args.fractions else ROAD_FRACTIONS
    return SaliencyMetricsRequest.make(
        models=refs, dataset=args.dataset, metrics=expand_metrics(names), methods=tuple(args.methods),
        params=tuple((m, k, v) for m in args.methods for k, v in params.get(m, {}).items()), reduce=args.reduce,
        n=args.n, seed=args.seed, fractions=fractions, road_noise=args.road_noise, flip_steps=args.flip_steps,
        flip_baseline=args.flip_baseline, radius=args.radius, samples=args.samples, metric_seed=args.metric_seed,
        batch_size=args.batch_size)


def print_metrics(result) -> int:
    """The terminal form: one line per method and score, each model's mean ± std."""
    from engine.analysis.kinds.saliency_metrics import rows
    from engine.cli import warn_result_notes

    warn_result_notes(result)
    table = rows(result)
    models = list(dict.fromkeys(row["model"] for row in table))
    print(f"{'method':<22} {'score':<26} {'better':<7} " + " ".join(f"{m[:22]:>22}" for m in models))
    for method, score in dict.fromkeys((row["method"], row["score"]) for row in table):
        found = {row["model"]: row for row in table if (row["method"], row["score"]) == (method, score)}
        first = next(iter(found.values()))
        cells = [_mean_std(found.get(m)) for m in models]
        print(f"{method:<22} {first['label']:<26} {first['better']:<7} " + " ".join(f"{c:>22}" for c in cells))
    for error in result.meta["errors"]:
        print(f"{error['model']} {error['method']}: {error['error']}")
    print(f"result {result.key} · {'stored earlier' if result.cached else 'computed'} in {result.seconds:.1f} s "
          "(--json prints every number; --out F.csv|.json|.npz writes them)")
    return 0


def _mean_std(row: dict | None) -> str:
    if row is None or row["mean"] is None:
        return "—"
    return f"{row['mean']:.3f} ± {row['std']:.3f}"
