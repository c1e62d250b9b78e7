"""A repeated analysis command answers from the result store at once: no torch import, no dataset
read (the stored request proves its image count was valid), under 3 s (issue: "The foreground
command with an identical request prints the stored result with "cached": true in its JSON, in
under 3 s")."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
#: run ``python -m engine ARGV`` and say whether torch was imported (the last line of stdout)
RUNNER = ("import sys, runpy; sys.argv = ['engine', *sys.argv[1:]]\n"
          "try:\n    runpy.run_module('engine', run_name='__main__')\n"
          "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
          "print('TORCH', 'torch' in sys.modules)")


def commands(paths: dict, out: Path) -> dict[str, list[str]]:
    std, rob = str(paths["standard"]), str(paths["robust"])
    attack = ["--attack", "pgd", "--steps", "2", "--eps", "0.03"]
    return {
        "evaluate": ["evaluate", "--checkpoint", rob, "--dataset", "shapes", "--n", "8", "--attack", "pgd",
                     "--steps", "2", "--json"],
        "attack": ["attack", "--checkpoint", std, "--compare", rob, "--n", "6", *attack, "--out",
                   str(out / "adv.npz"), "--json"],
        "sweep": ["sweep", "--checkpoint", std, "--checkpoint", rob, "--n", "6", "--eps", "0", "0.03",
                  "--attack", "pgd", "--steps", "2", "--json"],
        "transfer": ["transfer", "--checkpoint", std, "--checkpoint", rob, "--n", "6", *attack, "--json"],
        "tradeoff": ["tradeoff", "--checkpoint", rob, "--checkpoint", std, "--n", "6", "--json"],
    }


def engine_run(argv: list[str], env: dict, quiet_torch: bool = False) -> tuple[dict, bool, float]:
    """Run the command in a fresh interpreter: its JSON, whether torch was imported, wall seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUNNER, *argv], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert done.returncode == 0, done.stderr
    body, torch_line = done.stdout.rsplit("TORCH", 1)
    return json.loads(body), torch_line.strip() == "True", seconds


@pytest.mark.parametrize("command", ["evaluate", "attack", "sweep", "transfer", "tradeoff"])
def test_a_stored_answer_prints_without_torch_or_the_dataset(command, tiny_checkpoints, tmp_path):
    argv = commands(tiny_checkpoints, tmp_path)[command]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    first, first_torch, _ = engine_run(argv, env)
    assert first["cached"] is False and first_torch
    if command == "attack":
        written = dict(np.load(tmp_path / "adv.npz"))
        (tmp_path / "adv.npz").unlink()
    second, second_torch, seconds = engine_run(argv, env)
    assert second["cached"] is True and not second_torch
    assert {k: v for k, v in second.items() if k not in ("cached", "out")} == \
        {k: v for k, v in first.items() if k not in ("cached", "out")}
    if command == "attack":  # the NPZ written from the store equals the one written after crafting
        again = dict(np.load(tmp_path / "adv.npz"))
        assert sorted(again) == sorted(written)
        assert all(np.array_equal(again[k], written[k]) for k in written)
    assert seconds < 3.0, f"a stored {command} took {seconds:.2f} s to print"


def test_stored_npz_arrays_equal_the_decoded_results(tiny_checkpoints):
    from engine.analysis.kinds.craft import CraftRequest
    from engine.analysis import ModelRef, run_analysis
    from engine.analysis.kinds.craft import example_arrays
    from engine.attacks.export import result_arrays

    request = CraftRequest(models=(ModelRef.of(str(tiny_checkpoints["standard"])),), dataset="shapes",
                           attack="pgd", params=(("eps", 0.03), ("steps", 2)), n=5).validate()
    result = run_analysis(request)
    comparison = result.value()
    expected = result_arrays(comparison.result, comparison.x)
    got = example_arrays(result)
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert np.array_equal(got[name], expected[name]), name
