"""Benchmark: every analysis kind's measured cost estimate against its actual compute time.

For each registered kind, one request on the shipped MNIST pair (``checkpoints/mnist_standard``,
``checkpoints/mnist_pgd``; ``mnist_advprop`` for the AdvProp comparison, the shipped shapes runs'
epoch snapshots for CKA across epochs) of the size a dashboard user asks for. Each request is
estimated the way the pages decide where to run it (``engine.analysis.cost.estimate`` on the
loaded models and device), then computed with ``use_cache=False`` into a temporary result store,
the models already loaded (as the pages pass them).

Every request is first computed once into a scratch store (imports, first calls and the dataset
files are then warm, as in a dashboard that has served a page), then measured twice:

- *cost model*: the estimate with no recorded runs (the probe × the kind's passes), against the
  actual time of the next computation;
- *corrected*: the estimate once that computation's time is recorded (what a dashboard that has
  run the kind before shows), against a further computation's time.

Prints one line per kind — both estimates, the actual times and the ratios estimate ÷ actual
(target 0.5–2) — and, last, the worst ratio of each (the one furthest from 1). Needs the MNIST
files (``ROBUSTSCOPE_DATA``). Do not run it beside other work: the probe and the runs share the
cores.

``--imagenet`` measures on two seeded, random-weight ``torchvision:resnet50`` checkpoints (a
"standard" and a "pgd" card) over a generated ImageNet-layout folder (``imagenet/val/<wnid>/``,
random 256-px images, made in a temporary data root): the kinds that make sense at that size with
small counts — CKA, OOD, top-k, feature visualisation, saliency maps, robust accuracy, craft,
ε-sweep, transfer, unit statistics and layer activations (the report, curves, trade-off, AdvProp and
CKA across epochs need trained or shipped models of their own and are left out, said in the output).

Usage::

    ROBUSTSCOPE_DATA=../shared/data python bench/estimates.py [--kinds cka ood ...] [--repeats 3] [--threads 2]
    python bench/estimates.py --imagenet [--kinds ...]
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ZOO = ROOT / "checkpoints"
STANDARD, ROBUST, ADVPROP = ZOO / "mnist_standard", ZOO / "mnist_pgd", ZOO / "mnist_advprop"
SNAPSHOTS = ZOO / "snapshots"


def requests() -> dict:
    """kind -> (request, the checkpoints it names, in order), each of a dashboard's usual size."""
    from engine.analysis import get_analysis
    from engine.analysis.kinds._attacklab import attack_params
    from engine.training.state import list_snapshots

    pair = (str(STANDARD), str(ROBUST))

    def make(kind, **fields):
        return get_analysis(kind).request.make(**fields)

    runs = {}
    for slot, name in (("a", "shapes_resnet20_standard"), ("b", "shapes_resnet20_pgd")):
        kept = list_snapshots(SNAPSHOTS / name)
        runs[f"run_{slot}"] = tuple(str(stem) for _, stem in kept)
        runs[f"epochs_{slot}"] = tuple(epoch for epoch, _ in kept)
    pgd = attack_params({"eps": 0.3, "steps": 10})
    return {
        "cka": make("cka", a=pair[0], b=pair[1], n=500, batch_size=100),
        "ood": make("ood", models=pair, n=200),
        "featvis_topk": make("featvis_topk", model=pair[1], layer="net.block2",
                             targets=(("unit", 0), ("unit", 1), ("direction", 0)), n=1000),
        "featvis": make("featvis", model=pair[1], layer="net.block2", targets=(("unit", 0), ("direction", 0)),
                        steps=64),
        "saliency_grid": make("saliency_grid", models=pair, methods=("saliency", "smoothgrad", "integrated_gradients")),
        "saliency_curves": make("saliency_curves", models=pair, n=64),
        "tradeoff": make("tradeoff", models=pair, n=128),
        "robust_accuracy": make("robust_accuracy", model=pair[1], n=200, attack="pgd", eps=0.3, steps=20),
        "robustness_report": make("robustness_report", model=pair[1], eps=0.3, n=32, pgd_steps=10,
                                  square_queries=100, sweep=(0.1, 0.3), masking=False),
        "craft": make("craft", models=pair, attack="pgd", params=pgd),
        "eps_sweep": make("eps_sweep", models=pair, attack="pgd", params=attack_params({"steps": 10}),
                          eps=(0.1, 0.2, 0.3), n=64),
        "transfer": make("transfer", models=pair, attack="pgd", params=pgd, n=64),
        "units": make("units", models=pair, n=200),
        "advprop": make("advprop", model=str(ADVPROP), peers=pair, n=64, steps=10),
        "cka_epochs": make("cka_epochs", dataset="shapes", n=200, **runs),
        "layer_activations": make("layer_activations", models=pair, n=512),
    }


#: the kinds --imagenet measures (the others need trained or shipped models of their own)
IMAGENET_KINDS = ("cka", "ood", "featvis_topk", "featvis", "saliency_grid", "robust_accuracy", "craft", "eps_sweep",
                  "transfer", "units", "layer_activations")


def imagenet_setup(folder: Path, images: int = 64, classes: int = 8) -> tuple[str, str]:
    """A generated ImageNet validation folder under ``folder/data`` (random 256-px PNGs, the first
    ``classes`` wnids) and two seeded random-weight ``torchvision:resnet50`` checkpoints under
    ``folder/checkpoints``; returns the two checkpoints' paths (standard, "pgd")."""
    import numpy as np
    import torch
    from PIL import Image

    from engine.checkpoints import make_card, save_checkpoint
    from engine.data import get_spec
    from engine.data.imagenet import wnids
    from engine.models import build_model

    rng = np.random.default_rng(0)
    for i in range(images):
        wnid = wnids()[i % classes]
        target = folder / "data" / "imagenet" / "val" / wnid / f"ILSVRC2012_val_{i + 1:08d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(target)
    spec = get_spec("imagenet")
    paths = []
    for seed, (name, training) in enumerate((("resnet50_standard", {"method": "standard"}),
                                             ("resnet50_pgd", {"method": "pgd", "norm": "linf", "eps": 4 / 255}))):
        torch.manual_seed(seed)
        model = build_model("torchvision:resnet50", spec.num_classes, spec.input_shape, spec.mean, spec.std)
        card = make_card(model, "imagenet", name=name, training=training)
        paths.append(str(save_checkpoint(model.eval(), card, folder / "checkpoints" / name)))
    return paths[0], paths[1]


def imagenet_requests(standard: str, robust: str) -> dict:
    """kind -> request on the two ResNet-50s, with counts a CPU measures in minutes."""
    from engine.analysis import get_analysis
    from engine.analysis.kinds._attacklab import attack_params

    pair = (standard, robust)

    def make(kind, **fields):
        return get_analysis(kind).request.make(**fields)

    pgd = attack_params({"eps": 4 / 255, "steps": 2})
    return {
        "cka": make("cka", a=standard, b=robust, n=32, batch_size=16),
        "ood": make("ood", models=pair, n=16, distortions=("gaussian_noise", "contrast"), severities=(3,)),
        "featvis_topk": make("featvis_topk", model=robust, layer="net.layer4", targets=(("unit", 0), ("direction", 0)),
                             n=32),
        "featvis": make("featvis", model=robust, layer="net.layer4", targets=(("unit", 0),), steps=8),
        "saliency_grid": make("saliency_grid", models=pair, methods=("saliency",)),
        "robust_accuracy": make("robust_accuracy", model=robust, n=16, attack="pgd", eps=4 / 255, steps=2),
        "craft": make("craft", models=pair, attack="pgd", params=pgd),
        "eps_sweep": make("eps_sweep", models=pair, attack="pgd", params=attack_params({"steps": 2}),
                          eps=(2 / 255, 4 / 255), n=8),
        "transfer": make("transfer", models=pair, attack="pgd", params=pgd, n=8),
        "units": make("units", models=pair, n=16),
        "layer_activations": make("layer_activations", models=pair, n=32, batch_size=16),
    }


def load_all(request, device: str) -> list:
    """The request's models loaded on ``device``, in request order (as the pages pass them)."""
    from engine.checkpoints import load

    return [load(ref.path, device=device, bn_branch=ref.branch) for ref in request.model_refs()]


def measure(request, loaded, device: str, repeats: int, store) -> tuple[float, float]:
    """``(estimate s, median actual s)`` of one request: the estimate from ``store``'s recorded
    runs, then ``repeats`` computations (each recorded there too)."""
    from engine.analysis import run_analysis
    from engine.analysis.cost import estimate

    guess = estimate(request, loaded, results=store.root).seconds
    actual = []
    for _ in range(repeats):
        result = run_analysis(request, use_cache=False, device=device, store=store, loaded=loaded, resume=False)
        actual.append(result.seconds)
    return guess, statistics.median(actual)


def requests_names() -> list[str]:
    """Every registered kind."""
    from engine.analysis import ANALYSES

    return list(ANALYSES)


def worst(ratios: dict[str, float]) -> tuple[str, float]:
    """The kind whose ratio is furthest from 1 (in log terms: 0.25 and 4 are as bad)."""
    kind = max(ratios, key=lambda k: abs(math.log(max(ratios[k], 1e-12))))
    return kind, ratios[kind]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", help="only these kinds (default: every one)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--imagenet", action="store_true",
                        help="two random-weight torchvision:resnet50s on a generated ImageNet-layout folder")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as runs:
        os.environ["ROBUSTSCOPE_RUNS"] = runs
        from engine.analysis import ResultStore

        scratch, store = ResultStore(Path(runs) / "scratch"), ResultStore(Path(runs) / "results")
        if args.imagenet:
            os.environ["ROBUSTSCOPE_DATA"] = str(Path(runs) / "data")
            every = imagenet_requests(*imagenet_setup(Path(runs)))
            print("two random-weight torchvision:resnet50 at 224 px on generated images; not measured here: "
                  + ", ".join(k for k in requests_names() if k not in IMAGENET_KINDS))
        else:
            every = requests()
        chosen = {k: r for k, r in every.items() if not args.kinds or k in args.kinds}
        print(f"{'kind':<20} {'model s':>8} {'actual s':>9} {'ratio':>6} | {'corrected s':>11} {'actual s':>9} "
              f"{'ratio':>6}")
        model, corrected = {}, {}
        for kind, request in chosen.items():
            loaded = load_all(request, args.device)
            measure(request, loaded, args.device, 1, scratch)                      # warm
            first = measure(request, loaded, args.device, args.repeats, store)     # no recorded runs yet
            second = measure(request, loaded, args.device, args.repeats, store)    # corrected by the first
            model[kind], corrected[kind] = (g / max(a, 1e-9) for g, a in (first, second))
            print(f"{kind:<20} {first[0]:>8.2f} {first[1]:>9.2f} {model[kind]:>6.2f} | {second[0]:>11.2f} "
                  f"{second[1]:>9.2f} {corrected[kind]:>6.2f}", flush=True)
        for label, ratios in (("cost model", model), ("corrected", corrected)):
            kind, ratio = worst(ratios)
            print(f"{label}: worst ratio {ratio:.2f} ({kind}); target 0.5-2 {'met' if 0.5 <= ratio <= 2 else 'MISSED'}")
        kind, ratio = worst(corrected)
        print(f"worst ratio: {ratio:.2f} ({kind})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
