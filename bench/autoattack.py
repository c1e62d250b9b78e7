"""Benchmark: our AutoAttack vs the reference implementation on the same model and images.

    ROBUSTSCOPE_DATA=../shared/data python bench/autoattack.py --checkpoint checkpoints/mnist_pgd --n 500

Prints the robust accuracy of both (and after each attack), the difference in points (target:
within 0.5), the images on which they disagree, and the time of each over ``--repeats`` runs
(median and range) with the ratio ours / reference (target: <= 1.0). Both sides run the same
sequence with the same seed, batch size and thread count; the reference's target-class counts
are capped at classes − 1 as ours are (it fails on fewer than 10 classes otherwise).

The reference is PyPI's ``pyautoattack==0.2.0`` (Croce & Hein's code; module ``pyautoattack``). It
is not a dependency of RobustScope: it goes into a virtualenv of its own, cached outside the
repository (``$ROBUSTSCOPE_CACHE`` or ``~/.cache/robustscope``, folder ``venv-autoattack``), made
by this interpreter and seeing its packages (torch included) through a ``.pth`` file, as
``bench/attacks.py`` does for torchattacks, and runs in a subprocess.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.attacks import peer_venv  # noqa: E402

REFERENCE = "pyautoattack==0.2.0"
REFERENCE_MODULE = "pyautoattack"


def cache_dir() -> Path:
    """Where the reference's virtualenv lives (outside the repository)."""
    return Path(os.environ.get("ROBUSTSCOPE_CACHE") or Path.home() / ".cache" / "robustscope")


def index_url() -> str:
    """The package index pip would use (``PIP_INDEX_URL``, pip's config, else PyPI)."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                             capture_output=True, text=True)
        url = out.stdout.strip() if out.returncode == 0 else ""
    return url or "https://pypi.org/simple"


def registry_reachable(timeout: float = 5.0) -> bool:
    """True when a TCP connection to the package index's host succeeds."""
    parsed = urlparse(index_url())
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def reference_python() -> Path:
    """The python of the reference's virtualenv, ``pyautoattack`` installed (``--no-deps``: it
    declares none; torch comes from this interpreter). Raises CalledProcessError if pip fails."""
    venv = cache_dir() / "venv-autoattack"
    venv.parent.mkdir(parents=True, exist_ok=True)
    py = peer_venv(venv)
    probe = f"import {REFERENCE_MODULE}, sys; sys.exit(0 if {REFERENCE_MODULE}.__version__ == '0.2.0' else 1)"
    if subprocess.run([str(py), "-c", probe], capture_output=True).returncode != 0:
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", REFERENCE], check=True)
    return py


#: runs in the reference's virtualenv: argv = repo, request.json; prints one JSON line
RUNNER = r"""
import json, logging, re, sys, time
sys.path.insert(0, sys.argv[1])
import torch
req = json.load(open(sys.argv[2]))
torch.set_num_threads(req["threads"])
import engine
from pyautoattack import AutoAttack
device = torch.device(req["device"])
model = engine.load(req["checkpoint"], device=str(device)).model.eval()
for p in model.parameters():
    p.requires_grad_(False)
data = torch.load(req["data"])
x, y = data["x"], data["y"]
k = model(x[:2].to(device)).shape[1]
messages = []
class Keep(logging.Handler):
    def emit(self, record):
        messages.append(record.getMessage())
log = logging.getLogger("auto-attack"); log.setLevel(logging.DEBUG); log.addHandler(Keep())
runs = []
for _ in range(req["repeats"]):
    messages.clear()
    aa = AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[req["norm"]], eps=req["eps"], version=req["version"],
                    seed=req["seed"], device=device, attacks=req["attacks"])
    for key, value in req["overrides"].items():  # e.g. {"fab.n_iter": 20, "square.n_queries": 300}
        part, attr = key.split(".")
        setattr(getattr(aa, part), attr, value)
    aa.apgd_targeted.n_target_classes = min(aa.apgd_targeted.n_target_classes, k - 1)
    aa.fab.n_target_classes = min(aa.fab.n_target_classes, k - 1)
    if device.type == "cuda": torch.cuda.synchronize()
    t = time.perf_counter()
    adv, _ = aa.run_standard_evaluation(x, y, batch_size=req["batch_size"])
    if device.type == "cuda": torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    with torch.no_grad():
        robust = torch.cat([model(adv[i:i + 500].to(device)).argmax(1).cpu() == y[i:i + 500]
                            for i in range(0, len(y), 500)])
    after, total = {}, {}
    for m in messages:
        hit = re.match(r"robust accuracy after (\S+): ([\d.]+)% \(total time ([\d.]+) s\)", m)
        if hit:
            after[hit.group(1).lower()] = float(hit.group(2)) / 100
            total[hit.group(1).lower()] = float(hit.group(3))
    runs.append({"seconds": seconds, "robust": robust.tolist(), "after": after, "total_time": total})
print(json.dumps({"runs": runs, "n_classes": k}))
"""


def run_reference(checkpoint: str, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str = "linf",
                  version: str = "standard", seed: int = 0, batch_size: int = 250, repeats: int = 1,
                  threads: int | None = None, device: str = "cpu", python: Path | None = None,
                  attacks: list[str] | None = None, overrides: dict | None = None) -> dict:
    """Run the reference AutoAttack on ``checkpoint`` with images ``x`` / labels ``y``.

    ``attacks``: the sequence of ``version="custom"``; ``overrides``: reference attributes to set,
    ``{"fab.n_iter": 20, "square.n_queries": 300}`` (not APGD's ``n_iter``: its checkpoints are
    derived from it when it is built). Returns ``{"runs": [{"seconds", "robust" (list of bool),
    "after" (attack -> accuracy)}], "n_classes"}``.
    """
    py = python or reference_python()
    with tempfile.TemporaryDirectory() as tmp:
        data, request = Path(tmp) / "data.pt", Path(tmp) / "request.json"
        torch.save({"x": x.cpu(), "y": y.cpu()}, data)
        request.write_text(json.dumps({
            "checkpoint": str(checkpoint), "data": str(data), "eps": eps, "norm": norm, "version": version,
            "seed": seed, "batch_size": batch_size, "repeats": repeats, "device": device,
            "threads": threads or torch.get_num_threads(), "attacks": attacks, "overrides": overrides or {},
        }))
        out = subprocess.run([str(py), "-c", RUNNER, str(REPO), str(request)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the reference AutoAttack failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(model, x, y, eps, norm="linf", version="standard", seed=0, batch_size=250, device="cpu"):
    """Our AutoAttack: ``(result, seconds)``."""
    from engine.attacks import AutoAttack, evaluate_autoattack

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    res = evaluate_autoattack(model, x, y, AutoAttack(eps=eps, norm=norm, version=version, seed=seed),
                              batch_size=batch_size, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    return res, time.perf_counter() - start


def per_attack_seconds(total_time: dict[str, float]) -> dict[str, float]:
    """Each attack's own seconds from the reference's cumulative "total time" after each attack
    (its log order is the sequence's order)."""
    out, before = {}, 0.0
    for name, total in total_time.items():
        out[name] = total - before
        before = total
    return out


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} s (range {min(values):.2f}–{max(values):.2f}, {len(values)} runs)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "mnist_pgd"))
    ap.add_argument("--dataset", help="default: the card's")
    ap.add_argument("--n", type=int, default=500, help="the first N test images (default 500)")
    ap.add_argument("--eps", type=float, help="default: the card's training ε")
    ap.add_argument("--norm", choices=["linf", "l2"], help="default: the card's training norm")
    ap.add_argument("--version", default="standard", choices=["standard", "plus", "rand"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=250, help="both sides (the reference's default: 250)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)

    import engine
    from engine import data as edata
    from engine.selection import threat_of

    torch.set_num_threads(args.threads)
    loaded = engine.load(args.checkpoint, device=args.device)
    dataset = args.dataset or loaded.card.dataset
    card_norm, card_eps = threat_of(loaded.card)
    norm = args.norm or card_norm or "linf"
    eps = args.eps if args.eps is not None else card_eps
    if eps is None:
        ap.error("the card records no training ε: give --eps")
    x, y = edata.take(edata.load_dataset(dataset, split="test"), args.n)
    print(f"{Path(args.checkpoint).name} on the first {args.n} {dataset} test images, {norm} ε={eps:.4g}, "
          f"AutoAttack {args.version}, seed {args.seed}, batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.device}")

    ours_times, ref_times, ours, ref = [], [], None, None
    py = reference_python()
    for _ in range(args.repeats):  # interleaved, so a busy spell hits both sides alike
        ours, seconds = run_ours(loaded.model, x, y, eps, norm, args.version, args.seed, args.batch_size, args.device)
        ours_times.append(seconds)
        ref = run_reference(args.checkpoint, x, y, eps, norm, args.version, args.seed, args.batch_size, 1,
                            args.threads, args.device, python=py)
        ref_times.append(ref["runs"][0]["seconds"])
    ref_robust = torch.tensor(ref["runs"][-1]["robust"])
    ref_acc = float(ref_robust.float().mean())
    diff = 100 * (ours.robust_acc - ref_acc)
    print(f"robust accuracy: ours {ours.robust_acc:.2%}, reference {ref_acc:.2%}; difference {diff:+.2f} points "
          f"(target within ±0.5); {int((ours.robust != ref_robust).sum())} images disagree")
    stage_seconds = per_attack_seconds(ref["runs"][-1].get("total_time", {}))
    for stage in ours.per_attack:
        theirs = ref["runs"][-1]["after"].get(stage["attack"])
        theirs_text = f"{theirs:.2%}" if theirs is not None else "?"
        took = stage_seconds.get(stage["attack"])
        took_text = f"{took:.1f} s" if took is not None else "?"
        print(f"  after {stage['attack']:<8} ours {stage['robust_acc_after']:.2%}  reference {theirs_text}"
              f"   (last run: ours {stage['seconds']:.1f} s, reference {took_text})")
    ratios = [o / r for o, r in zip(ours_times, ref_times)]
    print(f"time: ours {_spread(ours_times)}; reference {_spread(ref_times)}")
    print(f"time ratio ours/reference: median {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.3f}–{max(ratios):.3f}; target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
