"""``attack``: craft adversarial examples for a checkpoint on a dataset and save them as NPZ.

Also provides the attack options shared with ``evaluate --attack`` (robust accuracy).
"""
from __future__ import annotations

import argparse
import sys

import engine
from engine import data as edata
from engine.attacks import ATTACKS, STEPS, make_attack, run_attack
from engine.attacks.base import Attack
from engine.attacks.export import result_arrays, save_npz
from engine.cli import MAX_BATCH, check_int, print_json, require_compatible
from engine.device import resolve_device


def add_attack_arguments(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """Add ``--attack --norm --eps --steps --alpha --restarts --no-random-start --targeted`` to parser ``p``.
    Unset values take the attack's per-dataset defaults (engine.attacks.default_params)."""
    p.add_argument("--attack", default=default, choices=list(ATTACKS), help="attack name")
    p.add_argument("--norm", choices=list(STEPS), help="threat model (PGD, DeepFool)")
    p.add_argument("--eps", type=float, help="radius ε in [0,1] pixel units (default: per dataset)")
    p.add_argument("--steps", type=int, help="iterations (PGD, CW, DeepFool)")
    p.add_argument("--alpha", type=float, help="PGD step size (default 2.5·ε/steps)")
    p.add_argument("--restarts", type=int, help="PGD random restarts")
    p.add_argument("--no-random-start", dest="random_start", action="store_false", default=None,
                   help="PGD: start from the clean image (deterministic)")
    p.add_argument("--targeted", action="store_true", default=None,
                   help="targeted attack (target: each image's clean runner-up class)")


def attack_from_args(args: argparse.Namespace, dataset: str) -> Attack:
    """Build the attack the options describe; options it does not take raise a clear error."""
    keys = ("norm", "eps", "steps", "alpha", "restarts", "random_start", "targeted")
    return make_attack(args.attack, dataset, **{k: getattr(args, k) for k in keys if getattr(args, k) is not None})


def stderr_progress(label: str):
    """A ``progress(done, total)`` callback that redraws one line on stderr."""
    def update(done: int, total: int) -> None:
        print(f"\r{label}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    return update


def register(sub) -> None:
    """Add the ``attack`` command."""
    p = sub.add_parser("attack", help="craft adversarial examples and write them to an .npz file")
    p.add_argument("--checkpoint", required=True, help="checkpoint path (stem, .safetensors or .json)")
    p.add_argument("--dataset", help="dataset name (default: the card's dataset)")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--seed", type=int, help="pick a seeded random subset instead of the first n")
    add_attack_arguments(p, default="pgd")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output .npz (x, x_adv, labels, preds, ...)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run_attack_command)


def run_attack_command(args: argparse.Namespace) -> int:
    """Load checkpoint and images, run the attack, write the NPZ atomically, print a summary."""
    device = resolve_device(args.device)
    loaded = engine.load(args.checkpoint, device=str(device))
    name = args.dataset or loaded.card.dataset
    dataset = edata.load_dataset(name, split=args.split)
    require_compatible([loaded], dataset)
    check_int("--n", args.n, 1, len(dataset), f"the {name} {args.split} split's size")
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    attack = attack_from_args(args, name)
    images, labels = edata.take(dataset, args.n, seed=args.seed)
    result = run_attack(loaded.model, images, labels, attack, batch_size=args.batch_size, device=device,
                        progress=stderr_progress(attack.name))
    path = save_npz(args.out, result_arrays(result, images))
    summary = {
        "checkpoint": str(loaded.path), "dataset": name, "n": len(result), "out": str(path),
        "clean_acc": float((result.preds_clean == result.labels).float().mean()),
        "robust_acc": float((result.preds_adv == result.labels).float().mean()),
        "success_rate": float(result.success.float().mean()),
        "attack": attack.config(),
    }
    if args.json:
        print_json(summary)
    else:
        print(f"wrote {len(result)} adversarial examples to {path}: clean accuracy "
              f"{summary['clean_acc']:.4f}, robust accuracy {summary['robust_acc']:.4f}")
    return 0
