"""Benchmark: the similarity measures (engine.similarity.measures) — speed, agreement, what they show.

Speed (default): two seeded CIFAR ResNet-20s (``engine.models`` "cifar_resnet", the 19 layers of
``bench/cka.py``), N seeded random 3x32x32 images (``bench.cka.Data``), batch 200. For every
measure, ``--repeats`` runs of ``compare_with_measure`` (all maps: A×A, B×B, A×B, and B×A for an
asymmetric measure) beside the bare forward passes it needs (both models over the same images,
features pooled, nothing kept), and beside the reference implementation on the same activations
when it is installed (repsim: cca, pwcca — symmetrised, so both directions; rsatoolbox: rsa;
scikit-learn: linreg, mknn; for procrustes and svcca, which no installable library implements as
published, the NumPy references of tests/engine/similarity/reference_measures.py), with the
largest difference between the two. Times are median [min–max] over the repeats.

Spatial activations are average-pooled by default (``--pooling avg``): flattened, the 19 layers
hold 188,416 features per model, so the full-batch measures would need about 4.7 GiB at N = 2,000
(procrustes) and are refused above ``MAX_MEMORY_BYTES`` (CKA alone streams).

``--table``: every measure on the shipped standard/robust pairs (MNIST, Fashion-MNIST, shapes,
shapes ResNet-20) on the first N test images; prints a Markdown table: each model's
block-structure score (on the measure's similarity form) and the mean A×B similarity at
corresponding depths. Data: ``$ROBUSTSCOPE_DATA``, else ``../shared/data``.

Usage::

    python bench/similarity.py                                   # N = 2,000, 3 repeats
    python bench/similarity.py --n 64 --repeats 1                # smoke run
    python bench/similarity.py --table --n 500 [--pooling flatten|avg]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "engine" / "similarity"))

from bench.cka import Data, build, layers  # noqa: E402
from engine.similarity.measures import MEASURES, collect_activations, compare_with_measure  # noqa: E402

PAIRS = {
    "MNIST": ("mnist", "mnist_standard", "mnist_pgd", "default"),
    "Fashion-MNIST": ("fashion-mnist", "fashion_standard", "fashion_pgd_linf_0p1", "default"),
    "shapes": ("shapes", "shapes_standard", "shapes_pgd", "default"),
    "shapes ResNet-20": ("shapes", "shapes_resnet20_standard", "shapes_resnet20_pgd", "blocks"),
}


def spread(values: list[float]) -> str:
    """``median [min–max]`` of seconds."""
    return f"{statistics.median(values):.2f} s [{min(values):.2f}–{max(values):.2f}]"


# ------------------------------------------------------------------------------- speed
def forward_seconds(a, b, la, lb, data, n, batch_size, pooling) -> float:
    """The bare forward passes: both models over the images in batches, features pooled, dropped."""
    from engine.similarity.features import forward_features

    start = time.perf_counter()
    for s in range(0, n, batch_size):
        x = torch.stack([data[i][0] for i in range(s, min(s + batch_size, n))])
        forward_features([(a, la), (b, lb)], x, pooling)
    return time.perf_counter() - start


def activations(a, b, la, lb, data, n, batch_size, pooling) -> list[np.ndarray]:
    """Every layer's (N, D) float64 activations, A's layers then B's."""
    found = collect_activations([(a, la), (b, lb)], data, n, batch_size, pooling)
    return [f.double().numpy() for f in found]


def _pairs(count_a: int, count_b: int, symmetric: bool) -> list[tuple[int, int]]:
    """(row, column) indices into A's then B's layers of every entry of the maps."""
    a, b = range(count_a), range(count_a, count_a + count_b)
    across = [(i, j) for i in a for j in b] + ([] if symmetric else [(j, i) for i in a for j in b])
    return [(i, j) for group in (a, b) for i in group for j in group] + across


def repsim_maps(name, mats, count_a):
    import repsim

    values = repsim.cca(mats, "pillai") if name == "cca" else repsim.pwcca(mats)
    return "repsim " + importlib.metadata.version("repsim"), values


def rsatoolbox_maps(_name, mats, count_a):
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm, compare

    rdms = calc_rdm([Dataset(m) for m in mats], method="correlation")
    return "rsatoolbox " + importlib.metadata.version("rsatoolbox"), compare(rdms, rdms, method="spearman")


def sklearn_maps(name, mats, count_a):
    from sklearn.linear_model import LinearRegression
    from sklearn.metrics import r2_score
    from sklearn.neighbors import NearestNeighbors

    out = np.zeros((len(mats), len(mats)))
    if name == "linreg":
        for i, j in _pairs(count_a, len(mats) - count_a, False):
            fit = LinearRegression().fit(mats[i], mats[j]).predict(mats[i])
            out[i, j] = r2_score(mats[j], fit, multioutput="variance_weighted")
    else:
        k = 10
        sets = [[set(r[1:]) for r in NearestNeighbors(n_neighbors=k + 1, metric="cosine").fit(m)
                 .kneighbors(m, return_distance=False).tolist()] for m in mats]
        for i, j in _pairs(count_a, len(mats) - count_a, True):
            out[i, j] = out[j, i] = np.mean([len(p & q) / k for p, q in zip(sets[i], sets[j])])
    return "scikit-learn " + importlib.metadata.version("scikit-learn"), out


def numpy_maps(name, mats, count_a):
    import reference_measures as ref

    out = np.zeros((len(mats), len(mats)))
    for i, j in _pairs(count_a, len(mats) - count_a, MEASURES[name].symmetric):
        out[i, j] = ref.REFERENCES[name](mats[i], mats[j])
        if MEASURES[name].symmetric:
            out[j, i] = out[i, j]
    return "NumPy reference (tests)", out


REFERENCES = {"cca": repsim_maps, "pwcca": repsim_maps, "rsa": rsatoolbox_maps, "linreg": sklearn_maps,
              "mknn": sklearn_maps, "procrustes": numpy_maps, "svcca": numpy_maps}


def reference(name, mats, count_a):
    """(library, seconds, all-pairs matrix) of the measure's reference, or None when not installed."""
    if name not in REFERENCES:
        return None
    start = time.perf_counter()
    try:
        label, values = REFERENCES[name](name, mats, count_a)
    except ImportError:
        return None
    return label, time.perf_counter() - start, np.asarray(values, dtype=np.float64)


def ours_as_matrix(comp, count_a) -> np.ndarray:
    """The maps of a MeasureComparison laid out like a reference's all-pairs matrix (pwcca
    symmetrised, as repsim reports it)."""
    count = count_a + comp.within_b.matrix.shape[0]
    out = np.full((count, count), np.nan)
    out[:count_a, :count_a], out[count_a:, count_a:] = comp.within_a.matrix, comp.within_b.matrix
    out[:count_a, count_a:] = comp.across.matrix
    out[count_a:, :count_a] = comp.across.matrix.T if comp.reverse is None else comp.reverse.matrix
    return (out + out.T) / 2 if comp.measure == "pwcca" else out


def speed(args) -> None:
    a, b = build(0), build(1)
    la, lb = layers(a), layers(b)
    data = Data(args.n)
    print(f"two cifar_resnet-20, {len(la)} layers each; N={args.n}, batch={args.batch_size}, "
          f"pooling={args.pooling}, threads={torch.get_num_threads()}, repeats={args.repeats}")
    forward_seconds(a, b, la, lb, data, min(args.n, args.batch_size), args.batch_size, args.pooling)   # warm-up
    forward = [forward_seconds(a, b, la, lb, data, args.n, args.batch_size, args.pooling) for _ in range(args.repeats)]
    print(f"bare forward passes (both models): {spread(forward)}\n")
    mats = activations(a, b, la, lb, data, args.n, args.batch_size, args.pooling)
    print("| measure | ours | ÷ forward | reference | reference time | max abs difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in MEASURES:
        times, comp = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            comp = compare_with_measure(a, b, data, name, la, lb, n=args.n, batch_size=args.batch_size,
                                        pooling=args.pooling)
            times.append(time.perf_counter() - start)
        found = reference(name, mats, len(la)) if name != "cka" else None
        if found is None:
            ref_cells = "— (bench/cka.py: torch-cka)" if name == "cka" else "— (not installed)", "—", "—"
        else:
            label, seconds, values = found
            diff = np.nanmax(np.abs(ours_as_matrix(comp, len(la)) - values))
            ref_cells = label, f"{seconds:.2f} s", f"{diff:.1e}"
        print(f"| {name} | {spread(times)} | {statistics.median(times) / statistics.median(forward):.2f}× | "
              + " | ".join(ref_cells) + " |")


# ------------------------------------------------------------------------------- what it shows
def load_pair(dataset: str, standard: str, robust: str, layer_set: str, n: int):
    """(model A, model B, layers, the first n test images) of a shipped pair."""
    import engine
    from engine.data import load_dataset
    from engine.models import block_layers, default_layers

    a = engine.load(ROOT / "checkpoints" / standard).model
    b = engine.load(ROOT / "checkpoints" / robust).model
    pick = block_layers if layer_set == "blocks" else default_layers
    root = os.environ.get("ROBUSTSCOPE_DATA") or str(ROOT.parent / "shared" / "data")
    return a, b, list(pick(a)), list(pick(b)), load_dataset(dataset, "test", root=root, download=False)


def table_row(name: str, comp) -> str:
    """``| block A | block B | A×B at corresponding depths |`` on the measure's similarity form."""
    from engine.similarity import corresponding_depths
    from engine.similarity.structure import block_structure

    found = MEASURES[name]
    scores = [block_structure(found.similarity(m.matrix)).score for m in (comp.within_a, comp.within_b)]
    _, values, _ = corresponding_depths(comp.across)
    return f"{scores[0]:.3f} | {scores[1]:.3f} | {float(np.mean(found.similarity(values))):.3f}"


def table(args) -> None:
    print(f"first {args.n} test images, pooling={args.pooling}; block score (within − between, on the similarity "
          "form: cos θ for Procrustes) of A = standard and B = robust, and the mean A×B similarity at corresponding "
          "depths\n")
    print("| measure | pair | block score standard | block score robust | A×B at corresponding depths | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    loaded = {label: load_pair(*spec, args.n) for label, spec in PAIRS.items()}
    for name in MEASURES:
        for label, (a, b, la, lb, data) in loaded.items():
            start = time.perf_counter()
            comp = compare_with_measure(a, b, data, name, la, lb, n=args.n, batch_size=args.batch_size,
                                        pooling=args.pooling)
            print(f"| {name} | {label} | {table_row(name, comp)} | {time.perf_counter() - start:.1f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=2000, help="images (default 2,000; --table: 500 is enough)")
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--pooling", choices=["avg", "flatten"], default=None,
                   help="spatial activations (default: avg for the speed run, flatten for --table)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--table", action="store_true", help="every measure on the shipped pairs (Markdown table)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.pooling = args.pooling or ("flatten" if args.table else "avg")
    torch.manual_seed(0)
    table(args) if args.table else speed(args)


if __name__ == "__main__":
    main()
