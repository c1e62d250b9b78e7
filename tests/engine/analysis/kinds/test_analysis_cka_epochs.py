"""CKA across a training run's epochs as a stored analysis (``cka_epochs``): request round trip and
validation, the stored result equals ``cka_across_epochs`` called directly, a replaced snapshot
misses the store, ``cka --run`` answers from the store, in the background and as CSV, and a stop
stores nothing."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from analysis_helpers import assert_stopping_stores_nothing, background_roundtrip, cli, without
from engine.analysis import ANALYSES, ModelRef, run_analysis
from engine.analysis.kinds.cka_epochs import CKARunRequest
from engine.jobs import submit
from engine.errors import CheckpointError, InvalidParameterError
from engine.jobs import JobStore, run_worker
from factories import snapshot_run

pytestmark = pytest.mark.usefixtures("no_autostart")


@pytest.fixture
def runs(tmp_path):
    """Two runs of three kept epochs each: a "standard" and a "pgd" one (seeded, not trained)."""
    return snapshot_run(tmp_path / "std"), snapshot_run(tmp_path / "rob", method="pgd", seed=1)


def snapshots(folder) -> tuple[tuple[ModelRef, ...], tuple[int, ...]]:
    from engine.training.state import list_snapshots

    found = list_snapshots(folder)
    return tuple(ModelRef.of(stem) for _, stem in found), tuple(epoch for epoch, _ in found)


def epochs_request(runs, **kw) -> CKARunRequest:
    (run_a, epochs_a), (run_b, epochs_b) = snapshots(runs[0]), snapshots(runs[1])
    return CKARunRequest(**{"run_a": run_a, "epochs_a": epochs_a, "run_b": run_b, "epochs_b": epochs_b,
                            "dataset": "shapes", "n": 20, "batch_size": 10, **kw}).validate()


def cli_args(runs, *extra) -> list:
    return ["cka", "--run", runs[0], "--run", runs[1], "--n", "20", "--batch-size", "10", *extra]


# ------------------------------------------------------------------ requests
def test_request_round_trips_and_refuses_bad_values(runs):
    request = epochs_request(runs, layers_a=("net.block1", "net.fc"), reference="consecutive")
    back = CKARunRequest.from_json(request.to_json())
    assert back == request and back.key() == request.key()
    assert ANALYSES["cka_epochs"].request is CKARunRequest and ANALYSES["cka_epochs"].page == "representations"
    assert request.folders() == (str(runs[0]), str(runs[1])) and len(request.model_refs()) == 6
    one = epochs_request(runs, run_b=(), epochs_b=())
    assert len(one.runs()) == 1 and one.key() != request.key() and "std" in one.describe()
    good = request.to_dict()
    for field, value in [("run_a", good["run_a"][:1]), ("epochs_a", [1, 2]), ("epochs_a", [3, 2, 1]),
                         ("epochs_b", [1, 1, 2]), ("run_b", good["run_b"][:1]), ("reference", "middle"),
                         ("n", 3), ("batch_size", 2), ("kernel", "cubic"), ("pooling", "max"), ("layers_a", []),
                         ("split", "val"), ("colour", "red")]:
        with pytest.raises(InvalidParameterError):
            CKARunRequest.from_dict({**good, field: value})
    with pytest.raises(InvalidParameterError, match="second run"):
        CKARunRequest.from_dict({**good, "run_b": [], "epochs_b": [], "layers_b": ["net.fc"]})
    with pytest.raises(InvalidParameterError, match="sha256"):
        CKARunRequest.from_dict({**good, "run_a": [{**good["run_a"][0], "sha256": "abc"}, *good["run_a"][1:]]})


# ------------------------------------------------------------------ the same numbers as the engine
def test_stored_result_equals_the_direct_engine_call(runs):
    import engine
    from engine import data as edata
    from engine.similarity.structure import cka_across_epochs
    from engine.training.state import list_snapshots

    result = run_analysis(epochs_request(runs))
    dataset = edata.load_dataset("shapes", split="test")
    decoded = result.value()
    assert [r.method for r in decoded] == ["standard", "pgd"] and [r.run for r in decoded] == [str(f) for f in runs]
    for folder, stored in zip(runs, decoded):
        direct = cka_across_epochs([(e, engine.load(stem).model) for e, stem in list_snapshots(folder)], dataset,
                                   n=20, batch_size=10)
        np.testing.assert_array_equal(stored.cka.matrix, direct.matrix)
        assert (stored.cka.epochs, stored.cka.layers, stored.cka.n) == (direct.epochs, direct.layers, direct.n)
    body = ANALYSES["cka_epochs"].report(result)
    assert body["dataset"] == "shapes" and body["runs"][1]["matrix"] == decoded[1].cka.matrix.tolist()
    assert list(body["runs"][0]) == ["run", "method", "epochs", "layers", "matrix", "reference", "n", "seconds",
                                     "warnings"]  # the order `cka --run --json` printed
    rows = ANALYSES["cka_epochs"].rows(result)
    assert len(rows) == 2 * 3 * len(decoded[0].cka.layers) and rows[0]["cka"] == decoded[0].cka.matrix[0, 0]


def test_same_request_is_cached_and_a_replaced_snapshot_misses(runs):
    request = epochs_request(runs, run_b=(), epochs_b=())
    first = run_analysis(request)
    again = run_analysis(CKARunRequest.from_json(request.to_json()))
    assert first.cached is False and again.cached is True and again.key == first.key
    np.testing.assert_array_equal(again.arrays["0/matrix"], first.arrays["0/matrix"])

    for part in ("model.safetensors", "model.json"):  # epoch 2 trained again: other weights, same name
        shutil.copy(runs[0] / "epoch-0001" / part, runs[0] / "epoch-0002" / part)
    with pytest.raises(CheckpointError, match="other weights"):
        submit(request)  # the old request names weights the snapshot no longer holds
    fresh = run_analysis(epochs_request(runs, run_b=(), epochs_b=()))
    assert fresh.cached is False and fresh.key != first.key
    assert not np.array_equal(fresh.arrays["0/matrix"], first.arrays["0/matrix"])


def test_stopping_stores_nothing(runs):
    assert_stopping_stores_nothing(epochs_request(runs), polls=2)


# ------------------------------------------------------------------ the command
def test_cli_run_prints_what_it_printed_before_and_answers_from_the_store(runs, capsys):
    import engine
    from engine import data as edata
    from engine.similarity.structure import cka_across_epochs
    from engine.training.state import list_snapshots

    args = cli_args(runs, "--reference", "consecutive", "--json")
    rc, first, _ = cli(args, capsys)
    assert rc == 0 and first["cached"] is False
    dataset = edata.load_dataset("shapes", split="test")
    before = {"dataset": "shapes", "runs": [
        {"run": str(folder), "method": method, **cka_across_epochs(
            [(e, engine.load(stem).model) for e, stem in list_snapshots(folder)], dataset, reference="consecutive",
            n=20, batch_size=10).to_dict()} for folder, method in zip(runs, ("standard", "pgd"))]}
    timing = ("seconds", "cached", "result")
    assert without(first, timing) == without(before, timing)
    rc, again, _ = cli(args, capsys)
    assert rc == 0 and again["cached"] is True and again["result"] == first["result"]
    assert without(again, timing) == without(first, timing)
    rc, fresh, _ = cli(args + ["--no-cache"], capsys)
    assert rc == 0 and fresh["cached"] is False and without(fresh, timing) == without(first, timing)


def test_cli_run_writes_the_csv(runs, capsys, tmp_path):
    out = tmp_path / "epochs.csv"
    rc, _, err = cli(cli_args(runs, "--out", out), capsys)
    assert rc == 0 and "wrote" in err
    with open(out, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert list(table[0]) == ["run", "epoch", "layer", "cka"] and {r["run"] for r in table} == {str(f) for f in runs}
    rc, stored, _ = cli(cli_args(runs, "--json"), capsys)
    assert stored["cached"] is True
    assert [float(r["cka"]) for r in table] == [v for run in stored["runs"] for row in run["matrix"] for v in row]


def test_cli_background_then_jobs_wait_and_result(runs, capsys):
    background_roundtrip(cli_args(runs), "cka_epochs", capsys)
    rc, _, err = cli(["cka", "--run", runs[0] / "nope", "--n", "20", "--json"], capsys)
    assert rc == 2 and "no training run" in err


def test_cancelled_job_stores_nothing(runs, capsys):
    from engine.analysis import ResultStore

    rc, queued, _ = cli(cli_args(runs, "--json", "--background"), capsys)
    JobStore().cancel(queued["job"])
    run_worker(JobStore(), once=True, lane="analysis")
    rc, _, _ = cli(["jobs", "wait", queued["job"], "--quiet"], capsys)
    assert rc == 1 and JobStore().get(queued["job"]).status == "cancelled"
    assert ResultStore().list() == []
