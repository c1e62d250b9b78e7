"""``cka``: layer-by-layer CKA maps (A×A, B×B, A×B) between two checkpoints, clean or adversarial,
or the maps of another similarity measure (``--measure``; B×A too for an asymmetric one); with
``--run``, each layer's CKA across the kept epoch snapshots of one or two training runs. Both are
stored analyses (``cka``, ``cka_epochs``): ``--background``, ``--no-cache``, ``"cached": true``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from engine.catalogue import BN_BRANCHES, CKA_KERNELS, CKA_POOLINGS, CKA_REFERENCES
from engine.cli import MAX_BATCH, add_analysis_options, check_int, warn_result_notes
from engine.errors import InvalidParameterError


def register(sub) -> None:
    """Add the ``cka`` command."""
    p = sub.add_parser("cka", help="layer-by-layer CKA within and across two checkpoints, or across a run's epochs")
    p.add_argument("--a", help="checkpoint A (stem, .safetensors or .json)")
    p.add_argument("--b", help="checkpoint B (may be A again with another --b-branch)")
    p.add_argument("--a-branch", default="main", choices=list(BN_BRANCHES), help="BatchNorm branch of A (AdvProp models)")
    p.add_argument("--b-branch", default="main", choices=list(BN_BRANCHES), help="BatchNorm branch of B (AdvProp models)")
    p.add_argument("--run", action="append", metavar="JOB_OR_DIR",
                   help="instead of --a/--b: a training run (job id or run folder) whose kept epoch snapshots "
                        "are compared with each other; give two to compare a standard and a robust run")
    p.add_argument("--reference", default="final", choices=list(CKA_REFERENCES),
                   help="with --run: each epoch vs the final one, or vs the previous one")
    p.add_argument("--dataset", help="dataset name (default: A's card dataset)")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--n", type=int, default=2000, help="number of images (default 2000)")
    p.add_argument("--batch-size", type=int, default=200, help="images per minibatch (>= 4)")
    p.add_argument("--layers", nargs="+", help="layers of A (and of B unless --layers-b); default: main blocks")
    p.add_argument("--layers-b", nargs="+", help="layers of B (default: --layers, else B's main blocks)")
    p.add_argument("--kernel", default="linear", choices=list(CKA_KERNELS))
    p.add_argument("--sigma-fraction", type=float, help="RBF bandwidth as a fraction of the median distance")
    p.add_argument("--pooling", default="flatten", choices=list(CKA_POOLINGS))
    p.add_argument("--inputs", default="clean", choices=["clean", "adv"])
    p.add_argument("--attack", default="pgd", help="attack for --inputs adv (engine.attacks name)")
    p.add_argument("--eps", type=float, help="attack ε (default: the dataset's usual one)")
    p.add_argument("--steps", type=int, help="attack steps (PGD)")
    p.add_argument("--craft-on", default="a", choices=["a", "b"], help="model the attack is crafted on")
    p.add_argument("--measure", default="cka", choices=list(_measures()),
                   help="similarity measure of the maps (default cka): " +
                        "; ".join(f"{name}: {text}" for name, text in _measures().items()).replace("%", "%%"))
    p.add_argument("--k", type=int, help="neighbours of --measure mknn (default 10)")
    p.add_argument("--device", default="auto")
    add_analysis_options(p)
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--json", action="store_true", help="print the three maps as JSON")
    out.add_argument("--out", help="write the maps to this CSV file (long format, atomic)")
    p.set_defaults(func=run_cka)


def _measures() -> dict[str, str]:
    """The measures ``--measure`` takes, name -> one line (torch-free)."""
    from engine.analysis.kinds.cka import MEASURE_NAMES

    return MEASURE_NAMES


def _progress(done: int, total: int) -> None:
    """Redraw one progress line on stderr."""
    print(f"\rcka: {done}/{total} images", end="" if done < total else "\n", file=sys.stderr, flush=True)


def comparison_rows(comparison) -> list[dict]:
    """Long-format rows ``{map, row, col, cka}`` of every map in a :class:`CKAComparison`."""
    maps = {"AxA": comparison.within_a, "BxB": comparison.within_b, "AxB": comparison.across}
    return [
        {"map": key, "row": r, "col": c, "cka": float(result.matrix[i, j])}
        for key, result in maps.items() if result is not None
        for i, r in enumerate(result.rows) for j, c in enumerate(result.cols)
    ]


def write_rows_atomic(rows: list[dict], path: str | os.PathLike, fields: list[str]) -> Path:
    """Write ``rows`` as CSV to ``path`` atomically (a regular file only; folders are created)."""
    import csv
    import io

    from engine.fileio import atomic_write_text

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(target, text.getvalue(), what="CSV file")


def cka_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.CKARequest` of ``cka --a A --b B ...`` (no torch needed)."""
    from engine.analysis import ModelRef
    from engine.analysis.kinds.cka import CKARequest

    return CKARequest.make(
        a=ModelRef.of(args.a, args.a_branch), b=ModelRef.of(args.b, args.b_branch), dataset=args.dataset, split=args.split, n=args.n, batch_size=args.batch_size,
        layers_a=tuple(args.layers) if args.layers else None,
        layers_b=tuple(args.layers_b or args.layers) if (args.layers_b or args.layers) else None,
        kernel=args.kernel, sigma_fraction=args.sigma_fraction, pooling=args.pooling, inputs=args.inputs,
        attack=args.attack, eps=args.eps, steps=args.steps, craft_on=args.craft_on, measure=args.measure,
        **({} if args.k is None else {"k": args.k}),
    )


def run_cka(args: argparse.Namespace) -> int:
    """Answer the request from the result store or compute the CKA maps; print JSON or write a CSV
    (``--background``: queue it as a job)."""
    from engine.cli import run_request

    if args.n is None or args.n < 4:
        raise InvalidParameterError(f"--n must be at least 4, got {args.n}")
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)  # the lower bound (4) is the engine's
    if args.run:
        if args.measure != "cka" or args.k is not None:
            raise InvalidParameterError("--run compares epochs with CKA only; leave out --measure and --k")
        return run_epochs(args)
    if args.k is not None and args.measure != "mknn":
        raise InvalidParameterError("--k applies to --measure mknn only")
    if not args.a or not args.b:
        raise InvalidParameterError("give two checkpoints (--a and --b) or one or two training runs (--run)")

    def write_csv(result) -> int:
        from engine.analysis.kinds.cka import measure_of, rows

        path = write_rows_atomic(rows(result), args.out, ["map", "row", "col", measure_of(result)])
        print(f"wrote {path} ({result.meta['n']} images, {result.seconds:.1f} s"
              f"{', stored earlier' if result.cached else ''})", file=sys.stderr)
        return 0

    return run_request(cka_request(args), args, "cka", out_handler=write_csv if args.out else None)


def run_folder(spec: str) -> Path:
    """A run folder from ``--run``: a job id (its run in the job store) or a folder."""
    from engine.jobs import JobStore

    if spec.isdigit():
        folder = JobStore().job_dir(int(spec)) / "run"
    else:
        folder = Path(spec)
    if not folder.is_dir():
        raise InvalidParameterError(f"no training run at {folder} (give a job id or a run folder)")
    return folder


def run_snapshots(folder: Path) -> tuple[tuple, tuple[int, ...]]:
    """``(ModelRefs, epochs)`` of the epoch snapshots a run folder keeps (at least two)."""
    from engine.analysis import ModelRef
    from engine.training.state import list_snapshots

    snapshots = list_snapshots(folder)
    if len(snapshots) < 2:
        raise InvalidParameterError(
            f"{folder} keeps {len(snapshots)} epoch checkpoint(s); train with \"snapshot_every\": k to keep more"
        )
    return tuple(ModelRef.of(stem) for _, stem in snapshots), tuple(epoch for epoch, _ in snapshots)


def epochs_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.CKARunRequest` of ``cka --run R [--run R2] ...``: each run's kept
    snapshots (path + sha256); the dataset defaults to the first run's final snapshot's."""
    from engine.analysis.kinds.cka_epochs import CKARunRequest

    if len(args.run) > 2:
        raise InvalidParameterError("give at most two runs (e.g. a standard and a robust one)")
    runs = [run_snapshots(run_folder(spec)) for spec in args.run]
    layers = {"a": args.layers, "b": args.layers_b or args.layers}
    fields = {}
    for slot, (refs, epochs) in zip("ab", runs):
        fields |= {f"run_{slot}": refs, f"epochs_{slot}": epochs,
                   f"layers_{slot}": tuple(layers[slot]) if layers[slot] else None}
    return CKARunRequest.make(dataset=args.dataset, reference=args.reference, split=args.split, n=args.n,
                              batch_size=args.batch_size, kernel=args.kernel, pooling=args.pooling, **fields)


def run_epochs(args: argparse.Namespace) -> int:
    """``--run``: per-layer CKA between the kept epoch snapshots of each run (a stored analysis:
    ``--background``, ``--no-cache``; ``--out`` writes the long-format CSV)."""
    from engine.cli import run_request

    def write_csv(result) -> int:
        from engine.analysis.kinds.cka_epochs import rows

        warn_result_notes(result)
        path = write_rows_atomic(rows(result), args.out, ["run", "epoch", "layer", "cka"])
        print(f"wrote {path} ({len(result.meta['runs'])} run(s), {result.seconds:.1f} s"
              f"{', stored earlier' if result.cached else ''})", file=sys.stderr)
        return 0

    return run_request(epochs_request(args), args, "cka", out_handler=write_csv if args.out else None)
