"""Command-line interface: ``python -m engine <command> ...``.

Each module in this package that defines ``register(subparsers)`` contributes one or more
sub-commands; it adds a parser and sets ``func=callable(args) -> int`` on it. Modules are found
automatically, so a new command is one new file.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys

from engine.catalogue import BN_BRANCHES
from engine.errors import InvalidParameterError, RobustScopeError, StorageError, storage_error, storage_fault

#: largest ``--batch-size`` any command accepts (bounds the memory of one forward/backward pass)
MAX_BATCH = 4096
#: widest PNG a command writes, in pixels (bounds ``--scale`` upscaling)
MAX_PNG_SIDE = 4096


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Return the top-level parser with every discovered sub-command registered.

    Args:
        only: register only the module of this name (``cka`` for ``python -m engine cka ...``):
            :func:`main` uses it when the command names a module, so running one command does not
            import every other command's module. Command modules keep heavy imports (torch) inside
            their functions so that building the full parser (``--help``) stays fast.
    """
    parser = argparse.ArgumentParser(prog="python -m engine", description="RobustScope engine CLI")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if only is not None and info.name != only:
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def _static_commands() -> list[tuple[str, str | None]] | None:
    """``(name, help)`` of every command, read from the command modules' source with ``ast``
    (nothing imported), or None when some module's ``register`` cannot be read that way (a
    computed name or help text): then the modules are imported as usual."""
    import ast
    from pathlib import Path

    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        try:
            tree = ast.parse((Path(__path__[0]) / f"{info.name}.py").read_text(encoding="utf-8"))
        except (OSError, SyntaxError, ValueError):
            return None
        register = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "register"), None)
        if register is None or not register.args.args:
            continue
        holder = register.args.args[0].arg
        for node in ast.walk(register):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "add_parser"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == holder):
                continue
            name = node.args[0] if node.args else None
            text = next((k.value for k in node.keywords if k.arg == "help"), None)
            if not (isinstance(name, ast.Constant) and isinstance(name.value, str)) or \
                    (text is not None and not (isinstance(text, ast.Constant) and isinstance(text.value, str))):
                return None
            found.append((name.value, None if text is None else text.value))
    return found or None


def _parser_for(argv: list[str]) -> argparse.ArgumentParser:
    """The parser for ``argv``: only the command's own module when the first argument names one
    that registers that command; for ``--help`` (or no command) a listing read from the modules'
    source without importing them; else every module."""
    first = argv[0] if argv else None
    if first is None or first in ("-h", "--help"):
        commands = _static_commands()
        if commands:
            parser = argparse.ArgumentParser(prog="python -m engine", description="RobustScope engine CLI")
            sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
            for name, text in commands:
                sub.add_parser(name, help=text, add_help=False)  # listing only: the command's own
            return parser                                       # module parses its options
    if first and not first.startswith("-") and first.isidentifier() and \
            any(info.name == first for info in pkgutil.iter_modules(__path__)):
        parser = build_parser(only=first)
        commands = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
        if first in commands:
            return parser
    return build_parser()


def print_json(obj) -> None:
    """Print ``obj`` as indented JSON on stdout (the CLI's machine-readable output)."""
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def add_branch_option(parser, flag: str = "--bn-branch") -> None:
    """The BatchNorm-branch option of commands that evaluate a model (AdvProp models have two)."""
    parser.add_argument(flag, default="main", choices=list(BN_BRANCHES),
                        help="BatchNorm branch of AdvProp (dual-BN) models: main (clean, the default) or aux "
                             "(the adversarial branch)")


def warn(message: str) -> None:
    """Print ``warning: message`` on stderr (the CLI's notices never go to stdout)."""
    print(f"warning: {message}", file=sys.stderr)


def warn_result_notes(result) -> None:
    """Warn what a stored analysis result says about its inputs (its metadata's ``notes``: the
    models' classes or training set differ from the dataset's ...), for ``out_handler`` callers
    of :func:`run_request` that print the result themselves."""
    for note in result.meta.get("notes", []):
        warn(note)


def stderr_progress(label: str):
    """A ``progress(done, total)`` callback that redraws one line on stderr."""
    def update(done: int, total: int) -> None:
        print(f"\r{label}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    return update


def add_analysis_options(parser) -> None:
    """``--background`` and ``--no-cache``: the options of every command that runs an
    ``engine.analysis`` request (its result is stored under ``<runs>/results``)."""
    parser.add_argument("--background", action="store_true",
                        help="queue it as a job instead of computing here (with --json prints {\"job\": ID}, or "
                             "{\"jobs\": [ID, ...]} for a command of several analyses); then "
                             "`python -m engine jobs wait ID` and `jobs result ID`")
    parser.add_argument("--no-cache", action="store_true",
                        help="compute again even when the same request's result is stored (and replace it)")


def open_job_store(runs=None):
    """The job store of ``runs`` (default ``$ROBUSTSCOPE_RUNS``), after printing its notices (a
    damaged store was moved aside) as warnings on stderr."""
    from engine.jobs import JobStore

    store = JobStore(runs)
    for notice in store.notices():
        warn(f"{notice} (`python -m engine jobs dismiss` stops this warning)")
    return store


def queue_request(request, args) -> dict:
    """Queue ``request`` as a background job (``--background``; ``--no-cache``, ``--device``) and
    say how to follow it on stderr; returns the JSON ``{"job", "status", "kind", "result"}``."""
    from engine.jobs import submit

    job = submit(request, use_cache=not args.no_cache, device=getattr(args, "device", "auto"),
                 submitter="cli", jobs=open_job_store())
    if job.status != "done":
        print(f"queued job {job.id}: `python -m engine jobs wait {job.id}` then "
              f"`python -m engine jobs result {job.id} --json`", file=sys.stderr)
    return {"job": job.id, "status": job.status, "kind": job.kind, "result": job.result_key}


def is_stored(request) -> bool:
    """Whether the result store holds ``request``'s result (then the request's image count was
    valid, and the answer needs neither torch nor the dataset)."""
    from engine.analysis import ResultStore, cached_result

    found, note = cached_result(request.key(), ResultStore())
    if note:
        warn(note)   # a damaged entry was moved aside: the run that follows recomputes it
    return found is not None


def needs_checking(request, args) -> bool:
    """Whether a command must check ``request`` against the data (split sizes) before running it:
    unless its result is stored and will be used (no ``--no-cache``)."""
    return bool(getattr(args, "no_cache", False)) or not is_stored(request)


def run_request(request, args, label: str, out_handler=None, loaded=()) -> int:
    """Run an analysis request for a CLI command: queue it (``--background``) or answer it from
    the result store / compute it here, then print it (``--json``) or hand it to ``out_handler``.

    ``loaded``: checkpoints the command already loaded (used instead of loading them again).
    Torch is imported only when something is computed, so a stored result prints at once.
    """
    from engine.analysis import run_analysis

    device = getattr(args, "device", "auto")
    if getattr(args, "background", False):
        print_json(queue_request(request, args))
        return 0
    result = run_analysis(request, progress=stderr_progress(label), use_cache=not args.no_cache, device=device,
                          loaded=loaded)
    if out_handler is not None:
        for note in result.notes:
            warn(note)
        return out_handler(result)
    return emit(result, args)


def emit(result, args, notes=()) -> int:
    """Print or write ``result`` as ``--json`` / ``--out`` / a summary (``engine.cli.jobs.print_result``)."""
    import json
    from pathlib import Path

    from engine.analysis import get_analysis
    from engine.analysis.base import finite
    from engine.fileio import atomic_write_bytes, atomic_write_text

    for note in list(notes) + list(result.notes) + list(result.meta.get("notes", [])) + \
            list(result.meta.get("warnings", [])):
        warn(note)
    body = {**get_analysis(result.kind).report(result), "cached": result.cached, "result": result.key}
    out = getattr(args, "out", None)
    if out:
        target = Path(out)
        suffix = target.suffix.lower()
        if suffix == ".npz":
            import io

            import numpy as np

            buffer = io.BytesIO()
            np.savez(buffer, **result.arrays)
            atomic_write_bytes(target, buffer.getvalue(), what="result arrays")
        elif suffix == ".csv":
            import csv

            rows = get_analysis(result.kind).rows
            if rows is None:
                raise InvalidParameterError(f"{result.kind} results have no CSV form; use --out FILE.json or .npz")
            atomic_write_text(target, _csv_text(rows(result), csv), what="CSV file")
        else:
            atomic_write_text(target, json.dumps(finite(body), indent=2, default=str) + "\n", what="result JSON")
        print(f"wrote {target} (result {result.key}, {'stored earlier' if result.cached else 'computed'})",
              file=sys.stderr)
        return 0
    if getattr(args, "json", False):
        print_json(finite(body))
        return 0
    print(f"{result.request.describe()}\nresult {result.key} · {'stored earlier' if result.cached else 'computed'} "
          f"in {result.seconds:.1f} s · engine {result.version}\n(--json prints every number; --out F.json|.npz writes them)")
    return 0


def _csv_text(rows: list[dict], csv) -> str:
    import io

    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else [])
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def read_train_config(path: str):
    """The validated ``TrainConfig`` in JSON file ``path`` (``train`` and ``jobs submit``)."""
    from pathlib import Path

    from engine.training import TrainConfig

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidParameterError(f"cannot read config file {path!r}: {exc}") from exc
    return TrainConfig.from_json(text).validate()


def require_compatible(checkpoints, spec, classes: bool = True) -> list[str]:
    """Refuse a dataset the checkpoints cannot run on, before any model sees an image.

    Args:
        checkpoints: loaded checkpoints (``.card``, ``.model``, ``.path``).
        spec: the dataset's ``DatasetSpec``, a loaded dataset (its ``.spec``: right for
            ``imagefolder`` and sized ``shapes``) or a registry name.
        classes: a different class count is an error (``True``: the command uses the labels), or
            only a warning (``False``: label-free commands such as ``cka``).

    Returns:
        The warnings printed on stderr (class count or training set differ).

    Raises:
        InvalidParameterError: an input-shape mismatch (or a class-count one when ``classes``).
    """
    from engine.data import get_spec
    from engine.selection import check_compatible

    if isinstance(spec, str):
        spec = get_spec(spec)
    spec = getattr(spec, "spec", None) or spec  # a loaded dataset carries its spec
    notes = check_compatible(checkpoints, spec, classes=classes)
    for note in notes:
        warn(note)
    return notes


def check_images(args, dataset: str, split: str = "test", offset: int = 0) -> None:
    """Refuse ``--n`` (from ``offset``) beyond the split's size at once, naming the size, so a
    background job is refused before it is queued."""
    from engine import data as edata

    size = len(edata.load_dataset(dataset, split=split))
    check_int("--offset", offset, 0, size - 1, f"the {dataset} {split} split's size")
    check_int("--n", args.n, 1, size - offset, f"the {dataset} {split} split's size")


def check_int(flag: str, value, low: int = 1, high: int | None = None, why: str = "") -> int:
    """``value`` if it is an integer in [low, high], else an InvalidParameterError naming ``flag``
    (``why`` says where ``high`` comes from, e.g. "the dataset's size")."""
    from engine.errors import InvalidParameterError

    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if not ok or (high is not None and value > high):
        bound = f"in [{low}, {high}]" + (f" ({why})" if why else "") if high is not None else f">= {low}"
        raise InvalidParameterError(f"{flag} must be an integer {bound}, got {value!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; user errors print ``error: ...`` and exit 2."""
    typed = list(sys.argv[1:] if argv is None else argv)
    parser = _parser_for(typed)
    args = parser.parse_args(typed)
    args.argv = typed  # the command as typed (for provenance)
    try:
        return int(args.func(args) or 0)
    except StorageError as exc:  # the environment, not the input: exit 1
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except RobustScopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not storage_fault(exc):
            raise
        print(f"error: {storage_error(exc, f'python -m engine {args.command} could not finish')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
