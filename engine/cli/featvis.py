"""``featvis``: top-k dataset images and a lucent visualisation of one unit or random direction.

Both parts are stored analyses (``featvis_topk`` and ``featvis``, ``engine.analysis``): a repeated
command answers them from the result store (``"cached": true`` in each part of the JSON),
``--no-cache`` computes them again and ``--background`` queues both as jobs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli import add_analysis_options, check_int, print_json, queue_request, require_compatible, run_request
from engine.errors import InvalidParameterError
from engine.fileio import atomic_write_bytes, atomic_write_text, output_folder

#: most held-out images one top-k search reads (a generated set is generated at this size)
MAX_SEARCHED = 50_000


def register(sub) -> None:
    """Add the ``featvis`` command."""
    p = sub.add_parser(
        "featvis",
        help="top-k images and a feature visualisation of a unit or a random direction",
        description="Szegedy et al. 2013: compare a unit (natural basis e_i) with a random direction v. The top-k "
                    "search and the lucent visualisation are stored results: the same command again reads them "
                    "back; --background queues both.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint path (stem, .safetensors or .json)")
    p.add_argument("--layer", required=True, help="layer name (see `python -m engine models --layers CHECKPOINT`)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--unit", type=int, help="unit (channel) index i")
    which.add_argument("--direction-seed", type=int, help="seed of a random unit-norm direction v")
    p.add_argument("--position", help="Y,X: a single neuron (or the direction at one location)")
    p.add_argument("--dataset", help="dataset for the top-k images (default: the card's dataset)")
    p.add_argument("--top-k", type=int, default=9, help="number of dataset images (0: skip)")
    p.add_argument("--n", type=int, default=1000, help="held-out images searched for the top-k")
    p.add_argument("--steps", type=int, default=256, help="optimisation steps (0: skip)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate of the visualisation")
    p.add_argument("--seed", type=int, default=0, help="visualisation seed")
    p.add_argument("--scale", type=int, default=4, help="PNG upscaling factor")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output folder for PNGs and featvis.json")
    p.add_argument("--json", action="store_true", help="also print the JSON report on stdout")
    add_analysis_options(p)  # the top-k search and the visualisation are stored analyses; --background queues both
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
    raise InvalidParameterError(f"unknown or non-tensor layer {layer!r}; see `python -m engine models --layers CHECKPOINT`")


def target_spec(args: argparse.Namespace) -> tuple[str, int]:
    """The command's target as a request names it: ``("unit", i)`` or ``("direction", seed)``."""
    return ("unit", args.unit) if args.unit is not None else ("direction", args.direction_seed)


def topk_request(args: argparse.Namespace, dataset: str, position):
    """The :class:`~engine.analysis.TopKRequest` of ``featvis`` (the same sample as before: ``--n``
    test images drawn with seed 0)."""
    from engine.analysis import ModelRef
    from engine.analysis.kinds.topk import TopKRequest

    return TopKRequest.make(model=ModelRef.of(args.checkpoint), layer=args.layer, targets=(target_spec(args),),
                            dataset=dataset, position=position, n=args.n, sample_seed=0, k=args.top_k)


def vis_request(args: argparse.Namespace, position):
    """The :class:`~engine.analysis.FeatVisRequest` of ``featvis`` (``--steps``, ``--lr``, ``--seed``;
    lucent's other settings at their defaults, the model's input size)."""
    from engine.analysis import ModelRef
    from engine.analysis.kinds.featvis import FeatVisRequest

    return FeatVisRequest(model=ModelRef.of(args.checkpoint), layer=args.layer, targets=(target_spec(args),),
                          position=position, steps=args.steps, lr=args.lr, seed=args.seed)


def run_featvis(args: argparse.Namespace) -> int:
    """Compute (or read back) the top-k images and/or the visualisation; write PNGs and
    featvis.json. ``--background`` queues them instead (nothing is loaded or computed here)."""
    if args.top_k < 0 or args.steps < 0:
        raise InvalidParameterError("--top-k and --steps must be >= 0")
    if args.background:
        return queue_parts(args)
    import engine
    from engine import featvis
    from engine.device import resolve_device

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


def queue_parts(args: argparse.Namespace) -> int:
    """``--background``: queue the top-k search (``--top-k`` > 0) and the visualisation (``--steps``
    > 0), one job each; print ``{"jobs": [ID, ...], "top_k": {job, status, kind, result},
    "visualisation": {...}}``."""
    check_int("--n", args.n, 1, MAX_SEARCHED, "held-out images searched")
    check_int("--top-k", args.top_k, 0, args.n, "at most --n")
    if not (args.top_k or args.steps):
        raise InvalidParameterError("--top-k 0 and --steps 0 leave nothing to queue")
    position = parse_position(args.position)
    requests = {}
    if args.top_k:
        requests["top_k"] = topk_request(args, args.dataset, position)
    if args.steps:
        requests["visualisation"] = vis_request(args, position)
    queued = {part: queue_request(request, args) for part, request in requests.items()}
    print_json({"jobs": [found["job"] for found in queued.values()], **queued})
    return 0


def stored(request, args: argparse.Namespace, label: str, loaded):
    """``request``'s stored result, else computed here and stored (``--no-cache``: computed again);
    its notes go to stderr."""
    return run_request(request, args, label, out_handler=lambda result: result, loaded=[loaded])


def write_top_k(loaded, args, target, out: Path) -> dict:
    """Search ``args.n`` held-out images (a stored result answers a repeated search); write
    topk.png; return indices, scores and labels."""
    from engine import featvis
    from engine.analysis.kinds.topk import picked_images, sample

    check_int("--n", args.n, 1, MAX_SEARCHED, "held-out images searched")
    name = args.dataset or loaded.card.dataset
    request = topk_request(args, name, target.position)
    dataset, _ = sample(request)
    require_compatible([loaded], dataset, classes=False)  # labels are only shown: warn if they differ
    result = stored(request, args, "top-k", loaded)
    picked = featvis.to_hwc(picked_images(result)[0])
    atomic_write_bytes(out / "topk.png", featvis.png_bytes(featvis.grid(picked, scale=args.scale)))
    return {
        "dataset": name, "split": "test", "n_searched": int(result.meta["n_searched"]), "sample_seed": 0,
        "indices": result.arrays["positions"][0].tolist(), "scores": result.arrays["scores"][0].astype(float).tolist(),
        "labels": result.arrays["labels"][0].tolist(), "label_names": list(result.meta["class_names"][0]),
        "png": "topk.png", "result": result.key, "cached": result.cached,
    }


def write_visualisation(loaded, args, target, out: Path) -> dict:
    """Render the lucent visualisation (a stored result answers a repeated one); write vis.png."""
    from engine import featvis

    result = stored(vis_request(args, target.position), args, "visualisation", loaded)
    vis = result.value()
    atomic_write_bytes(out / "vis.png", featvis.png_bytes(featvis.grid(vis.images, scale=args.scale)))
    trajectory = vis.trajectories[:, 0]
    return {
        "config": result.meta["config"], "png": "vis.png", "steps_done": vis.steps_done,
        "objective_first": float(trajectory[0]), "objective_last": float(trajectory[-1]),
        "trajectory": trajectory.tolist(), "result": result.key, "cached": result.cached,
    }
