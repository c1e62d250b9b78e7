"""Benchmark: cost of a PGD-AT epoch with k steps vs a standard epoch on the same model and data.

Prints ratio / (k + 1); the target is <= 1.15 (k attack passes + 1 training pass per batch).
Usage: ``python bench/training.py [--k 5] [--n 1024] [--device auto] [--arch small_cnn]``
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.training import TrainConfig, train  # noqa: E402


def epoch_seconds(method: str, args) -> float:
    cfg = TrainConfig(dataset="shapes", dataset_options={"n": args.n}, arch=args.arch, method=method,
                      steps=args.k, epochs=1, batch_size=args.batch_size, eval_size=0, device=args.device)
    train(cfg, run_dir=Path(tempfile.mkdtemp()) / method)  # warm-up (allocations, kernels)
    result = train(cfg, run_dir=Path(tempfile.mkdtemp()) / method)
    return result.history[0]["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--n", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--arch", default="small_cnn")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    os.environ.setdefault("ROBUSTSCOPE_CHECKPOINTS", tempfile.mkdtemp())
    os.environ.setdefault("ROBUSTSCOPE_RUNS", tempfile.mkdtemp())
    std = epoch_seconds("standard", args)
    pgd = epoch_seconds("pgd", args)
    ratio = pgd / std
    print(f"standard epoch {std:.3f} s, PGD-AT (k={args.k}) epoch {pgd:.3f} s, ratio {ratio:.2f}, "
          f"ratio/(k+1) {ratio / (args.k + 1):.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
