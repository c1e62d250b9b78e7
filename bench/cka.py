"""Benchmark: engine.similarity minibatch CKA vs torch-cka 0.21 (separate virtualenv).

Two seeded CIFAR-style ResNets (engine.models "cifar_resnet", depth 20), >= 16 hooked layers each,
N images (default 2,000) of seeded random 3x32x32 data, batch 200. Prints:
- speed ratio torch-cka / ours on the same models, layers and data (A×B map);
- peak RSS of our run at N/4 and N (separate processes: flat means memory independent of N);
- max |error| of ours and of torch-cka vs a float64 reference of SCIENCE.md's unbiased formula;
- the cost split (forward passes vs one Gram matrix per layer) and the bound every implementation
  faces: both sides run the same forward passes, so no CKA can beat torch-cka's time / forward time.

Usage: python bench/cka.py [--n 2000] [--batch-size 200] [--skip-peer]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VENV = ROOT / "bench" / ".venv-peers"


def build(seed: int):
    from engine.models import build_model

    torch.manual_seed(seed)
    return build_model("cifar_resnet", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3, depth=20).eval()


def layers(model) -> list[str]:
    from engine.models import list_layers

    names = [i.name for i in list_layers(model)]
    return ["net.stem"] + [n for n in names if n.startswith("net.layer") and n.count(".") == 2] + \
        [n for n in names if n.endswith(".relu1")]


class Data(torch.utils.data.Dataset):
    """Seeded random images generated on the fly (nothing of size N is held in memory)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, 32, 32, generator=g), 0


def ours(n: int, bs: int):
    from engine.similarity import compare_models

    a, b = build(0), build(1)
    la, lb = layers(a), layers(b)
    t = time.perf_counter()
    comp = compare_models(a, b, Data(n), la, lb, batch_size=bs)
    return time.perf_counter() - t, comp.across.matrix, la


def cost_split(n: int, bs: int) -> dict:
    """Seconds spent on the forward passes alone and on forward + one Gram matrix per layer.

    torch-cka recomputes model B's Gram matrix for every layer of A (L_A·L_B + L_A Grams per
    batch); we compute each once (L_A + L_B). The forward passes are the floor for both.
    """
    from engine.similarity.features import forward_features
    from engine.similarity.kernels import gram_linear

    a, b = build(0), build(1)
    la, lb = layers(a), layers(b)
    data = Data(n)
    batches = [torch.stack([data[i][0] for i in range(s, min(s + bs, n))]) for s in range(0, n, bs)]
    t = time.perf_counter()
    for x in batches:
        forward_features([(a, la), (b, lb)], x)
    forward = time.perf_counter() - t
    t = time.perf_counter()
    for x in batches:
        [gram_linear(f) for f in forward_features([(a, la), (b, lb)], x)]
    return {"forward": forward, "gram": max(time.perf_counter() - t - forward, 0.0)}


def reference(n: int, bs: int):
    """float64 features, uncentred Grams, SCIENCE.md's unbiased formula per pair, averaged."""
    from engine.similarity.features import forward_features

    a, b = build(0), build(1)
    la, lb = layers(a), layers(b)
    data = Data(n)
    hk = torch.zeros(len(la), dtype=torch.float64)
    hl = torch.zeros(len(lb), dtype=torch.float64)
    hkl = torch.zeros(len(la), len(lb), dtype=torch.float64)
    batches = 0

    def hsic(k, l):
        m = k.shape[0]
        one = torch.ones(m, dtype=torch.float64)
        return (torch.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((m - 1) * (m - 2))
                - 2 * (one @ k @ l @ one) / (m - 2)) / (m * (m - 3))

    for s in range(0, n, bs):
        x = torch.stack([data[i][0] for i in range(s, min(s + bs, n))])
        fa = [f.double() for f in forward_features([(a, la)], x)]
        fb = [f.double() for f in forward_features([(b, lb)], x)]
        ka = [(f @ f.T).fill_diagonal_(0) for f in fa]
        kb = [(f @ f.T).fill_diagonal_(0) for f in fb]
        hk += torch.stack([hsic(k, k) for k in ka])
        hl += torch.stack([hsic(k, k) for k in kb])
        hkl += torch.stack([torch.stack([hsic(k, l) for l in kb]) for k in ka])
        batches += 1
    return (hkl / torch.sqrt(hk[:, None] * hl[None, :])).numpy()


PEER = r'''
import json, sys, time, torch
sys.path.insert(0, sys.argv[1])
from torch_cka import CKA
import bench.cka as B
n, bs = int(sys.argv[2]), int(sys.argv[3])
a, b = B.build(0), B.build(1)
la, lb = B.layers(a), B.layers(b)
loader = torch.utils.data.DataLoader(B.Data(n), batch_size=bs)
cka = CKA(a, b, model1_layers=la, model2_layers=lb, device="cpu")
t = time.perf_counter()
cka.compare(loader)
sec = time.perf_counter() - t
print(json.dumps({"seconds": sec, "matrix": cka.hsic_matrix.tolist()}))
'''


def peer(n: int, bs: int):
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "--no-deps", "torch-cka==0.21"], check=True)
    out = subprocess.run([str(VENV / "bin" / "python"), "-c", PEER, str(ROOT), str(n), str(bs)],
                         check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def peak_rss_mb(n: int, bs: int) -> float:
    code = (f"import sys,resource; sys.path.insert(0,{str(ROOT)!r}); import bench.cka as B; "
            f"B.ours({n},{bs}); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024)")
    return float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                text=True, cwd=ROOT).stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--skip-peer", action="store_true")
    args = p.parse_args()
    n, bs = args.n, args.batch_size
    sec, ours_m, la = ours(n, bs)
    print(f"layers per model: {len(la)}; N={n}, batch={bs}; threads={torch.get_num_threads()}")
    print(f"ours: {sec:.2f} s (A×A, B×B and A×B together)")
    ref = reference(n, bs)
    import numpy as np

    print(f"ours max |err| vs float64 reference: {np.abs(ours_m - ref).max():.2e} (target <= 1e-4)")
    if not args.skip_peer:
        res = peer(n, bs)
        pm = np.array(res["matrix"], dtype=float)
        err = np.nanmax(np.abs(pm - ref)) if np.isfinite(pm).any() else float("nan")
        print(f"torch-cka 0.21: {res['seconds']:.2f} s (A×B only); NaN entries {int(np.isnan(pm).sum())}; "
              f"max |err| vs reference {err:.2e}")
        print(f"speed ratio torch-cka / ours: {res['seconds'] / sec:.1f}x (target >= 20x)")
    split = cost_split(n, bs)
    print(f"cost split: forward passes {split['forward']:.2f} s, one Gram per layer {split['gram']:.2f} s")
    if not args.skip_peer:
        print(f"upper bound for any implementation vs torch-cka here (its time / the forward passes alone): "
              f"{res['seconds'] / split['forward']:.1f}x")
    small, big = peak_rss_mb(n // 4, bs), peak_rss_mb(n, bs)
    print(f"peak RSS ours: N={n // 4}: {small:.0f} MB, N={n}: {big:.0f} MB (ratio {big / small:.2f})")


if __name__ == "__main__":
    main()
