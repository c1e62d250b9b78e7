"""Benchmark: the same analyses on a Ray cluster of one node vs two nodes (one CPU each), and the
per-job overhead of the Ray backend vs the local worker — measured in one run.

A local cluster (``ray.cluster_utils.Cluster``: a head and, for the second measurement, another
node on this machine) runs ``--jobs`` CKA analyses of the two tiny seeded shapes models written by
this script, dispatched by ``python -m engine worker --ray ADDRESS --once`` exactly as a user runs
it. Prints the wall time of the batch on one node and on two (speed-up; target ≥ 1.7×), and the
mean time per job of the local worker (``python -m engine worker --once``) vs the one-node cluster
on the same jobs (overhead per job; target ≤ 1 s). Each setting runs on fresh runs folders, so
nothing is answered from a stored result.

Usage: python bench/cluster.py [--jobs 8] [--n 400]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_models(folder: Path) -> tuple[Path, Path]:
    """Two tiny seeded shapes checkpoints (what the analyses compare)."""
    import torch

    from engine.checkpoints import make_card, save_checkpoint
    from engine.data import get_spec
    from engine.models import build_model

    spec = get_spec("shapes")
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=8, hidden=32)
        paths.append(save_checkpoint(model.eval(), make_card(model, "shapes", name=f"bench{seed}"), folder / f"bench{seed}"))
    return paths[0], paths[1]


def queue(runs: Path, models: tuple[Path, Path], jobs: int, n: int) -> None:
    """``jobs`` distinct CKA requests queued in ``runs`` (no worker started)."""
    env = dict(os.environ, ROBUSTSCOPE_RUNS=str(runs), ROBUSTSCOPE_AUTOSTART_WORKER="0")
    for index in range(jobs):
        subprocess.run([sys.executable, "-m", "engine", "cka", "--a", str(models[0]), "--b", str(models[1]),
                        "--dataset", "shapes", "--n", str(n + index), "--batch-size", "16", "--json", "--background"],
                       cwd=ROOT, env=env, check=True, capture_output=True)


def drain(runs: Path, *worker_args: str) -> float:
    """Seconds until a worker (``worker_args``) has run every queued job of ``runs``."""
    env = dict(os.environ, ROBUSTSCOPE_RUNS=str(runs), ROBUSTSCOPE_AUTOSTART_WORKER="0")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "engine", "worker", "--once", *worker_args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"the worker failed:\n{done.stdout}\n{done.stderr}")
    return seconds


def on_cluster(nodes: int, models, jobs: int, n: int, scratch: Path) -> float:
    """Seconds to run the jobs on a fresh local cluster of ``nodes`` one-CPU nodes."""
    from ray.cluster_utils import Cluster

    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    os.environ["ROBUSTSCOPE_WEIGHTS_CACHE"] = str(scratch / f"cache-{nodes}")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        for _ in range(nodes - 1):
            cluster.add_node(num_cpus=1)
        runs = scratch / f"runs-{nodes}"
        queue(runs, models, jobs, n)
        return drain(runs, "--ray", cluster.address)
    finally:
        cluster.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--n", type=int, default=400, help="images per CKA (job i uses n + i, so none is cached)")
    args = parser.parse_args()
    import ray
    import torch

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as folder:
        scratch = Path(folder)
        models = make_models(scratch / "checkpoints")
        local_runs = scratch / "runs-local"
        queue(local_runs, models, args.jobs, args.n)
        local = drain(local_runs)
        one = on_cluster(1, models, args.jobs, args.n, scratch)
        two = on_cluster(2, models, args.jobs, args.n, scratch)
    print(f"{args.jobs} CKA jobs (tiny shapes models, n = {args.n}..{args.n + args.jobs - 1}) · torch {torch.__version__} "
          f"· ray {ray.__version__} · {os.cpu_count()} CPUs")
    print(f"local worker: {local:.1f} s ({local / args.jobs:.2f} s per job)")
    print(f"Ray, one node:  {one:.1f} s ({one / args.jobs:.2f} s per job; overhead vs local "
          f"{(one - local) / args.jobs:+.2f} s per job, target ≤ 1 s: {'PASS' if (one - local) / args.jobs <= 1 else 'FAIL'})")
    print(f"Ray, two nodes: {two:.1f} s; speed-up over one node {one / two:.2f}× "
          f"(target ≥ 1.7×: {'PASS' if one / two >= 1.7 else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
