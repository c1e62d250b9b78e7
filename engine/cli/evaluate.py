"""``evaluate``: clean accuracy of a checkpoint on a dataset's test split."""
from __future__ import annotations

import argparse
import sys

import engine
from engine import data as edata
from engine.cli import print_json
from engine.device import resolve_device
from engine.evaluation import accuracy
from engine.attacks import robust_accuracy
from engine.cli.attack import add_attack_arguments, attack_from_args


def register(sub) -> None:
    """Add the ``evaluate`` command."""
    p = sub.add_parser("evaluate", help="accuracy of a checkpoint on a dataset")
    p.add_argument("--checkpoint", required=True, help="checkpoint path (stem, .safetensors or .json)")
    p.add_argument("--dataset", help="dataset name (default: the card's dataset)")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--n", type=int, help="number of images (default: the whole split)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_attack_arguments(p)  # --attack ... : also report robust accuracy (engine.attacks)
    p.set_defaults(func=run_evaluate)


def stderr_progress(label: str):
    """A ``progress(done, total)`` callback that redraws one line on stderr."""
    def update(done: int, total: int) -> None:
        print(f"\r{label}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    return update


def run_evaluate(args: argparse.Namespace) -> int:
    """Load the checkpoint and dataset, measure clean accuracy, print it."""
    device = resolve_device(args.device)
    loaded = engine.load(args.checkpoint, device=str(device))
    name = args.dataset or loaded.card.get("dataset")
    dataset = edata.load_dataset(name, split=args.split)
    result = accuracy(loaded.model, dataset, n=args.n, batch_size=args.batch_size, device=device,
                      progress=stderr_progress("clean"))
    report = {
        "checkpoint": str(loaded.path), "dataset": name, "split": args.split, "n": result.total,
        "clean_acc": result.accuracy, "seconds": round(result.seconds, 3), "device": str(device),
    }
    if args.attack:
        report.update(_robust_report(args, loaded.model, dataset, name, device))
    if args.json:
        print_json(report)
    else:
        print(f"{loaded.path.name}: clean accuracy {result.accuracy:.4f} on {result.total} {name} images")
        if args.attack:
            print(f"robust accuracy {report['robust_acc']:.4f} under {report['attack']}")
    return 0


def _robust_report(args, model, dataset, name: str, device) -> dict:
    """Robust accuracy under ``--attack`` on the same first ``--n`` images."""
    attack = attack_from_args(args, name)
    images, labels = edata.take(dataset, args.n or len(dataset))
    res = robust_accuracy(model, images, labels, attack, batch_size=args.batch_size, device=device,
                          progress=stderr_progress(attack.name))
    return {"robust_acc": res.robust_acc, "attack_clean_acc": res.clean_acc, "attack": res.config,
            "attack_seconds": round(res.seconds, 3)}
