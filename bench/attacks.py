"""Benchmark: PGD vs a bare forward+backward loop (the physical limit) and vs torchattacks' PGD.

    python bench/attacks.py [--skip-peers]

torchattacks goes into a separate virtualenv (bench/.venv-peers, --no-deps) and runs in a
subprocess, so the running environment is untouched. The virtualenv is made by *this* interpreter
and sees *its* packages (torch included) through a ``.pth`` file, also when this interpreter is
itself a virtualenv (``--system-site-packages`` would only show the system interpreter's). Prints
the ratios.
"""
from __future__ import annotations

import argparse
import json
import site
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
VENV = REPO / "bench" / ".venv-peers"
EPS, STEPS, BATCH, REPEATS = 8 / 255, 10, 64, 3


def build(device):
    from engine.models import build_model
    torch.manual_seed(0)
    return build_model("small_cnn", 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3).to(device).eval()


def bare_loop(model, x, y):
    """STEPS forward+backward passes w.r.t. the input only: the least any PGD can do."""
    for p in model.parameters():
        p.requires_grad_(False)
    for _ in range(STEPS):
        xa = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)


def best_time(fn, device):
    times = []
    for _ in range(REPEATS):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


PEER = r"""
import json, sys, time, torch, torchattacks
sys.path.insert(0, sys.argv[1])
from bench.attacks import build, bare_loop, best_time, EPS, STEPS, BATCH, REPEATS
dev = torch.device(sys.argv[2]); model = build(dev)
torch.manual_seed(1); x = torch.rand(BATCH, 3, 32, 32, device=dev); y = model(x).argmax(1)
atk = torchattacks.PGD(model, eps=EPS, alpha=2.5 * EPS / STEPS, steps=STEPS, random_start=True)
ts = []
for _ in range(REPEATS):
    torch.cuda.synchronize() if dev.type == "cuda" else None; t = time.perf_counter(); adv = atk(x, y)
    torch.cuda.synchronize() if dev.type == "cuda" else None; ts.append(time.perf_counter() - t)
bare = best_time(lambda: bare_loop(model, x, y), dev)
print(json.dumps({"seconds": min(ts), "bare_seconds": bare,
                  "robust_acc": float((model(adv).argmax(1) == y).float().mean())}))
"""


def parent_site_dirs() -> list[str]:
    """The running interpreter's package folders: its site-packages (virtualenv or not), and any
    other site-/dist-packages folder on its path (e.g. a base interpreter's, a user site)."""
    dirs = list(site.getsitepackages())
    if site.ENABLE_USER_SITE and Path(site.getusersitepackages()).is_dir():
        dirs.append(site.getusersitepackages())
    dirs += [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def peer_venv(venv: Path = VENV) -> Path:
    """A virtualenv at ``venv`` made by ``sys.executable`` that also sees this interpreter's
    packages (a ``.pth`` file listing :func:`parent_site_dirs`, rewritten on every call so it
    follows the interpreter that runs the benchmark); its own packages take precedence.
    Returns the virtualenv's python."""
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    (Path(purelib) / "_robustscope_parent.pth").write_text("\n".join(parent_site_dirs()) + "\n")
    return py


def peer(device: str):
    """Time torchattacks' PGD in the separate virtualenv; None if it cannot be installed."""
    py = peer_venv()
    if subprocess.run([str(py), "-c", "import torchattacks"], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "torchattacks"], check=True)
    out = subprocess.run([str(py), "-c", PEER, str(REPO), device], capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-2000:], file=sys.stderr)
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-peers", action="store_true")
    args = ap.parse_args()
    from engine.attacks import PGD
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for name in devices:
        device = torch.device(name)
        model = build(device)
        torch.manual_seed(1)
        x = torch.rand(BATCH, 3, 32, 32, device=device)
        y = model(x).argmax(1)
        fast = name == "cuda"
        attack = PGD(eps=EPS, steps=STEPS, amp=fast, channels_last=fast)
        pgd_t = best_time(lambda: attack(model, x, y), device)
        bare_t = best_time(lambda: bare_loop(model, x, y), device)
        acc = float((attack(model, x, y).preds_adv == y).float().mean())
        print(f"[{name}] PGD {pgd_t:.4f}s, bare fwd+bwd loop {bare_t:.4f}s, ratio {pgd_t / bare_t:.3f} "
              f"(target <= 1.10); robust acc {acc:.3f}")
        if not args.skip_peers:
            ref = peer(name)
            if ref is None:
                print(f"[{name}] torchattacks unavailable")
            else:
                # each side is normalised by the bare loop timed in its own process (the two
                # processes can run the same model at different speeds, e.g. thread pools)
                ours, theirs = pgd_t / bare_t, ref["seconds"] / ref["bare_seconds"]
                print(f"[{name}] torchattacks PGD {ref['seconds']:.4f}s vs its process's bare loop "
                      f"{ref['bare_seconds']:.4f}s (robust acc {ref['robust_acc']:.3f}); raw ours/torchattacks "
                      f"{pgd_t / ref['seconds']:.3f}; normalised {ours / theirs:.3f} (target <= 1.0)")


if __name__ == "__main__":
    main()
