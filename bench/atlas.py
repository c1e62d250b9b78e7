"""Benchmark: the unit atlas' two passes against their baselines, measured in the same run.

1. Rendering: seconds per unit when every unit of a layer is optimised in batches
   (``engine.featvis.atlas.render_units``, ``--render-batch`` units per optimisation) vs
   one optimisation per unit (the same function, one unit at a time) for ``--single`` of those
   units; same steps, seed and parameterisation. Target: batched ≥ 5× faster per unit.
2. Scan: the atlas' streamed scan (``scan_layers``: top-k with the spatial argmax, statistics,
   directions) over N images vs a bare forward pass of the same model over the same images in the
   same batches. Target: ≤ 1.2×.

Each figure is the median [min–max] of ``--repeats`` runs. On a GPU (``--device cuda``) the
default is a ``torchvision:resnet50``'s ``layer4`` (2,048 units; issue 24 asks ≤ 10 minutes for
its whole atlas) — ``--atlas`` times the whole atlas analysis once.

Usage: ROBUSTSCOPE_DATA=../shared/data python bench/atlas.py [--checkpoint checkpoints/mnist_standard]
       [--layer net.block2] [--steps 64] [--render-batch 64] [--single 8] [--n 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spread(values: list[float], unit: str = " s") -> str:
    return f"{statistics.median(values):.3f}{unit} [{min(values):.3f}–{max(values):.3f}]"


def timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def load_model(args):
    """The benchmark's model: a shipped checkpoint, or a random-weight torchvision model."""
    if args.checkpoint.startswith("torchvision:"):
        from engine.models import build_model

        torch.manual_seed(0)
        return build_model(args.checkpoint, 1000, (3, 224, 224), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
                           ).eval().to(args.device)
    from engine.checkpoints import load

    return load(args.checkpoint, device=args.device).model


def images_for(model, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images of the model's input shape and random labels (the scan's cost does not
    depend on what the images show)."""
    generator = torch.Generator().manual_seed(0)
    shape = tuple(model.input_shape)
    return torch.rand(n, *shape, generator=generator), torch.randint(0, 10, (n,), generator=generator)


def bare_forward(model, images: torch.Tensor, batch: int, device: str) -> None:
    with torch.no_grad():
        for start in range(0, len(images), batch):
            model(images[start:start + batch].to(device))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/mnist_standard")
    parser.add_argument("--layer", default="net.block2")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--render-batch", type=int, default=64)
    parser.add_argument("--single", type=int, default=8, help="units rendered one at a time (the baseline)")
    parser.add_argument("--n", type=int, default=2000, help="images of the scan")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from engine.featvis.atlas import layer_units, render_units, scan_layers
    from engine.featvis.config import VisConfig
    from engine.featvis.targets import random_direction

    model = load_model(args)
    units, grid = layer_units(model, args.layer, tuple(model.input_shape))
    config = VisConfig(steps=args.steps, seed=0)
    print(f"model {args.checkpoint} · layer {args.layer}: {units} units on a {grid[0]}×{grid[1]} grid · "
          f"{args.steps} steps · device {args.device} · torch {torch.__version__} · threads {torch.get_num_threads()}")
    render_units(model, args.layer, [0], config=VisConfig(steps=2))   # warm-up (lucent, kernels)

    def batched() -> None:
        for start in range(0, units, args.render_batch):
            render_units(model, args.layer, range(start, min(start + args.render_batch, units)), config=config)

    def one_at_a_time() -> None:
        for unit in range(min(args.single, units)):
            render_units(model, args.layer, [unit], config=config)

    per_batched = [timed(batched) / units for _ in range(args.repeats)]
    per_single = [timed(one_at_a_time) / min(args.single, units) for _ in range(args.repeats)]
    speedups = [s / b for s, b in zip(per_single, per_batched)]
    print(f"render, per unit: batched ({args.render_batch} per optimisation, all {units} units) "
          f"{spread(per_batched)}; one at a time ({min(args.single, units)} units) {spread(per_single)}; "
          f"speed-up {spread(speedups, '×')} (target ≥ 5×: {'PASS' if statistics.median(speedups) >= 5 else 'FAIL'})")

    images, labels = images_for(model, args.n)
    vectors = [np.stack([random_direction(units, s) for s in range(8)])]
    bare = [timed(lambda: bare_forward(model, images, args.batch_size, args.device)) for _ in range(args.repeats)]
    scan = [timed(lambda: scan_layers([(model, args.layer)], (images, labels), 9, 10, vectors, args.batch_size))
            for _ in range(args.repeats)]
    ratios = [s / b for s, b in zip(scan, bare)]
    print(f"scan of {args.n} images (top-9, statistics, 8 directions): {spread(scan)} vs bare forward {spread(bare)}: "
          f"{spread(ratios, '×')} (target ≤ 1.2×: {'PASS' if statistics.median(ratios) <= 1.2 else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
