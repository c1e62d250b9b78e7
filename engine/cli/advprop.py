"""``advprop``: an AdvProp model's two BatchNorm branches beside a standard and a robust model."""
from __future__ import annotations

import argparse
import sys

import engine
from engine import checkpoints as ckpt
from engine import data as edata
from engine.cli import MAX_BATCH, check_int, print_json, require_compatible
from engine.device import resolve_device


def register(sub) -> None:
    """Add the ``advprop`` command."""
    p = sub.add_parser("advprop", help="AdvProp's main and aux BN branches vs standard and PGD-AT models "
                                       "(clean, PGD and distorted accuracy; Xie et al. 2019)")
    p.add_argument("--checkpoint", required=True, help="the AdvProp (dual-BN) checkpoint")
    p.add_argument("--root", action="append", help="where to find the standard and robust models of its dataset "
                                                    "(default: the checkpoints folder)")
    p.add_argument("--n", type=int, default=500, help="test images (default 500)")
    p.add_argument("--eps", type=float, help="PGD ε (default: the dataset's usual one)")
    p.add_argument("--steps", type=int, default=20, help="PGD steps (default 20)")
    p.add_argument("--severity", type=int, default=3, help="distortion severity 1..5 (default 3)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run_advprop)


def run_advprop(args: argparse.Namespace) -> int:
    """Load the AdvProp model (both branches) and its dataset's peers; print the comparison."""
    from engine.attacks import make_attack
    from engine.generalisation.advprop import compare_branches, comparison_entries

    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    device = str(resolve_device(args.device))
    target = engine.load(args.checkpoint, device=device)
    infos = ckpt.list_checkpoints(args.root) + ckpt.list_checkpoints(target.path.parent)
    entries = comparison_entries(infos, str(target.path))
    loaded = {e.label: engine.load(e.path, device=device, bn_branch=e.branch) for e in entries}
    dataset = edata.load_dataset(target.card.dataset, split="test")
    require_compatible(list(loaded.values()), dataset)
    check_int("--n", args.n, 1, len(dataset), "the test split's size")
    images, labels = edata.take(dataset, args.n)
    params = {"steps": args.steps} | ({"eps": args.eps} if args.eps is not None else {})
    attack = make_attack("pgd", target.card.dataset, **params)
    table = compare_branches({k: v.model for k, v in loaded.items()}, images, labels, attack,
                             severity=args.severity, batch_size=args.batch_size,
                             progress=lambda d, t: print(f"\radvprop: {d}/{t} models", end="\n" if d == t else "",
                                                         file=sys.stderr, flush=True))
    if args.json:
        print_json({"checkpoint": str(target.path), "dataset": target.card.dataset, "n": args.n,
                    "rows": table.to_dict(orient="records")})
    else:
        print(table.to_string(index=False))
    return 0
