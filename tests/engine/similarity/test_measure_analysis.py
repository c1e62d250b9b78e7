"""The measures as a stored analysis (the ``cka`` kind's ``measure`` field) and on the command line:
stable keys for CKA requests, validation, stored results that meet the SCHEMA, the JSON and CSV,
and the cost model."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from engine.analysis import ANALYSES, ModelRef, run_analysis
from engine.analysis.base import Request
from engine.analysis.kinds.cka import DEFAULT_K, MEASURE_NAMES, CKARequest, passes
from engine.errors import InvalidParameterError


def refs(tiny_checkpoints):
    return ModelRef.of(tiny_checkpoints["standard"]), ModelRef.of(tiny_checkpoints["robust"])


def request(tiny_checkpoints, **kw) -> CKARequest:
    a, b = refs(tiny_checkpoints)
    return CKARequest(**{"a": a, "b": b, "dataset": "shapes", "n": 24, "batch_size": 8, **kw})


# ------------------------------------------------------------------ keys and validation
def test_a_default_cka_request_keeps_its_dict_and_key(tiny_checkpoints):
    plain = request(tiny_checkpoints)
    explicit = request(tiny_checkpoints, measure="cka", k=DEFAULT_K)
    assert plain.key() == explicit.key() and plain.to_json() == explicit.to_json()
    # the dict (and so the key) is the base class's over the fields that existed before measures
    before = {name: value for name, value in Request.to_dict(plain).items() if name not in ("measure", "k")}
    assert plain.to_dict() == before
    assert CKARequest.from_dict(before) == plain


@pytest.mark.parametrize("measure", list(MEASURE_NAMES))
def test_every_measure_round_trips_and_has_its_own_key(tiny_checkpoints, measure):
    one = request(tiny_checkpoints, measure=measure)
    assert CKARequest.from_json(one.to_json()) == one
    assert (one.key() == request(tiny_checkpoints).key()) == (measure == "cka")
    assert ("measure" in one.to_dict()) == (measure != "cka")


def test_k_belongs_to_mknn(tiny_checkpoints):
    five = request(tiny_checkpoints, measure="mknn", k=5)
    assert five.to_dict()["k"] == 5 and five.key() != request(tiny_checkpoints, measure="mknn").key()
    assert CKARequest.from_json(five.to_json()) == five
    assert "k=5" in five.describe()
    with pytest.raises(InvalidParameterError, match="k applies to the mknn measure only"):
        request(tiny_checkpoints, measure="cca", k=5)
    with pytest.raises(InvalidParameterError, match="smaller than the number of images"):
        request(tiny_checkpoints, measure="mknn", k=24)
    with pytest.raises(InvalidParameterError, match="kernel options apply to the cka measure only"):
        request(tiny_checkpoints, measure="rsa", kernel="rbf")
    with pytest.raises(InvalidParameterError, match="measure"):
        request(tiny_checkpoints, measure="euclid")


# ------------------------------------------------------------------ stored results
def test_an_asymmetric_measure_is_stored_decoded_and_reported(tiny_checkpoints):
    req = request(tiny_checkpoints, measure="linreg", pooling="avg")
    first = run_analysis(req)
    assert not first.cached and run_analysis(req).cached
    schema = ANALYSES["cka"].schema
    assert schema.problems(first.meta, first.arrays) == []
    assert first.meta["measure"] == "linreg" and first.meta["estimator"] == "full batch"
    comp = first.value()
    assert comp.measure == "linreg" and comp.reverse.matrix.shape == comp.across.matrix.T.shape
    assert not np.allclose(comp.reverse.matrix, comp.across.matrix.T)
    report = ANALYSES["cka"].report(first)
    assert report["measure"] == "linreg" and report["across_reverse"]["rows"] == report["across"]["cols"]
    assert "linreg" in report["corresponding_depths"][0]
    rows = ANALYSES["cka"].rows(first)
    assert {r["map"] for r in rows} == {"AxA", "BxB", "AxB", "BxA"} and "linreg" in rows[0]


def test_block_structure_is_read_on_the_similarity_form(tiny_checkpoints):
    from engine.similarity.structure import block_structure

    result = run_analysis(request(tiny_checkpoints, measure="procrustes", pooling="avg"))
    angles = result.arrays["within_a"]
    assert np.allclose(np.diag(angles), 0.0, atol=1e-6)
    expected = block_structure(np.cos(angles)).score
    assert result.meta["block_structure"]["a"]["score"] == pytest.approx(expected)


def test_results_stored_before_measures_still_decode_as_cka(tiny_checkpoints):
    result = run_analysis(request(tiny_checkpoints))
    old_meta = {k: v for k, v in result.meta.items() if k not in ("measure", "measure_options")}
    schema = ANALYSES["cka"].schema
    assert schema.problems(old_meta, result.arrays) == []
    old = dataclasses.replace(result, meta=old_meta)
    assert old.value().measure == "cka" and ANALYSES["cka"].report(old)["measure"] == "cka"
    assert [r for r in ANALYSES["cka"].rows(old) if r["map"] == "BxA"] == []
    assert schema.problems({**old_meta, "measure": "euclid"}, result.arrays) == \
        [f"the stored measure 'euclid' is not one of {', '.join(MEASURE_NAMES)}"]
    assert schema.problems(old_meta, {**result.arrays, "across_reverse": np.eye(3)}) == \
        ["the CKA matrices' sizes differ from the layers named"]


# ------------------------------------------------------------------ cost model
def test_cost_model_adds_a_measures_own_compute(tiny_checkpoints):
    from engine.checkpoints import load

    loaded = [load(tiny_checkpoints["standard"]), load(tiny_checkpoints["robust"])]
    per = [1e-4, 1e-4]
    plain, images = passes(request(tiny_checkpoints, n=2000, batch_size=100), per, loaded)
    assert (plain, images) == (1.0, 2000)
    small, _ = passes(request(tiny_checkpoints, n=200, measure="rsa"), per, loaded)
    large, _ = passes(request(tiny_checkpoints, n=2000, batch_size=100, measure="rsa"), per, loaded)
    assert 1.0 < small < large                                # RSA's N × N work grows faster than N
    flat, _ = passes(request(tiny_checkpoints, n=200, measure="procrustes"), per, loaded)
    pooled, _ = passes(request(tiny_checkpoints, n=200, measure="procrustes", pooling="avg"), per, loaded)
    assert flat > pooled > 1.0                                # wider features, larger SVDs


# ------------------------------------------------------------------ command line
def cli(argv, capsys):
    from engine.cli import main

    rc = main(argv)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_cli_measure_json_csv_and_errors(tiny_checkpoints, capsys, tmp_path):
    a, b = str(tiny_checkpoints["standard"]), str(tiny_checkpoints["robust"])
    base = ["cka", "--a", a, "--b", b, "--dataset", "shapes", "--n", "16", "--batch-size", "8", "--pooling", "avg"]
    rc, out, _ = cli(base + ["--measure", "pwcca", "--json"], capsys)
    found = json.loads(out)
    assert rc == 0 and found["measure"] == "pwcca" and "across_reverse" in found and found["estimator"] == "full batch"
    rc, out, _ = cli(base + ["--measure", "mknn", "--k", "3", "--json"], capsys)
    assert rc == 0 and json.loads(out)["measure_options"] == {"k": 3}
    target = tmp_path / "rsa.csv"
    rc, _, _ = cli(base + ["--measure", "rsa", "--out", str(target)], capsys)
    with open(target, newline="") as handle:
        table = list(csv.DictReader(handle))
    assert rc == 0 and list(table[0]) == ["map", "row", "col", "rsa"]
    assert {r["map"] for r in table} == {"AxA", "BxB", "AxB"}
    rc, out, _ = cli(base + ["--json"], capsys)                 # no --measure: CKA, as before
    assert rc == 0 and json.loads(out)["measure"] == "cka" and "across_reverse" not in json.loads(out)
    rc, _, err = cli(base + ["--measure", "cca", "--k", "3", "--json"], capsys)
    assert rc == 2 and "error: --k applies to --measure mknn only" in err
