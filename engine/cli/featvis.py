"""``featvis``: top-k dataset images and a lucent visualisation of one unit or random direction."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli import add_analysis_options, check_int, print_json, require_compatible, stderr_progress, warn
from engine.errors import InvalidParameterError
from engine.fileio import atomic_write_bytes, atomic_write_text, output_folder

#: most held-out images one top-k search reads (a generated set is generated at this size)
MAX_SEARCHED = 50_000


def register(sub) -> None:
    """Add the ``featvis`` command."""
    p = sub.add_parser(
        "featvis",
        help="top-k images and a feature visualisation of a unit or a random direction",
        description="Szegedy et al. 2013: compare a unit (natural basis e_i) with a random direction v.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint path (stem, .safetensors or .json)")
    p.add_argument("--layer", required=True, help="layer name (see `python -m engine models --layers`)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--unit", type=int, help="unit (channel) index i")
    which.add_argument("--direction-seed", type=int, help="seed of a random unit-norm direction v")
    p.add_argument("--position", help="Y,X: a single neuron (or the direction at one location)")
    p.add_argument("--dataset", help="dataset for the top-k images (default: the card's dataset)")
    p.add_argument("--top-k", type=int, default=9, help="number of dataset images (0: skip)")
    p.add_argument("--n", type=int, default=1000, help="held-out images searched for the top-k")
    p.add_argument("--steps", type=int, default=256, help="optimisation steps (0: skip)")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0, help="visualisation seed")
    p.add_argument("--scale", type=int, default=4, help="PNG upscaling factor")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output folder for PNGs and featvis.json")
    p.add_argument("--json", action="store_true", help="also print the JSON report on stdout")
    add_analysis_options(p)  # the top-k search is a stored analysis; --background queues only it
    p.set_defaults(func=run_featvis)


def parse_position(text: str | None) -> tuple[int, int] | None:
    """``"Y,X"`` -> (y, x); ``None`` stays ``None``."""
    if text is None:
        return None
    try:
        y, x = (int(part) for part in text.split(","))
    except ValueError:
        raise InvalidParameterError(f"--position must look like Y,X (two integers), got {text!r}") from None
    return (y, x)


def layer_channels(model, layer: str) -> int:
    """The channel count of ``layer`` (dimension 1 of its output)."""
    from engine.models import list_layers

    for info in list_layers(model):
        if info.name == layer and info.output_shape:
            return int(info.output_shape[0])
    raise InvalidParameterError(f"unknown or non-tensor layer {layer!r}; see `python -m engine models --layers`")


def topk_request(args: argparse.Namespace, dataset: str, position):
    """The :class:`~engine.analysis.TopKRequest` of ``featvis`` (the same sample as before: ``--n``
    test images drawn with seed 0)."""
    from engine.analysis import ModelRef, TopKRequest

    target = ("unit", args.unit) if args.unit is not None else ("direction", args.direction_seed)
    return TopKRequest(model=ModelRef.of(args.checkpoint), layer=args.layer, targets=(target,), dataset=dataset,
                       position=position, n=args.n, sample_seed=0, k=args.top_k).validate()


def run_featvis(args: argparse.Namespace) -> int:
    """Compute the top-k images and/or the visualisation; write PNGs and featvis.json."""
    import engine
    from engine import featvis
    from engine.device import resolve_device

    if args.background:
        return _queue_top_k(args)
    if args.top_k < 0 or args.steps < 0:
        raise InvalidParameterError("--top-k and --steps must be >= 0")
    check_int("--steps", args.steps, 0, featvis.MAX_VIS_STEPS)
    check_int("--n", args.n, 1, MAX_SEARCHED, "held-out images searched")
    check_int("--top-k", args.top_k, 0, args.n, "at most --n")
    check_int("--scale", args.scale, 1, featvis.MAX_GRID_SIDE, f"PNGs at most {featvis.MAX_GRID_SIDE} pixels wide")
    featvis.VisConfig(steps=args.steps, lr=args.lr, seed=args.seed).validate()
    device = resolve_device(args.device)
    loaded = engine.load(args.checkpoint, device=str(device))
    _, height, width = loaded.card.input_shape
    if args.top_k:
        featvis.check_grid(args.top_k, int(height), int(width), scale=args.scale)  # before any compute
    position = parse_position(args.position)
    if args.unit is not None:
        target = featvis.unit_target(args.unit, position)
    else:
        dim = layer_channels(loaded.model, args.layer)
        target = featvis.direction_target(dim, seed=args.direction_seed, position=position)
    out = output_folder(Path(args.out))
    report = {
        "checkpoint": str(loaded.path), "sha256": loaded.sha256, "layer": args.layer,
        "target": {"kind": target.kind, "key": target.key, "label": target.label, "unit": target.channel,
                   "direction_seed": target.seed, "position": target.position},
    }
    if args.top_k:
        report["top_k"] = write_top_k(loaded, args, target, out)
    if args.steps:
        report["visualisation"] = write_visualisation(loaded, args, target, out)
    atomic_write_text(out / "featvis.json", json.dumps(report, indent=2, default=str))
    if args.json:
        print_json(report)
    else:
        print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return 0


def _queue_top_k(args: argparse.Namespace) -> int:
    """``--background``: queue the top-k search (the lucent visualisation runs in the foreground only)."""
    from engine.analysis import submit_analysis
    from engine.analysis.base import card_json

    check_int("--n", args.n, 1, MAX_SEARCHED, "held-out images searched")
    check_int("--top-k", args.top_k, 1, args.n, "at most --n; --background queues the top-k search")
    dataset = args.dataset or card_json(args.checkpoint).get("dataset")
    job = submit_analysis(topk_request(args, dataset, parse_position(args.position)), use_cache=not args.no_cache,
                          device=args.device, submitter="cli")
    if args.steps:
        warn("--background queues the top-k search only; run the lucent visualisation in the foreground "
             "(it is cached by checkpoint hash)")
    print_json({"job": job.id, "status": job.status, "kind": job.kind, "result": job.result_key})
    return 0


def write_top_k(loaded, args, target, out: Path) -> dict:
    """Search ``args.n`` held-out images (a stored result answers a repeated search); write
    topk.png; return indices, scores and labels."""
    from engine import featvis
    from engine.analysis import run_analysis
    from engine.analysis.topk import picked_images, sample

    check_int("--n", args.n, 1, MAX_SEARCHED, "held-out images searched")
    name = args.dataset or loaded.card.dataset
    request = topk_request(args, name, target.position)
    dataset, _ = sample(request)
    require_compatible([loaded], dataset, classes=False)  # labels are only shown: warn if they differ
    result = run_analysis(request, progress=stderr_progress("top-k"), use_cache=not args.no_cache,
                          device=args.device, loaded=[loaded])
    picked = featvis.to_hwc(picked_images(result)[0])
    atomic_write_bytes(out / "topk.png", featvis.png_bytes(featvis.grid(picked, scale=args.scale)))
    return {
        "dataset": name, "split": "test", "n_searched": int(result.meta["n_searched"]), "sample_seed": 0,
        "indices": result.arrays["positions"][0].tolist(), "scores": result.arrays["scores"][0].astype(float).tolist(),
        "labels": result.arrays["labels"][0].tolist(), "label_names": list(result.meta["class_names"][0]),
        "png": "topk.png", "result": result.key, "cached": result.cached,
    }


def write_visualisation(loaded, args, target, out: Path) -> dict:
    """Render (or fetch from the cache) the lucent visualisation; write vis.png."""
    from engine import featvis

    config = featvis.VisConfig(steps=args.steps, lr=args.lr, seed=args.seed)
    result = featvis.cached_visualise(loaded, args.layer, [target], config,
                                      progress=stderr_progress("visualisation"))
    atomic_write_bytes(out / "vis.png", featvis.png_bytes(featvis.grid(result.images, scale=args.scale)))
    trajectory = result.trajectories[:, 0]
    return {
        "config": config.as_dict(), "png": "vis.png", "steps_done": result.steps_done,
        "objective_first": float(trajectory[0]), "objective_last": float(trajectory[-1]),
        "trajectory": trajectory.tolist(),
    }
