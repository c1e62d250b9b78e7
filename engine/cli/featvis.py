"""``featvis``: top-k dataset images and a lucent visualisation of one unit or random direction."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import engine
from engine import data as edata
from engine import featvis
from engine.cli import check_int, print_json, require_compatible
from engine.device import resolve_device
from engine.data.registry import OPTIONS
from engine.errors import InvalidParameterError

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
    p.set_defaults(func=run_featvis)


def stderr_progress(label: str):
    """A ``progress(done, total)`` callback that redraws one line on stderr."""
    def update(done: int, total: int) -> None:
        print(f"\r{label}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    return update


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


def run_featvis(args: argparse.Namespace) -> int:
    """Compute the top-k images and/or the visualisation; write PNGs and featvis.json."""
    if args.top_k < 0 or args.steps < 0:
        raise InvalidParameterError("--top-k and --steps must be >= 0")
    check_int("--steps", args.steps, 0, featvis.MAX_VIS_STEPS)
    check_int("--n", args.n, 1, MAX_SEARCHED, "held-out images searched")
    check_int("--top-k", args.top_k, 0, args.n, "at most --n")
    check_int("--scale", args.scale, 1, featvis.MAX_GRID_SIDE, f"PNGs at most {featvis.MAX_GRID_SIDE} pixels wide")
    featvis.VisConfig(steps=args.steps, lr=args.lr, seed=args.seed).validate()
    device = resolve_device(args.device)
    loaded = engine.load(args.checkpoint, device=str(device))
    _, height, width = loaded.card.get("input_shape") or getattr(loaded.model, "input_shape", (0, 32, 32))
    if args.top_k:
        featvis.check_grid(args.top_k, int(height), int(width), scale=args.scale)  # before any compute
    position = parse_position(args.position)
    if args.unit is not None:
        target = featvis.unit_target(args.unit, position)
    else:
        dim = layer_channels(loaded.model, args.layer)
        target = featvis.direction_target(dim, seed=args.direction_seed, position=position)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": str(loaded.path), "sha256": loaded.sha256, "layer": args.layer,
        "target": {"kind": target.kind, "key": target.key, "label": target.label, "unit": target.channel,
                   "direction_seed": target.seed, "position": target.position},
    }
    if args.top_k:
        report["top_k"] = write_top_k(loaded, args, target, out)
    if args.steps:
        report["visualisation"] = write_visualisation(loaded, args, target, out)
    (out / "featvis.json").write_text(json.dumps(report, indent=2, default=str))
    if args.json:
        print_json(report)
    else:
        print(f"wrote {', '.join(sorted(p.name for p in out.iterdir()))} to {out}")
    return 0


def held_out_sample(name: str, n: int):
    """``(images, labels, dataset)``: ``n`` seeded test-split images of ``name`` (a generated set
    is generated at that size only) and the dataset they came from."""
    check_int("--n", n, 1, MAX_SEARCHED, "held-out images searched")
    options = {"n": n} if "n" in OPTIONS.get(name, ()) else {}
    dataset = edata.load_dataset(name, split="test", **options)
    images, labels = edata.take(dataset, min(n, len(dataset)), seed=0)
    return images, labels, dataset


def write_top_k(loaded, args, target, out: Path) -> dict:
    """Search ``args.n`` held-out images; write topk.png; return indices, scores and labels."""
    name = args.dataset or loaded.card.get("dataset")
    images, labels, dataset = held_out_sample(name, args.n)
    require_compatible([loaded], dataset, classes=False)  # labels are only shown: warn if they differ
    [best] = featvis.top_k_many(loaded.model, args.layer, images, [target], min(args.top_k, len(images)),
                                progress=stderr_progress("top-k"))
    picked = featvis.to_hwc(images[best.indices])
    (out / "topk.png").write_bytes(featvis.png_bytes(featvis.grid(picked, scale=args.scale)))
    class_names = loaded.card.get("class_names") or []
    chosen = labels[best.indices].tolist()
    return {
        "dataset": name, "split": "test", "n_searched": int(len(images)), "sample_seed": 0,
        "indices": best.indices.tolist(), "scores": best.scores.tolist(), "labels": chosen,
        "label_names": [class_names[i] if i < len(class_names) else str(i) for i in chosen],
        "png": "topk.png",
    }


def write_visualisation(loaded, args, target, out: Path) -> dict:
    """Render (or fetch from the cache) the lucent visualisation; write vis.png."""
    config = featvis.VisConfig(steps=args.steps, lr=args.lr, seed=args.seed)
    result = featvis.cached_visualise(loaded, args.layer, [target], config,
                                      progress=stderr_progress("visualisation"))
    (out / "vis.png").write_bytes(featvis.png_bytes(featvis.grid(result.images, scale=args.scale)))
    trajectory = result.trajectories[:, 0]
    return {
        "config": config.as_dict(), "png": "vis.png", "steps_done": result.steps_done,
        "objective_first": float(trajectory[0]), "objective_last": float(trajectory[-1]),
        "trajectory": trajectory.tolist(),
    }
