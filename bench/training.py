"""Benchmark: cost of a PGD-AT epoch with k steps vs a standard epoch on the same model and data.

Prints ratio / (k + 1); the target is <= 1.15 (k attack passes + 1 training pass per batch).
One epoch is noisy on a shared machine (single runs read 0.09, 1.05 and 2.69), so after a warm-up
of each method the two are timed alternately ``--repeats`` times; each repeat gives one paired
ratio (PGD epoch / the standard epoch next to it), and the median and spread (min-max, and the
half-range relative to the median) of those ratios are reported.
Usage: ``python bench/training.py [--k 5] [--n 1024] [--repeats 5] [--device auto] [--arch small_cnn]``
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.training import TrainConfig, train  # noqa: E402


def epoch_seconds(method: str, args) -> float:
    """Wall-clock seconds of one training epoch of ``method`` (a fresh run: same data and seed)."""
    cfg = TrainConfig(dataset="shapes", dataset_options={"n": args.n}, arch=args.arch, method=method,
                      steps=args.k, epochs=1, batch_size=args.batch_size, eval_size=0, device=args.device)
    result = train(cfg, run_dir=Path(tempfile.mkdtemp()) / method)
    return float(result.history[0]["seconds"])


def spread(values: list[float]) -> str:
    """``median [min-max] ±half-range%`` of ``values``."""
    mid = statistics.median(values)
    half = (max(values) - min(values)) / 2
    return f"{mid:.3f} [{min(values):.3f}-{max(values):.3f}] ±{100 * half / mid if mid else 0:.0f}%"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5, help="paired timings after the warm-up (>= 1)")
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    os.environ.setdefault("ROBUSTSCOPE_CHECKPOINTS", tempfile.mkdtemp())
    os.environ.setdefault("ROBUSTSCOPE_RUNS", tempfile.mkdtemp())
    for method in ("standard", "pgd"):
        epoch_seconds(method, args)  # warm-up (allocations, kernels, data generation caches)
    std, pgd = [], []
    for _ in range(args.repeats):  # alternate, so a slow spell of the machine hits both sides
        std.append(epoch_seconds("standard", args))
        pgd.append(epoch_seconds("pgd", args))
    ratios = [b / a for a, b in zip(std, pgd)]
    per_pass = [r / (args.k + 1) for r in ratios]
    print(f"{args.repeats} paired repeats, median [min-max] ±half-range:")
    print(f"  standard epoch  {spread(std)} s")
    print(f"  PGD-AT (k={args.k}) epoch  {spread(pgd)} s")
    print(f"  ratio           {spread(ratios)}")
    print(f"  ratio/(k+1)     {spread(per_pass)} (target <= 1.15)")


if __name__ == "__main__":
    main()
