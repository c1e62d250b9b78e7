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
    p.add_argument("--layers", metavar="CHECKPOINT",
                   help="list CHECKPOINT's hookable layers (name, type, output shape): the names --layer takes")
    p.set_defaults(func=list_models)

    p = sub.add_parser(
        "import",
        help="convert a plain/torchvision/timm/robustness/RobustBench checkpoint to RobustScope's format",
        description=(
            "Convert a checkpoint made elsewhere (FILE with --arch), or load a RobustBench zoo model by "
            "name (--robustbench NAME) from RobustBench's cache layout, downloading it when missing."
        ),
    )
    p.add_argument("src", type=Path, nargs="?",
                   help="the checkpoint file (.pt/.pth/.pth.tar/.ckpt/.bin/.safetensors, robustness' checkpoint.pt.best)")
    p.add_argument("--robustbench", metavar="NAME",
                   help="a RobustBench zoo name, e.g. Carmon2019Unlabeled (see `python -m engine zoo`)")
    p.add_argument("--threat", default="Linf", help="RobustBench threat model: Linf, L2 or corruptions (default Linf)")
    p.add_argument("--model-dir", type=Path,
                   help="RobustBench's model_dir: files are DIR/<dataset>/<threat>/<NAME>.pt (default ./models)")
    p.add_argument("--no-download", action="store_true", help="never download; fail when the RobustBench file is missing")
    p.add_argument("--arch", help="architecture of FILE: engine.models.ARCHITECTURES, torchvision:NAME, timm:NAME, "
                                  "or with --format robustness its own names (resnet18, resnet50, ...)")
    p.add_argument("--dataset", required=True, help="dataset the model was trained on (cifar10, cifar100, imagenet, ...)")
    p.add_argument("--format", default="auto", dest="fmt",
                   choices=["auto", "plain", "torchvision", "timm", "robustness", "robustbench"])
    p.add_argument("--arch-kwargs", default="{}", help='JSON object of architecture options, e.g. \'{"width": 2}\'')
    p.add_argument("--normalization", metavar="MEAN,..;STD,..|none",
                   help="input normalisation inside the model, e.g. '0.4914,0.4822,0.4465;0.2471,0.2435,0.2616', or "
                        "'none'; default: the file's own, else the architecture's documented one, else the dataset's")
    p.add_argument("--name", help="name of the new checkpoint (default: the file's stem or the RobustBench name)")
    p.add_argument("--out-dir", type=Path, help="where to save (default: the checkpoints folder)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing checkpoint of that name (default: pick a free name, NAME-2, ...)")
    p.add_argument("--allow-pickle", action="store_true",
                   help="DANGEROUS: allow arbitrary unpickling (runs code from the file); only for files you trust")
    p.set_defaults(func=import_model)

    p = sub.add_parser("zoo", help="list RobustBench's model zoo: which entries RobustScope loads, leaderboard figures")
    p.add_argument("--dataset", choices=["cifar10", "cifar100", "imagenet"], help="only this dataset")
    p.add_argument("--threat", help="only this threat model (Linf, L2, corruptions)")
    p.add_argument("--all", action="store_true", help="also list entries RobustScope cannot load, with the reason")
    p.add_argument("--leaderboard", action="store_true",
                   help="our stored AutoAttack figures of imported zoo models beside RobustBench's (evaluate --zoo)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=list_zoo)


def _summary(info) -> dict:
    """One row of the listing: name, path and the card's headline fields."""
    card = info.card
    norm, eps = card.training.threat() if card is not None else (None, None)
    return {
        "name": info.name,
        "path": str(info.path),
        "dataset": card.dataset if card else None,
        "arch": card.arch if card else None,
        "method": card.training.method if card else None,
        "eps": eps,  # only for adversarial training: a standard config's default ε is not shown
        "norm": norm,
        "clean_acc": card.metrics.clean_acc if card else None,
        "robust_acc": card.metrics.robust_acc if card else None,
        "under": card.metrics.attack.label() if card and card.metrics.attack else None,
        "error": getattr(info, "error", None),
    }


def list_models(args: argparse.Namespace) -> int:
    """Print the checkpoints found under the roots, as JSON or a table (``--layers P``: P's layers)."""
    if args.layers:
        return print_layers(args.layers, args.json)
    infos = ckpt.list_checkpoints(args.root)
    if args.json:
        print_json([dict(_summary(i), card=i.card.to_dict() if i.card else None) for i in infos])
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


def print_layers(path: str, as_json: bool) -> int:
    """Print the hookable layers of the checkpoint at ``path``: dotted name, module type and the
    output shape of one image (``engine.models.list_layers``)."""
    from engine.models import default_layers, list_layers

    model = ckpt.load(path).model
    layers, default = list_layers(model), set(default_layers(model))
    if as_json:
        print_json([{"name": info.name, "type": info.kind, "output_shape": info.output_shape,
                     "default": info.name in default} for info in layers])
        return 0
    for info in layers:
        shape = "×".join(map(str, info.output_shape)) if info.output_shape else "-"
        print(f"{info.name:<40} {info.kind:<18} {shape:<14}{'  (default)' if info.name in default else ''}")
    return 0


def _cell(value) -> str:
    """Format a table cell (floats to 4 significant digits, None as '-')."""
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class StderrProgress:
    """A one-line download progress bar on stderr (``progress(done, total)``)."""

    def __init__(self, label: str, stream=None):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self._last = -1.0

    def __call__(self, done: int, total: int | None) -> None:
        mib = done / (1 << 20)
        if total:
            pct = 100.0 * done / total
            if pct - self._last < 0.5 and done < total:
                return
            self._last = pct
            width = 30
            filled = int(width * done / total)
            text = f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {mib:.1f}/{total / (1 << 20):.1f} MiB {pct:5.1f}%"
        else:
            if mib - self._last < 1.0:
                return
            self._last = mib
            text = f"\r{self.label} {mib:.1f} MiB"
        self.stream.write(text)
        self.stream.flush()

    def finish(self) -> None:
        if self._last >= 0:
            self.stream.write("\n")
            self.stream.flush()


def _out_folder(args: argparse.Namespace) -> Path:
    out_dir = args.out_dir or ckpt.checkpoints_root()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InvalidParameterError(f"cannot create the output folder {out_dir}: {exc.strerror or exc}") from None
    return out_dir


def _report_name(wanted: str, saved: Path, overwrite: bool) -> None:
    if saved.stem != wanted:
        print(f"a checkpoint named {wanted!r} already exists; saved as {saved.stem!r} (use --overwrite to replace it)",
              file=sys.stderr)
    elif overwrite:
        print(f"saved as {saved.stem!r} (replacing any checkpoint of that name)", file=sys.stderr)


def import_model(args: argparse.Namespace) -> int:
    """Import a foreign checkpoint (or a RobustBench zoo model) and save it in RobustScope's format."""
    from engine.checkpoints import importers
    from engine.fileio import check_name, free_stem

    try:
        arch_kwargs = json.loads(args.arch_kwargs)
    except json.JSONDecodeError as exc:
        raise InvalidParameterError(f"--arch-kwargs is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidParameterError("--arch-kwargs is nested too deeply; give a flat JSON object") from None
    if not isinstance(arch_kwargs, dict):
        raise InvalidParameterError("--arch-kwargs must be a JSON object, e.g. '{\"width\": 2}'")
    importers.parse_normalization(args.normalization)  # refuse a bad spelling before any work
    if args.name is not None:
        check_name(args.name, "--name")
    if args.robustbench:
        if args.src is not None:
            raise InvalidParameterError("give either FILE or --robustbench NAME, not both")
        return _import_robustbench(args)
    if args.src is None:
        raise InvalidParameterError("give the checkpoint FILE to import, or --robustbench NAME")
    if not args.arch:
        raise InvalidParameterError("--arch is required when importing a FILE (the architecture whose keys it uses)")
    if args.allow_pickle:
        print("warning: --allow-pickle lets the file run arbitrary code while loading", file=sys.stderr)
    wanted = args.name or importers.default_stem(args.src.name)
    check_name(wanted, "checkpoint name (from the file name; give --name)")
    loaded = ckpt.import_checkpoint(args.src, args.arch, args.dataset, fmt=args.fmt, allow_pickle=args.allow_pickle,
                                    arch_kwargs=arch_kwargs, normalization=args.normalization)
    stem = free_stem(_out_folder(args), wanted, (".safetensors", ".json"), overwrite=args.overwrite)
    saved = importers.save_imported(loaded, stem)
    _report_name(wanted, saved.path, args.overwrite)
    print(saved.path)
    return 0


def _import_robustbench(args: argparse.Namespace) -> int:
    from engine.checkpoints import robustbench

    if args.arch or args.arch_kwargs.strip() not in ("", "{}"):
        raise InvalidParameterError("--arch/--arch-kwargs do not apply to --robustbench: the zoo table gives the architecture")
    wanted = args.name or args.robustbench
    if args.allow_pickle:
        print("warning: --allow-pickle lets the file run arbitrary code while loading", file=sys.stderr)
    bar = StderrProgress(f"downloading {args.robustbench}")
    try:
        saved = robustbench.import_robustbench(
            args.robustbench, args.dataset, args.threat, args.model_dir, out_dir=_out_folder(args), save_as=wanted,
            overwrite=args.overwrite, download=not args.no_download, normalization=args.normalization, progress=bar,
            allow_pickle=args.allow_pickle,
        )
    finally:
        bar.finish()
    _report_name(wanted, saved.path, args.overwrite)
    print(saved.path)
    return 0


def print_leaderboard(dataset: str | None, threat: str | None, as_json: bool) -> int:
    """The leaderboard of our stored zoo evaluations (``engine.analysis.zoo.leaderboard``)."""
    from engine.analysis.zoo import leaderboard

    rows = leaderboard(dataset=dataset, threat=threat)
    if as_json:
        print_json(rows)
        return 0
    for row in rows:
        flags = f"  flags: {'; '.join(row['flags'])}" if row["flags"] else ""
        print(f"{row['name']:<44} clean {_cell(row['clean_acc'])} (reported {_cell(row['reported_clean_acc'])})  "
              f"AutoAttack {_cell(row['robust_acc'])} (reported {_cell(row['reported_autoattack_acc'])}, "
              f"Δ {_cell(row['difference'])}) on {row['n']} images{flags}")
    print(f"{len(rows)} evaluated zoo model(s); `python -m engine evaluate --zoo DATASET/THREAT --background` "
          "adds more", file=sys.stderr)
    return 0


def list_zoo(args: argparse.Namespace) -> int:
    """Print RobustBench's zoo as our table records it (``--leaderboard``: our figures beside it)."""
    from engine.checkpoints import robustbench

    threat = robustbench._check_choice(args.threat, robustbench.THREATS, "threat model") if args.threat else None
    if args.leaderboard:
        return print_leaderboard(args.dataset, threat, args.json)
    entries = robustbench.zoo_entries(args.dataset, threat)
    rows = []
    for e in entries:
        board = e.leaderboard or {}
        loadable = e.supported and robustbench.arch_available(e.arch)
        if not (loadable or args.all):
            continue
        rows.append({
            "name": e.name, "dataset": e.dataset, "threat": e.threat, "arch": e.arch, "arch_kwargs": e.arch_kwargs,
            "loads": loadable, "why_not": None if loadable else (e.unsupported or f"architecture {e.arch} is not registered"),
            "clean_acc": board.get("clean_acc"),
            "autoattack_acc": board.get("autoattack_acc", board.get("corruptions_acc")),
            "eps": board.get("eps_text"),
        })
    if args.json:
        print_json(rows)
        return 0
    for row in rows:
        figures = f"{_cell(row['clean_acc'])} / {_cell(row['autoattack_acc'])}"
        what = row["arch"] if row["loads"] else f"NOT LOADABLE: {row['why_not']}"
        print(f"{row['dataset']:<9} {row['threat']:<11} {row['name']:<44} {figures:<15} {what}")
    loadable = sum(r["loads"] for r in rows)
    print(f"{loadable} loadable of {len(entries)} entries (clean / AutoAttack or corruptions accuracy from the leaderboard)",
          file=sys.stderr)
    return 0
