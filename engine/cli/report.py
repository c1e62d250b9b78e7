"""``report``: a checkpoint's robustness report (clean, PGD, AutoAttack attack by attack, the
gradient-masking checks, an ε-sweep, and a RobustBench model's leaderboard figures beside ours).

    python -m engine report --checkpoint checkpoints/mnist_pgd --n 500 --json
    python -m engine report --checkpoint checkpoints/mnist_pgd --out reports/mnist_pgd
"""
from __future__ import annotations

import argparse
import sys

import engine
from engine import data as edata
from engine.attacks import AUTOATTACK_VERSIONS, STEPS, default_eps
from engine.attacks.report import png_export_available, robustness_report
from engine.cli import MAX_BATCH, check_int, print_json, require_compatible
from engine.device import resolve_device
from engine.errors import InvalidParameterError
from engine.selection import threat_of

#: most ε-sweep points
MAX_SWEEP = 32


def register(sub) -> None:
    """Add the ``report`` command."""
    p = sub.add_parser("report", help="robustness report of a checkpoint: clean, PGD, AutoAttack, masking checks, "
                                      "ε-sweep")
    p.add_argument("--checkpoint", required=True, help="checkpoint path (stem, .safetensors or .json)")
    p.add_argument("--dataset", help="dataset name (default: the card's dataset)")
    p.add_argument("--n", type=int, default=500, help="test images, the first N (default 500; RobustBench uses 10,000)")
    p.add_argument("--eps", type=float, help="radius ε (default: the training ε of a robust card, else the "
                                             "dataset's usual one)")
    p.add_argument("--norm", choices=list(STEPS), help="threat model (default: the card's, else linf)")
    p.add_argument("--version", default="standard", choices=list(AUTOATTACK_VERSIONS), help="AutoAttack version")
    p.add_argument("--seed", type=int, default=0, help="seed of every attack (default 0)")
    p.add_argument("--pgd-steps", type=int, default=40, help="PGD steps (default 40)")
    p.add_argument("--sweep", help="comma-separated ε values of the sweep (default 0 to 2ε)")
    p.add_argument("--source", help="a standard checkpoint to transfer from (masking check: white-box ≥ transfer)")
    p.add_argument("--no-masking", dest="masking", action="store_false", help="skip the gradient-masking checks")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the report as JSON")
    out.add_argument("--out", help="folder for report.json and the CSV tables (and sweep.png with kaleido)")
    p.set_defaults(func=run_report)


def _progress():
    def update(done: int, total: int) -> None:
        print(f"\rreport: {100 * done // max(total, 1)}%", end="" if done < total else "\n", file=sys.stderr,
              flush=True)
    return update


def _parse_sweep(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        values = [float(t) for t in text.replace(";", ",").split(",") if t.strip()]
    except ValueError:
        raise InvalidParameterError(f"--sweep must be comma-separated numbers, got {text!r}") from None
    if not 1 <= len(values) <= MAX_SWEEP:
        raise InvalidParameterError(f"--sweep takes 1 to {MAX_SWEEP} values, got {len(values)}")
    return values


def run_report(args: argparse.Namespace) -> int:
    """Load the checkpoint (and the transfer source), measure, print or write the report."""
    device = resolve_device(args.device)
    loaded = engine.load(args.checkpoint, device=str(device))
    name = args.dataset or loaded.card.dataset
    dataset = edata.load_dataset(name, split="test")
    require_compatible([loaded], dataset)
    check_int("--n", args.n, 1, len(dataset), f"the {name} test split's size")
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    check_int("--pgd-steps", args.pgd_steps, 1, 10_000)
    check_int("--seed", args.seed, 0, 2**63 - 1)
    sweep = _parse_sweep(args.sweep)
    card_norm, card_eps = threat_of(loaded.card)
    norm = args.norm or card_norm or "linf"
    eps = args.eps if args.eps is not None else (card_eps if card_eps and norm == card_norm else default_eps(name, norm))
    source = None
    if args.source:
        src = engine.load(args.source, device=str(device))
        require_compatible([src], dataset)
        source = src.model
    images, labels = edata.take(dataset, args.n)
    report = robustness_report(
        loaded.model, images, labels, eps, norm, name=loaded.name,
        checkpoint=str(loaded.path), dataset=name, card=loaded.card, pgd_steps=args.pgd_steps,
        version=args.version, seed=args.seed, source_model=source, masking=args.masking, sweep_eps=sweep,
        batch_size=args.batch_size, device=device, progress=_progress(),
    )
    if args.out:
        written = report.save(args.out)
        if not png_export_available():
            print("note: kaleido is not installed, so no PNG was written (CSV and JSON only)", file=sys.stderr)
        for path in written:
            print(path)
    elif args.json:
        print_json(report.as_dict())
    else:
        print(f"{report.model} on {report.n} {name} test images, "
              f"{'ℓ∞' if norm == 'linf' else 'ℓ₂'} ε={eps:.4g} ({report.seconds:.1f} s)")
        for row in report.summary_rows():
            print(f"  {row['measure']:<28} {row['accuracy']:.4f}  {row['source']}")
        for check in (report.masking or {}).get("checks", []):
            print(f"  check {check['name']:<22} {check['status']:<7} {check['detail']}")
    return 0
