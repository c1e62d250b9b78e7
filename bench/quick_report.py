"""Benchmark: the quick robustness report (the Models page's default) against its 60 s target.

    ROBUSTSCOPE_DATA=../shared/data python bench/quick_report.py            # mnist_pgd, 100 images, ε 0.3, 2 threads

Runs the quick report (``ReportRequest(preset="quick")``: clean, PGD-40, APGD-CE + APGD-T with
AutoAttack's settings, the masking checks without Square and extra effort, a 4-point ε-sweep) as
the page runs it (``run_analysis`` with the checkpoint already loaded, the cache bypassed, the
result stored in a temporary folder) on the first ``--n`` test images, ``--repeats`` times. Each
repeat first times the baseline, the bare PGD-40 evaluation of the same images
(``robust_accuracy``, the report's own PGD stage), so a busy spell hits both alike.

Prints each repeat's seconds (report, baseline, their ratio), the report's stages of the last
run, median [min–max] of each, and the verdict against ``--target`` (60 s). The load average
before and after is printed too: on a shared machine the seconds are an upper bound.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _spread(values: list[float], unit: str = " s") -> str:
    return f"{statistics.median(values):.2f}{unit} [{min(values):.2f}–{max(values):.2f}]"


def _load() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPU(s)"
    except OSError:
        return "load average unknown"


def baseline_seconds(model, images, labels, eps: float, norm: str, steps: int, batch_size: int, device) -> float:
    """Seconds of the bare PGD-``steps`` evaluation of ``images`` (the report's PGD stage alone)."""
    from engine.analysis.runner import seeded
    from engine.attacks import PGD, robust_accuracy

    start = time.perf_counter()
    with seeded(0, str(device)):
        robust_accuracy(model, images, labels, PGD(eps=eps, norm=norm, steps=steps), batch_size, device)
    return time.perf_counter() - start


def quick_report_seconds(request, loaded, device: str):
    """``(seconds, report)`` of the quick report as the page computes it (no cache, a temporary store)."""
    from engine.analysis import ResultStore, run_analysis

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = run_analysis(request, use_cache=False, device=device, store=ResultStore(Path(tmp)), loaded=[loaded])
        seconds = time.perf_counter() - start
    return seconds, result.value()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default=str(REPO / "checkpoints" / "mnist_pgd"))
    ap.add_argument("--dataset", help="default: the card's")
    ap.add_argument("--n", type=int, default=100, help="the first N test images (default 100)")
    ap.add_argument("--eps", type=float, help="default: the card's training ε (mnist_pgd: 0.3)")
    ap.add_argument("--norm", choices=["linf", "l2"], help="default: the card's training norm")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2: the demo laptop)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--target", type=float, default=60.0, help="seconds the quick report must stay under")
    args = ap.parse_args(argv)

    import engine
    from engine import data as edata
    from engine.analysis import ModelRef
    from engine.analysis.kinds.report import ReportRequest, default_threat

    torch.set_num_threads(args.threads)
    loaded = engine.load(args.checkpoint, device=args.device)
    dataset = args.dataset or loaded.card.dataset
    norm, eps = default_threat(loaded.card, dataset, args.norm, args.eps)
    request = ReportRequest(model=ModelRef.from_loaded(loaded), dataset=dataset, eps=eps, norm=norm, n=args.n,
                            preset="quick")
    images, labels = edata.take(edata.load_dataset(dataset, split="test"), args.n)
    device = torch.device(args.device)
    print(f"{Path(args.checkpoint).name} on the first {args.n} {dataset} test images, {norm} ε={eps:.4g}, "
          f"quick report (APGD-CE + APGD-T, masking checks without Square, 4-point sweep), "
          f"{args.threads} thread(s), {args.device}")
    print(f"before: {_load()}")

    reports, bases, ratios, report = [], [], [], None
    for i in range(args.repeats):  # interleaved, so a busy spell hits both
        base = baseline_seconds(loaded.model, images, labels, eps, norm, request.pgd_steps, request.batch_size, device)
        seconds, report = quick_report_seconds(request, loaded, args.device)
        reports.append(seconds)
        bases.append(base)
        ratios.append(seconds / base)
        print(f"  repeat {i + 1}: quick report {seconds:.2f} s, baseline (bare PGD-{request.pgd_steps}) {base:.2f} s, "
              f"ratio {seconds / base:.1f}×", flush=True)
    print(f"after: {_load()}")

    aa = report.autoattack
    stages = [f"PGD-{request.pgd_steps} {report.pgd['seconds']:.1f} s"]
    stages += [f"{s['attack']} {s['seconds']:.1f} s" for s in aa["per_attack"]]
    if report.masking:
        ran = [c["name"] for c in report.masking["checks"] if c["status"] != "skipped"]
        stages.append(f"masking checks {report.masking['seconds']:.1f} s ({', '.join(ran)})")
    print(f"last run's stages: {'; '.join(stages)}")
    print(f"figures: clean {report.clean_acc:.2%}, PGD-{request.pgd_steps} {report.pgd['robust_acc']:.2%}, "
          f"quick (APGD-CE + APGD-T, an upper bound) {aa['robust_acc']:.2%}; sweep "
          + ", ".join(f"ε={r['eps']:.3g}: {r['robust_acc']:.0%}" for r in report.sweep))
    median = statistics.median(reports)
    print(f"quick report: median {_spread(reports)} over {len(reports)} runs; baseline {_spread(bases)}; "
          f"ratio to the baseline {_spread(ratios, '×')}")
    verdict = "✅" if median <= args.target else "❌"
    print(f"target: ≤ {args.target:.0f} s → median {median:.2f} s {verdict} (slowest {max(reports):.2f} s "
          f"{'✅' if max(reports) <= args.target else '❌'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
