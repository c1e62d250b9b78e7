"""Benchmark: CKA and feature top-k at ImageNet scale — time against the bare forward passes they
need, peak memory, and whether memory stays flat as the number of images grows.

Two seeded ``resnet50`` (random weights; the numbers are about cost, not accuracy) at 224 px on
seeded random images generated on the fly (nothing of size N is held). For every N in ``--sizes``
and every repeat, one fresh subprocess per measurement (so peak RSS is that run's own) runs:

- ``cka``: ``engine.similarity.compare_models`` over both models' default layers, exactly as
  ``engine.analysis.kinds.cka`` runs it (minibatch ``--batch-size``, forward pieces of
  ``FORWARD_BATCH``), then the bare forward passes it needs (both models over the same images, in
  the same pieces, no hooks);
- ``topk``: ``engine.featvis.stream_top_k`` (8 units/directions of ``--topk-layer``, k = 9) as
  ``engine.analysis.kinds.topk`` runs it, then the bare forward pass of the model.

Prints, per kind and N: seconds of the analysis and of the bare passes, their ratio (target
<= 1.2), peak RSS (target <= 2 GB), each as median [min-max] over the repeats, and the peak-RSS
change from the smallest to the largest N (flat = independent of N).

Usage::

    python bench/scale.py                      # resnet50, 224 px, N = 256 and 1024, 3 repeats
    python bench/scale.py --arch small_cnn --image-size 32 --sizes 16 64 --repeats 1   # smoke run
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GB = 1024 ** 3


class RandomImages:
    """``n`` seeded random images (C, H, W) in [0, 1], made when read (constant memory)."""

    def __init__(self, n: int, shape: tuple[int, int, int]):
        self.n, self.shape = n, shape

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        import torch

        g = torch.Generator().manual_seed(10_000 + int(i))
        return torch.rand(self.shape, generator=g), int(i) % 10


def build(arch: str, size: int, seed: int):
    import torch

    from engine.models import build_model

    torch.manual_seed(seed)
    classes = 1000 if arch == "resnet50" else 10
    return build_model(arch, classes, (3, size, size), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)).eval()


def bare_forward(models, data, piece: int) -> float:
    """Seconds of the forward passes alone: every model over every image, ``piece`` at a time."""
    import torch

    from engine.data import slice_batch

    start = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, len(data), piece):
            images, _ = slice_batch(data, lo, min(lo + piece, len(data)))
            for model in models:
                model(images)
    return time.perf_counter() - start


def child(args) -> dict:
    """One measurement in this process: the analysis, then its bare forward passes."""
    import torch

    from engine.analysis.kinds.cka import FORWARD_BATCH
    from engine.featvis import direction_target, stream_top_k, unit_target
    from engine.similarity import compare_models

    if args.threads:
        torch.set_num_threads(args.threads)
    shape = (3, args.image_size, args.image_size)
    models = [build(args.arch, args.image_size, seed) for seed in (0, 1)]
    data = RandomImages(args.n, shape)
    with torch.no_grad():                                          # warm-up: kernels, allocator pools
        for model in models:
            model(torch.rand((2, *shape)))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    if args.kind == "cka":
        comparison = compare_models(models[0], models[1], data, n=args.n, batch_size=args.batch_size,
                                    forward_batch=FORWARD_BATCH)
        layers = len(comparison.within_a.rows) + len(comparison.within_b.rows)
        seconds = time.perf_counter() - start
        bare = bare_forward(models, data, FORWARD_BATCH)
    else:
        targets = [unit_target(u) for u in range(4)] + [lambda dim, s=s: direction_target(dim, seed=s) for s in range(4)]
        stream_top_k(models[0], args.topk_layer, data, targets, 9, batch_size=args.topk_batch)
        layers = 1
        seconds = time.perf_counter() - start
        bare = bare_forward(models[:1], data, args.topk_batch)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"kind": args.kind, "n": args.n, "seconds": seconds, "bare_seconds": bare, "peak_rss": peak,
            "base_rss": base_rss, "layers": layers, "threads": torch.get_num_threads()}


def spread(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=["cka", "topk"], choices=["cka", "topk"])
    parser.add_argument("--batch-size", type=int, default=64,
                        help="CKA minibatch (images per HSIC term); peak memory grows with it: one model's "
                             "features of a whole minibatch are held (~6 MB per image for ResNet-50's default "
                             "layers at 224 px)")
    parser.add_argument("--topk-layer", default="net.layer3")
    parser.add_argument("--topk-batch", type=int, default=32, help="images per forward pass of the top-k search")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="cka", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return 0
    if args.arch == "small_cnn" and args.topk_layer == "net.layer3":
        args.topk_layer = "net.block2"
    print(f"bench/scale.py: {args.arch} x2 at {args.image_size} px, N = {args.sizes}, {args.repeats} repeat(s), "
          f"CKA batch {args.batch_size}, top-k layer {args.topk_layer}")
    runs: dict[tuple[str, int], list[dict]] = {}
    for repeat in range(args.repeats):
        for kind in args.kinds:
            for n in args.sizes:  # alternate sizes within a repeat so drift hits both alike
                cmd = [sys.executable, __file__, "--child", "--kind", kind, "--n", str(n), "--arch", args.arch,
                       "--image-size", str(args.image_size), "--batch-size", str(args.batch_size),
                       "--topk-layer", args.topk_layer, "--topk-batch", str(args.topk_batch),
                       "--threads", str(args.threads)]
                out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    return 1
                record = json.loads(out.stdout.strip().splitlines()[-1])
                runs.setdefault((kind, n), []).append(record)
                print(f"  repeat {repeat + 1} {kind:<4} N={n:<5} {record['seconds']:8.1f} s  bare "
                      f"{record['bare_seconds']:8.1f} s  ratio {record['seconds'] / record['bare_seconds']:.2f}  "
                      f"peak {record['peak_rss'] / GB:.2f} GB", flush=True)
    print("\nsummary (median [min-max] over repeats)")
    print(f"{'kind':<5} {'N':>5}  {'analysis s':>22}  {'bare forward s':>22}  {'ratio (<=1.2)':>20}  {'peak RSS GB (<=2)':>20}")
    for (kind, n), records in sorted(runs.items()):
        ratios = [r["seconds"] / r["bare_seconds"] for r in records]
        print(f"{kind:<5} {n:>5}  {spread([r['seconds'] for r in records], '{:.1f}'):>22}  "
              f"{spread([r['bare_seconds'] for r in records], '{:.1f}'):>22}  {spread(ratios, '{:.2f}'):>20}  "
              f"{spread([r['peak_rss'] / GB for r in records], '{:.2f}'):>20}")
    for kind in args.kinds:
        small, large = min(args.sizes), max(args.sizes)
        if (kind, small) in runs and (kind, large) in runs and small != large:
            lo = statistics.median(r["peak_rss"] for r in runs[(kind, small)]) / 2**20
            hi = statistics.median(r["peak_rss"] for r in runs[(kind, large)]) / 2**20
            print(f"{kind}: peak RSS N={small} -> N={large}: {lo:.0f} MB -> {hi:.0f} MB "
                  f"({hi - lo:+.0f} MB; flat means independent of N)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
