"""Unit statistics as a stored analysis (``units``): request round trip, the stored result equals
the direct engine call, the CLI answers from the store and queues with ``--background``."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.analysis import ModelRef, get_analysis, run_analysis
from engine.analysis.kinds.units import UnitsRequest
from engine.errors import InvalidParameterError
from engine.jobs import JobStore, run_worker


pytestmark = pytest.mark.usefixtures("no_autostart")


def units_request(tiny_checkpoints, **kw) -> UnitsRequest:
    refs = tuple(ModelRef.of(tiny_checkpoints[k]) for k in ("standard", "robust"))
    return UnitsRequest(**{"models": refs, "dataset": "shapes", "n": 24, "layers": ("net.block1", "net.block2"),
                           "top_k": 5, "batch_size": 7, **kw}).validate()


def test_units_request_round_trips_and_refuses_bad_values(tiny_checkpoints):
    request = units_request(tiny_checkpoints)
    assert UnitsRequest.from_json(request.to_json()) == request
    assert UnitsRequest.from_json(request.to_json()).key() == request.key()
    for bad in ({"top_k": 25}, {"n": 0}, {"models": ()}, {"batch_size": 0}):
        with pytest.raises(InvalidParameterError):
            units_request(tiny_checkpoints, **bad)


def test_stored_units_equal_the_direct_engine_call_and_are_reused(tiny_checkpoints):
    from engine import data as edata
    from engine.checkpoints import load
    from engine.generalisation import compare_units

    request = units_request(tiny_checkpoints)
    first = run_analysis(request)
    assert first.cached is False
    again = run_analysis(request)
    assert again.cached is True and again.key == first.key
    models = {p.stem: load(p).model for p in (tiny_checkpoints["standard"], tiny_checkpoints["robust"])}
    images, labels = edata.take(edata.load_dataset("shapes", split="test"), 24)
    direct = compare_units(models, images, labels, ["net.block1", "net.block2"], top_k=5, batch_size=24)
    decoded = again.value()
    assert list(decoded) == list(direct)
    for name in direct:
        for layer, stats in direct[name].layers.items():
            got = decoded[name].layers[layer]
            np.testing.assert_array_equal(got.top_indices, stats.top_indices)
            np.testing.assert_array_equal(got.distinct_labels, stats.distinct_labels)
            np.testing.assert_allclose(got.roughness, stats.roughness, rtol=1e-6, equal_nan=True)
    report = get_analysis("units").report(again)
    assert {r["model"] for r in report["medians"]} == set(direct)
    assert "robust" in report and report["summary"].startswith("This pair")
    assert len(get_analysis("units").rows(again)) == sum(len(s.roughness) for r in direct.values()
                                                          for s in r.layers.values())


def test_cli_units_answers_from_the_store_and_in_the_background(tiny_checkpoints, capsys):
    from engine.cli import main

    a, b = str(tiny_checkpoints["standard"]), str(tiny_checkpoints["robust"])
    args = ["units", "--checkpoint", a, "--checkpoint", b, "--dataset", "shapes", "--n", "16", "--top-k", "4",
            "--layer", "net.block1", "--json"]
    assert main(args + ["--background"]) == 0
    job_id = json.loads(capsys.readouterr().out)["job"]
    assert run_worker(JobStore(), once=True, lane="analysis") == 1
    assert main(["jobs", "result", str(job_id), "--json"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    foreground = json.loads(capsys.readouterr().out)
    assert foreground["cached"] is True and foreground["layers"] == stored["layers"]
    assert main(args + ["--no-cache"]) == 0
    fresh = json.loads(capsys.readouterr().out)
    assert fresh["cached"] is False and fresh["layers"] == stored["layers"]
    assert main(args[:-1]) == 0 and "net.block1" in capsys.readouterr().out  # the text table
