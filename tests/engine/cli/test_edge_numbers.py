"""Every number checked at the edge (issue 23): absurd counts, ids, ε, steps and sizes typed on the
command line end in ``error: ...`` (exit 2) naming the option's range, before SQLite, NumPy or
torch sees them — never a traceback, an OverflowError or minutes of work."""
from __future__ import annotations

import pytest

from engine.cli import main

HUGE = "9" * 24


def _cases(a: str, b: str, out: str) -> list[tuple[list[str], str]]:
    """(argv, what the message must contain) for checkpoints ``a``, ``b`` and an output folder."""
    npz = f"{out}/a.npz"
    return [
        (["evaluate", "--checkpoint", a, "--n", "-5"], "n must be an integer in [1,"),
        (["evaluate", "--checkpoint", a, "--n", HUGE], "must be an integer in [1,"),
        (["evaluate", "--checkpoint", a, "--n", "8", "--attack", "pgd", "--eps", "nan"], "eps must be a number"),
        (["evaluate", "--checkpoint", a, "--n", "8", "--attack", "pgd", "--eps", "inf"], "eps must be a number"),
        (["evaluate", "--checkpoint", a, "--n", "8", "--attack", "pgd", "--steps", "0"], "steps must be an integer"),
        (["evaluate", "--checkpoint", a, "--n", "8", "--attack", "pgd", "--steps", HUGE], "steps must be an integer"),
        (["evaluate", "--checkpoint", a, "--batch-size", "0"], "--batch-size must be an integer"),
        (["cka", "--a", a, "--b", b, "--n", "0", "--json"], "--n must be at least"),
        (["cka", "--a", a, "--b", b, "--n", "8", "--batch-size", HUGE, "--json"], "--batch-size must be an integer"),
        (["sweep", "--checkpoint", a, "--eps", "0", "--eps", "nan", "--n", "4"], "must be a number"),
        (["attack", "--checkpoint", a, "--offset", "-1", "--out", npz], "offset must be an integer"),
        (["attack", "--checkpoint", a, "--offset", HUGE, "--out", npz], "offset must be an integer"),
        (["attack", "--checkpoint", a, "--target", "99999", "--out", npz], "target must be a class in"),
        (["attack", "--checkpoint", a, "--n", "1", "--attack", "pgd", "--alpha", "nan", "--out", npz], "alpha must be"),
        (["featvis", "--checkpoint", a, "--layer", "net.fc", "--unit", HUGE, "--out", out], "unit must be an integer"),
        (["saliency", "--checkpoint", a, "--index", HUGE, "--out", out], "index must be an integer"),
        (["saliency", "--checkpoint", a, "--index", "-3", "--out", out], "index must be an integer"),
        (["report", "--checkpoint", a, "--n", "4", "--eps", "-1"], "eps must be a number"),
        (["ood", "--checkpoint", a, "--n", HUGE], "n must be an integer"),
        (["activations", "--checkpoint", a, "--n", HUGE, "--json"], "n must be an integer"),
        (["jobs", "wait", HUGE], "no job with id"),
        (["jobs", "result", "-1"], "no job with id"),
        (["jobs", "logs", "0"], "no job with id"),
    ]


def test_absurd_numbers_end_in_one_error_line(tiny_checkpoints, tmp_path, capsys):
    a, b = str(tiny_checkpoints["standard"]), str(tiny_checkpoints["robust"])
    for argv, expected in _cases(a, b, str(tmp_path)):
        rc = main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.split("\n") if line.startswith("error:")]
        assert rc == 2 and len(lines) == 1 and expected in lines[0], (argv, rc, err)
        assert "Traceback" not in err
