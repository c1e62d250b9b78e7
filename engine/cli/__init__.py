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

from engine.errors import RobustScopeError


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with every discovered sub-command registered."""
    parser = argparse.ArgumentParser(prog="python -m engine", description="RobustScope engine CLI")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def print_json(obj) -> None:
    """Print ``obj`` as indented JSON on stdout (the CLI's machine-readable output)."""
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; user errors print ``error: ...`` and exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command as typed (for provenance)
    try:
        return int(args.func(args) or 0)
    except RobustScopeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
