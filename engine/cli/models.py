"""``models`` (list checkpoints with their cards) and ``import`` (convert a foreign checkpoint)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine import checkpoints as ckpt
from engine.cli import print_json
from engine.errors import InvalidParameterError


def register(sub) -> None:
    """Add the ``models`` and ``import`` commands."""
    p = sub.add_parser("models", help="list available checkpoints and their model cards")
    p.add_argument("--root", action="append", type=Path, help="folder to scan (repeatable); default: $ROBUSTSCOPE_CHECKPOINTS or ./checkpoints")
    p.add_argument("--json", action="store_true", help="print JSON (full cards) instead of a table")
    p.set_defaults(func=list_models)

    p = sub.add_parser("import", help="convert a plain/torchvision/robustness/RobustBench checkpoint to RobustScope's format")
    p.add_argument("src", type=Path, help="the checkpoint file (.pt/.pth/.ckpt/.safetensors)")
    p.add_argument("--arch", required=True, help="architecture name (see engine.models.ARCHITECTURES)")
    p.add_argument("--dataset", required=True, help="dataset the model was trained on")
    p.add_argument("--format", default="auto", dest="fmt", choices=["auto", "plain", "torchvision", "robustness", "robustbench"])
    p.add_argument("--arch-kwargs", default="{}", help='JSON object of architecture options, e.g. \'{"width": 2}\'')
    p.add_argument("--name", help="name of the new checkpoint (default: the file's stem)")
    p.add_argument("--out-dir", type=Path, help="where to save (default: the checkpoints folder)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="DANGEROUS: allow arbitrary unpickling (runs code from the file); only for files you trust")
    p.set_defaults(func=import_model)


def _summary(info) -> dict:
    """One row of the listing: name, path and the card's headline fields."""
    card = info.card or {}
    training = card.get("training") or {}
    metrics = card.get("metrics") or {}
    return {
        "name": info.name,
        "path": str(info.path),
        "dataset": card.get("dataset"),
        "arch": card.get("arch"),
        "method": training.get("method", "standard" if card else None),
        "eps": training.get("eps"),
        "norm": training.get("norm"),
        "clean_acc": metrics.get("clean_acc"),
        "robust_acc": metrics.get("robust_acc"),
        "error": getattr(info, "error", None),
    }


def list_models(args: argparse.Namespace) -> int:
    """Print the checkpoints found under the roots, as JSON or a table."""
    infos = ckpt.list_checkpoints(args.root)
    if args.json:
        print_json([dict(_summary(i), card=i.card) for i in infos])
        return 0
    if not infos:
        print("no checkpoints found; train one (python -m engine train) or import one (python -m engine import)")
        return 0
    rows = [_summary(i) for i in infos]
    cols = ["name", "dataset", "arch", "method", "eps", "clean_acc", "robust_acc"]
    print("  ".join(f"{c:<14}" for c in cols))
    for row in rows:
        print("  ".join(f"{_cell(row[c]):<14}" for c in cols) + (f"  ERROR: {row['error']}" if row["error"] else ""))
    return 0


def _cell(value) -> str:
    """Format a table cell (floats to 4 significant digits, None as '-')."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def import_model(args: argparse.Namespace) -> int:
    """Import a foreign checkpoint and save it in RobustScope's format."""
    try:
        arch_kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(f"--arch-kwargs is not valid JSON: {exc}") from exc
    if args.allow_pickle:
        print("warning: --allow-pickle lets the file run arbitrary code while loading", file=sys.stderr)
    loaded = ckpt.import_checkpoint(args.src, args.arch, args.dataset, fmt=args.fmt,
                                    allow_pickle=args.allow_pickle, arch_kwargs=arch_kwargs)
    out_dir = args.out_dir or ckpt.checkpoints_root()
    out_dir.mkdir(parents=True, exist_ok=True)
    name = args.name or args.src.stem
    path = ckpt.save_checkpoint(loaded.model, dict(loaded.card, name=name), out_dir / name)
    print(path)
    return 0
