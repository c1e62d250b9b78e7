"""``tradeoff``: the ε-vs-interpretability view (Kim & Seo 2019) from the command line.

    python -m engine tradeoff --checkpoint checkpoints/fashion_standard \\
        --checkpoint checkpoints/fashion_pgd_linf_0p1 --dataset fashion-mnist --n 500 --json

For each checkpoint (its card must record a training ε; standard training counts as ε = 0): clean
accuracy and the share of gradient-attribution mass inside the object mask, on ``--n`` held-out
images (exact masks on ``shapes``, the non-zero pixels on MNIST and Fashion-MNIST).
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import engine
from engine.attribution import ALIGNMENT_DATASETS, METHODS, epsilon_tradeoff, evaluation_set
from engine.cli import MAX_BATCH, check_int, print_json, require_compatible, stderr_progress
from engine.data import get_spec
from engine.device import resolve_device
from engine.errors import InvalidParameterError

#: most held-out images one measurement uses (every checkpoint attributes each of them)
MAX_ALIGNMENT_IMAGES = 10_000


def register(sub) -> None:
    """Add the ``tradeoff`` command."""
    p = sub.add_parser("tradeoff", help="alignment of attributions and clean accuracy vs training ε")
    p.add_argument("--checkpoint", action="append", required=True,
                   help="checkpoint path (repeat for each ε)")
    p.add_argument("--dataset", choices=ALIGNMENT_DATASETS, help="default: the first card's dataset")
    p.add_argument("--n", type=int, default=256, help="held-out images (default 256)")
    p.add_argument("--method", default="saliency", choices=list(METHODS), help="attribution method")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_tradeoff)


def run_tradeoff(args: argparse.Namespace) -> int:
    """Measure every checkpoint and print one row per ε (sorted)."""
    device = resolve_device(args.device)
    loaded = [engine.load(path, device=str(device)) for path in args.checkpoint]
    dataset = args.dataset or loaded[0].card.dataset
    others = [str(c.path) for c in loaded if c.card.dataset != dataset]
    if others:
        raise InvalidParameterError(f"all checkpoints must be trained on `{dataset}`; not: {', '.join(others)}")
    check_int("--n", args.n, 1, MAX_ALIGNMENT_IMAGES, "held-out images")
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    size = tuple(loaded[0].card.input_shape)
    data = evaluation_set(dataset, args.n, image_size=size[-1])
    spec = get_spec(dataset)
    spec = replace(spec, input_shape=tuple(data.images.shape[1:]))  # shapes is generated at the model's size
    require_compatible(loaded, spec)
    points = epsilon_tradeoff(loaded, data.images.to(device), data.labels.to(device), data.masks,
                              method=args.method, batch_size=args.batch_size,
                              progress=stderr_progress("checkpoints"))
    if args.json:
        print_json({"dataset": dataset, "method": args.method, "n": args.n,
                    "points": [p.to_dict() for p in points]})
        return 0
    print(f"{dataset}, {args.method}, {args.n} images (chance alignment {points[0].chance:.3f})")
    for p in points:
        print(f"  {p.name}: ε={p.epsilon:g} {p.norm}  clean {p.clean_accuracy:.4f}  "
              f"alignment {p.alignment:.3f} ± {p.alignment_std:.3f}")
    return 0
