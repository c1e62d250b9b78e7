"""Explanation-quality metrics as an analysis (``saliency_metrics``): requests, the same numbers as
the engine function called directly, the result store (stored, cached, checked), cancel, the cost
model, a background job, and the ``saliency --metrics`` command (JSON, CSV, table, errors)."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest

from engine import data as edata
from engine.analysis import ANALYSES, ResultStore, run_analysis
from engine.analysis.kinds.saliency_metrics import GROUPS, METRICS, SCORES, SaliencyMetricsRequest, expand_metrics
from engine.errors import InvalidParameterError
from analysis_helpers import assert_stopping_stores_nothing, background_roundtrip, cli, refs, without

pytestmark = pytest.mark.usefixtures("no_autostart")

#: cheap settings: few images, flipping steps, sensitivity samples and ROAD fractions
CHEAP = {"n": 6, "flip_steps": 4, "samples": 2, "fractions": (0.2, 0.6)}


def metrics_request(paths, metrics=("all",), **kw) -> SaliencyMetricsRequest:
    return SaliencyMetricsRequest(**{"models": refs(paths), "dataset": "shapes", "metrics": expand_metrics(metrics),
                                     **CHEAP, **kw})


def cli_args(paths, *extra) -> list:
    return ["saliency", "--checkpoint", paths["standard"], "--checkpoint", paths["robust"], "--n", "6",
            "--flip-steps", "4", "--samples", "2", "--fractions", "0.2,0.6", *extra]


# ------------------------------------------------------------------ requests
def test_metric_names_groups_and_the_engine_agree():
    from engine.attribution.metrics import EVALUATORS, LOCALISATION, ROAD_FRACTIONS, MetricOptions
    from engine.analysis.kinds import saliency_metrics as kind

    assert list(METRICS) == list(EVALUATORS) and kind.LOCALISATION == LOCALISATION
    assert kind.ROAD_FRACTIONS == ROAD_FRACTIONS
    # a request's defaults are the engine's (one place: engine.catalogue.MetricOptions)
    request = {f.name: f.default for f in dataclasses.fields(SaliencyMetricsRequest)}
    options = {f.name: f.default for f in dataclasses.fields(MetricOptions)}
    assert {name: request["metric_seed" if name == "seed" else name] for name in options} == options
    assert {s for _, scores in METRICS.values() for s in scores} == set(SCORES)
    assert expand_metrics(["all"]) == tuple(METRICS)
    assert expand_metrics(["robustness", "road", "randomisation", "road"]) == (
        "randomisation", "road", "max_sensitivity", "avg_sensitivity")
    assert expand_metrics(["localisation"]) == GROUPS["localisation"] == ("pointing_game", "relevance_mass")
    with pytest.raises(InvalidParameterError, match="unknown explanation metric 'roar'.*pixel_flipping"):
        expand_metrics(["roar"])
    with pytest.raises(InvalidParameterError, match="at least one"):
        expand_metrics([])


def test_requests_round_trip_and_refuse_bad_values(tiny_checkpoints):
    requests = [metrics_request(tiny_checkpoints), metrics_request(tiny_checkpoints, ("road",), seed=3),
                metrics_request(tiny_checkpoints, ("robustness",), methods=("smoothgrad", "saliency"),
                                params=(("smoothgrad", "n_samples", 2),), radius=0.1)]
    for request in requests:
        back = SaliencyMetricsRequest.from_json(request.to_json())
        assert back == request and back.key() == request.key()
        assert ANALYSES[request.kind].request is SaliencyMetricsRequest and ANALYSES[request.kind].page == "saliency"
    assert len({r.key() for r in requests}) == len(requests)
    assert requests[2].method_params() == {"smoothgrad": {"n_samples": 2}, "saliency": {}}
    assert "road" in requests[1].describe() and "6 images" in requests[1].describe()
    good = requests[0].to_dict()
    for field, value in [("metrics", ["roar"]), ("metrics", ["road", "randomisation"]), ("metrics", ["road", "road"]),
                         ("metrics", []), ("methods", ["lrp"]), ("methods", ["saliency", "saliency"]),
                         ("params", [["smoothgrad", "n_samples", 2]]), ("reduce", "mean"), ("n", 0),
                         ("fractions", [1.0]), ("fractions", []), ("fractions", [-0.1]), ("road_noise", -1),
                         ("flip_steps", 0), ("flip_baseline", 2), ("radius", 0), ("radius", 1.5), ("samples", 0),
                         ("metric_seed", -1), ("batch_size", 0)]:
        with pytest.raises(InvalidParameterError):
            SaliencyMetricsRequest.from_dict({**good, field: value})


# ------------------------------------------------------------------ the same numbers as the engine
def test_the_analysis_equals_the_direct_engine_call_and_is_stored(tiny_checkpoints):
    from engine.attribution.metrics import MetricOptions, dataset_masks, explanation_metrics
    from engine.checkpoints import load

    request = metrics_request(tiny_checkpoints, seed=5)
    result = run_analysis(request)
    dataset = edata.load_dataset("shapes", split="test")
    images, labels = edata.take(dataset, 6, seed=5)
    masks = dataset_masks(dataset, edata.take_indices(len(dataset), 6, 5))
    models = {"tiny_standard": load(tiny_checkpoints["standard"]).model,
              "tiny_robust": load(tiny_checkpoints["robust"]).model}
    direct = explanation_metrics(models, images, labels, {"saliency": {}}, tuple(METRICS), masks,
                                 MetricOptions(fractions=(0.2, 0.6), flip_steps=4, samples=2))
    stored = result.value()
    assert len(stored) == len(direct.scores) == 2 * len(SCORES)
    for mine, theirs in zip(stored, direct.scores):
        assert (mine.model, mine.method, mine.metric, mine.score, mine.axis) == \
            (theirs.model, theirs.method, theirs.metric, theirs.score, theirs.axis)
        np.testing.assert_array_equal(mine.values, theirs.values)
        assert (mine.curve is None) == (theirs.curve is None)
        if mine.curve is not None:
            np.testing.assert_array_equal(mine.curve, theirs.curve)
    assert [s.model for s in result.value(names={"tiny_robust": "B"})][-1] == "B"

    rows = ANALYSES["saliency_metrics"].rows(result)
    assert [(r["model"], r["score"]) for r in rows] == [(s.model, s.score) for s in direct.scores]
    assert all(r["n"] == 6 and r["better"] == SCORES[r["score"]].better for r in rows)
    assert [r["mean"] for r in rows] == pytest.approx([s.mean for s in direct.scores], nan_ok=True)
    body = ANALYSES["saliency_metrics"].report(result)
    assert body["table"] == json.loads(json.dumps(rows)) and body["errors"] == [] and body["n"] == 6
    assert body["options"]["fractions"] == [0.2, 0.6] and body["metrics"] == list(METRICS)

    again = run_analysis(request)  # stored: read back (and checked against the kind's SCHEMA)
    assert again.cached and again.key == result.key and ResultStore().exists(result.key)
    assert [s.mean for s in again.value()] == pytest.approx([s.mean for s in stored], nan_ok=True)


def test_a_method_a_model_refuses_is_reported_not_raised(tiny_checkpoints, monkeypatch):
    from engine.attribution import methods

    def refuse(*_args, **_kw):
        raise methods.UnsupportedModelError("guided backprop refuses this model")

    monkeypatch.setattr(methods, "check_module_relus", refuse)
    request = metrics_request(tiny_checkpoints, ("pointing_game",), methods=("saliency", "guided_backprop"))
    result = run_analysis(request)
    assert {e["method"] for e in result.meta["errors"]} == {"guided_backprop"} and len(result.meta["errors"]) == 2
    assert [(s.model, s.method) for s in result.value()] == [("tiny_standard", "saliency"), ("tiny_robust", "saliency")]


def test_localisation_on_a_dataset_without_masks_names_it(tiny_checkpoints, monkeypatch):
    from engine.analysis.kinds import saliency_metrics as kind

    monkeypatch.setattr("engine.attribution.metrics.dataset_masks", lambda dataset, indices=None: None)
    with pytest.raises(InvalidParameterError, match="`shapes` has no foreground masks, which pointing_game need"):
        run_analysis(metrics_request(tiny_checkpoints, ("pointing_game", "road")))
    assert ResultStore().list() == []
    kind.check(metrics_request(tiny_checkpoints, ("road",)))  # the others need no masks


def test_cancel_stores_nothing(tiny_checkpoints):
    for polls in (1, 3):
        assert_stopping_stores_nothing(metrics_request(tiny_checkpoints, ("road", "randomisation")), polls=polls)


def test_the_estimate_counts_every_metric(tiny_checkpoints):
    from engine.analysis.cost import GRADIENT_STEP, estimate
    from engine.checkpoints import load

    loaded = [load(tiny_checkpoints["standard"]), load(tiny_checkpoints["robust"])]
    alone = {name: estimate(metrics_request(tiny_checkpoints, (name,)), loaded).passes for name in METRICS}
    assert alone["pointing_game"] == alone["relevance_mass"] == GRADIENT_STEP  # the map only
    assert alone["randomisation"] == GRADIENT_STEP * (1 + 8)  # small_cnn: 8 layers re-initialised
    assert alone["pixel_flipping"] == GRADIENT_STEP + 4 and alone["max_sensitivity"] == GRADIENT_STEP * 3
    assert alone["road"] > GRADIENT_STEP + 2 * 2  # 2 orders x 2 fractions, plus the imputations
    both = estimate(metrics_request(tiny_checkpoints, ("robustness",)), loaded).passes
    assert both == alone["max_sensitivity"]  # max and average share their samples
    every = estimate(metrics_request(tiny_checkpoints), loaded)
    assert every.seconds > 0 and "6 images" in every.how


# ------------------------------------------------------------------ CLI and background jobs
def test_cli_json_csv_and_table(tiny_checkpoints, tmp_path, capsys):
    argv = cli_args(tiny_checkpoints, "--metrics", "localisation,road")
    rc, first, _ = cli(argv + ["--json"], capsys)
    assert rc == 0 and first["cached"] is False and first["metrics"] == ["road", "pointing_game", "relevance_mass"]
    assert [(r["model"], r["score"]) for r in first["table"]] == [
        (model, score) for model in ("tiny_standard", "tiny_robust")
        for score in ("road_morf", "road_lerf", "pointing_game", "relevance_mass")]
    assert first["checkpoints"]["tiny_robust"] == str(tiny_checkpoints["robust"])
    rc, again, _ = cli(argv + ["--json"], capsys)
    assert rc == 0 and again == {**first, "cached": True}

    out = tmp_path / "metrics.csv"
    rc, _, err = cli(argv + ["--out", out], capsys)
    assert rc == 0 and "stored earlier" in err
    with open(out, newline="") as handle:
        written = list(csv.DictReader(handle))
    assert [(r["model"], r["score"], float(r["mean"])) for r in written] == [
        (r["model"], r["score"], pytest.approx(r["mean"])) for r in first["table"]]
    assert written[0]["better"] == "lower" and written[0]["label"] == "ROAD MoRF accuracy"

    from engine.cli import main

    assert main([str(a) for a in argv]) == 0  # the terminal table, read from the store
    table = capsys.readouterr().out
    assert "ROAD MoRF accuracy" in table and "Pointing game" in table and "stored earlier" in table
    assert table.count("±") == 2 * 4 and "tiny_standard" in table and "tiny_robust" in table

    rc, fresh, _ = cli(argv + ["--json", "--no-cache"], capsys)
    assert rc == 0 and fresh["cached"] is False
    assert without(fresh, ("seconds", "cached")) == without(first, ("seconds", "cached"))  # seeded: same numbers


@pytest.mark.parametrize("extra, message", [
    (["--metrics", "roar"], "unknown explanation metric 'roar'"),
    (["--metrics", "road", "--curve", "keep"], "--metrics runs on its own"),
    (["--metrics", "road", "--out", "folder"], "--out names a file ending in .csv, .json, .npz"),
    (["--metrics", "road", "--radius", "0"], "radius must be a number in (0, 1]"),
    (["--metrics", "road", "--fractions", "0.5,1"], "below 1"),
    (["--metrics", "road", "--n", "5000"], "--n must be an integer in [1, 2000]"),
    (["--metrics", "road", "--methods", "guided_backprop", "--param", "guided_backprop.steps=3"], "unknown method"),
    ([], "--out DIR is required"),
])
def test_cli_errors_are_one_line_and_exit_2(tiny_checkpoints, capsys, extra, message):
    rc, body, err = cli(cli_args(tiny_checkpoints, *extra), capsys)
    assert rc == 2 and body is None and err.startswith("error: ") and message in err
    assert ResultStore().list() == []


def test_localisation_on_mnist_is_refused_naming_it(tiny_checkpoints, real_data_root, monkeypatch, capsys):
    monkeypatch.setenv("ROBUSTSCOPE_DATA", str(real_data_root))
    rc, _, err = cli(cli_args(tiny_checkpoints, "--metrics", "pointing_game", "--dataset", "mnist", "--json"), capsys)
    assert rc == 2 and "error: `mnist` has no foreground masks, which pointing_game need" in err


def test_cli_background_job_gives_the_stored_result(tiny_checkpoints, capsys):
    stored = background_roundtrip(cli_args(tiny_checkpoints, "--metrics", "pixel_flipping,pointing_game"),
                                  "saliency_metrics", capsys)
    assert [r["score"] for r in stored["table"]] == ["pixel_flipping_auc", "pointing_game"] * 2
    assert all(0.0 <= r["mean"] <= 1.0 for r in stored["table"])
