"""Keep/remove curves (KAR/ROAR included) and the ε-vs-interpretability trade-off as analyses:
requests, the result store, agreement with the engine functions called directly, background jobs,
cancel, and the ``saliency --curve`` / ``tradeoff`` commands."""
from __future__ import annotations

import json

import pytest

from engine import data as edata
from engine.analysis import ANALYSES, ModelRef, ResultStore, run_analysis
from engine.analysis.kinds.curves import SaliencyCurvesRequest
from engine.analysis.kinds.tradeoff import TradeoffRequest
from engine.errors import InvalidParameterError
from engine.jobs import JobStore, run_worker
from analysis_helpers import assert_stopping_stores_nothing, cli, refs, without


pytestmark = pytest.mark.usefixtures("no_autostart")


def without_timing(obj):
    """``obj`` (a report as JSON) without wall-clock fields, which differ between two runs."""
    return without(obj, ("seconds", "cached", "created"))


def curves_request(paths, **kw) -> SaliencyCurvesRequest:
    return SaliencyCurvesRequest(**{"models": refs(paths), "dataset": "shapes", "n": 12,
                                    "fractions": (0.0, 0.5, 1.0), **kw}).validate()


# ------------------------------------------------------------------ requests
def test_requests_round_trip_and_refuse_bad_values(tiny_checkpoints):
    a, b = refs(tiny_checkpoints)
    requests = [
        curves_request(tiny_checkpoints),
        curves_request(tiny_checkpoints, modes=("remove",), method="smoothgrad", params=(("n_samples", 2),), seed=3),
        curves_request(tiny_checkpoints, modes=("keep",), retrain=True, retrain_epochs=1, retrain_n=16),
        TradeoffRequest(models=(b, a), dataset="shapes", n=8),
        TradeoffRequest(models=(a,), dataset="mnist", method="integrated_gradients", batch_size=4),
    ]
    for request in requests:
        back = type(request).from_json(request.to_json())
        assert back == request and back.key() == request.key()
        assert ANALYSES[request.kind].request is type(request) and ANALYSES[request.kind].page == "saliency"
    assert len({r.key() for r in requests}) == len(requests)
    assert requests[1].method_params() == {"n_samples": 2} and "retrained" in requests[2].describe()
    good = requests[0].to_dict()
    for field, value in [("modes", ["up"]), ("modes", ["keep", "keep"]), ("modes", []), ("fractions", [1.5]),
                         ("fractions", []), ("replacement", "noise"), ("n", 0), ("retrain", "yes"),
                         ("retrain_epochs", 2), ("params", [["n_samples"]])]:
        with pytest.raises(InvalidParameterError):
            SaliencyCurvesRequest.from_dict({**good, field: value})
    tradeoff = requests[3].to_dict()
    for field, value in [("dataset", "cifar10"), ("n", 10_001), ("batch_size", 0), ("models", [])]:
        with pytest.raises(InvalidParameterError):
            TradeoffRequest.from_dict({**tradeoff, field: value})


# ------------------------------------------------------------------ the same numbers as the engine
def test_curves_equal_the_direct_engine_call(tiny_checkpoints):
    from engine.attribution import keep_remove_curves
    from engine.checkpoints import load

    result = run_analysis(curves_request(tiny_checkpoints))
    models = {"tiny_standard": load(tiny_checkpoints["standard"]).model,
              "tiny_robust": load(tiny_checkpoints["robust"]).model}
    images, labels = edata.take(edata.load_dataset("shapes", split="test"), 12)
    direct = [curve for mode in ("keep", "remove")
              for curve in keep_remove_curves(models, images, labels, mode, fractions=(0.0, 0.5, 1.0)).values()]
    assert result.value() == direct
    assert [c.name for c in result.value(names={"tiny_robust": "B"})] == ["tiny_standard", "B"] * 2
    body = ANALYSES["saliency_curves"].report(result)
    assert body["curves"]["keep"]["tiny_robust"] == json.loads(json.dumps(direct[1].to_dict()))
    assert body["retrain"] is None and body["modes"] == ["keep", "remove"]
    rows = ANALYSES["saliency_curves"].rows(result)
    assert len(rows) == 2 * 2 * 3 and rows[0]["model"] == "tiny_standard" and "retrain_n" not in rows[0]


def test_retrained_curves_equal_the_direct_engine_call(tiny_checkpoints):
    from engine.attribution import engine_retrainer, keep_remove_curves, retrain_config
    from engine.checkpoints import load

    request = SaliencyCurvesRequest(models=(ModelRef.of(tiny_checkpoints["standard"]),), dataset="shapes", n=8,
                                    modes=("remove",), fractions=(0.0, 1.0), retrain=True, retrain_epochs=1,
                                    retrain_n=16)
    result = run_analysis(request)
    model = load(tiny_checkpoints["standard"]).model
    images, labels = edata.take(edata.load_dataset("shapes", split="test"), 8)
    train_x, train_y = edata.take(edata.load_dataset("shapes", split="train"), 16)
    retrainer = engine_retrainer(train_x, train_y, retrain_config("shapes", epochs=1, seed=0))
    direct = keep_remove_curves({"tiny_standard": model}, images, labels, "remove", fractions=(0.0, 1.0),
                                retrain=retrainer)
    assert result.value() == list(direct.values()) and result.value()[0].retrained
    body = ANALYSES["saliency_curves"].report(result)
    assert body["retrain"]["config"]["epochs"] == 1 and [r["n_train"] for r in body["retrain"]["records"]] == [16, 16]
    rows = ANALYSES["saliency_curves"].rows(result)
    assert all(r["retrain_epochs"] == 1 and r["retrain_n"] == 16 for r in rows)


def test_tradeoff_equals_the_direct_engine_call(tiny_checkpoints):
    from engine.attribution import epsilon_tradeoff, evaluation_set
    from engine.checkpoints import load

    a, b = refs(tiny_checkpoints)
    result = run_analysis(TradeoffRequest(models=(b, a), dataset="shapes", n=8))
    data = evaluation_set("shapes", 8, image_size=32)
    loaded = [load(tiny_checkpoints["robust"]), load(tiny_checkpoints["standard"])]
    direct = epsilon_tradeoff(loaded, data.images, data.labels, data.masks)
    assert result.value() == direct and [p.epsilon for p in direct] == [0.0, pytest.approx(8 / 255)]
    assert ANALYSES["tradeoff"].report(result)["points"] == [p.to_dict() for p in direct]
    assert ANALYSES["tradeoff"].rows(result) == [p.to_dict() for p in direct]


def test_estimates_cover_both_kinds(tiny_checkpoints):
    from engine.analysis.cost import GRADIENT_STEP, estimate
    from engine.checkpoints import load

    loaded = [load(tiny_checkpoints["standard"]), load(tiny_checkpoints["robust"])]
    plain = estimate(curves_request(tiny_checkpoints), loaded)
    retrained = estimate(curves_request(tiny_checkpoints, retrain=True), loaded)
    assert plain.passes == 2 * (GRADIENT_STEP + 3 + 1) and "12 images" in plain.how  # 2 modes x (map + 3 fractions + clean)
    assert retrained.passes > 100 * plain.passes and retrained.background
    tradeoff = estimate(TradeoffRequest(models=refs(tiny_checkpoints), dataset="shapes", n=8), loaded)
    assert tradeoff.passes == GRADIENT_STEP + 1 and tradeoff.seconds > 0


# ------------------------------------------------------------------ store, cancel, jobs, CLI
def test_cancel_stores_nothing(tiny_checkpoints):
    a, b = refs(tiny_checkpoints)
    for request in (curves_request(tiny_checkpoints),
                    curves_request(tiny_checkpoints, modes=("keep",), retrain=True, retrain_epochs=1, retrain_n=16),
                    TradeoffRequest(models=(a, b), dataset="shapes", n=8)):
        assert_stopping_stores_nothing(request, polls=2)


def test_cli_second_run_is_cached(tiny_checkpoints, tmp_path, capsys):
    tradeoff = ["tradeoff", "--checkpoint", tiny_checkpoints["robust"], "--checkpoint", tiny_checkpoints["standard"],
                "--n", "8", "--json"]
    rc, first, _ = cli(tradeoff, capsys)
    assert rc == 0 and first["cached"] is False and set(first) >= {"dataset", "method", "n", "points", "result"}
    rc, again, _ = cli(tradeoff, capsys)
    assert rc == 0 and again == {**first, "cached": True}
    rc, fresh, _ = cli(tradeoff + ["--no-cache"], capsys)
    assert rc == 0 and fresh["cached"] is False and without_timing(fresh) == without_timing(first)
    rc, _, _ = cli(tradeoff[:-1], capsys)  # the terminal table reads the stored points too
    assert rc == 0

    out = tmp_path / "out"
    saliency = ["saliency", "--checkpoint", tiny_checkpoints["standard"], "--curve", "remove", "--n", "8",
                "--fractions", "0,1", "--out", out, "--device", "cpu", "--json"]
    rc, first, _ = cli(saliency, capsys)
    assert rc == 0 and first["curve"]["cached"] is False
    written = json.loads((out / "curve_remove.json").read_text())
    assert written == first["curve"]["curves"] and set(written) == {"tiny_standard"}
    (out / "curve_remove.json").unlink()
    rc, again, _ = cli(saliency, capsys)
    assert rc == 0 and again["curve"]["cached"] is True and again["curve"]["result"] == first["curve"]["result"]
    assert json.loads((out / "curve_remove.json").read_text()) == written  # the file comes back from the store


def test_cli_background_jobs_give_the_foreground_numbers(tiny_checkpoints, tmp_path, capsys):
    tradeoff = ["tradeoff", "--checkpoint", tiny_checkpoints["standard"], "--checkpoint", tiny_checkpoints["robust"],
                "--n", "8", "--json"]
    rc, queued, _ = cli(tradeoff + ["--background"], capsys)
    assert rc == 0 and queued["status"] == "queued" and queued["kind"] == "tradeoff"
    saliency = ["saliency", "--checkpoint", tiny_checkpoints["standard"], "--checkpoint", tiny_checkpoints["robust"],
                "--curve", "keep", "--n", "8", "--fractions", "0,0.5,1", "--out", tmp_path / "out", "--json"]
    rc, both, _ = cli(saliency + ["--background"], capsys)
    assert rc == 0 and both["kind"] == "saliency_grid" and both["curve"]["kind"] == "saliency_curves"
    assert ResultStore().list() == [] and not (tmp_path / "out").exists()  # nothing computed yet
    assert run_worker(JobStore(), once=True, lane="analysis") == 3

    rc, stored, _ = cli(["jobs", "result", queued["job"], "--json"], capsys)
    assert rc == 0 and stored["cached"] is True
    rc, foreground, _ = cli(tradeoff + ["--no-cache"], capsys)
    assert rc == 0 and without_timing(foreground) == without_timing(stored)

    rc, stored, _ = cli(["jobs", "result", both["curve"]["job"], "--json"], capsys)
    assert rc == 0 and stored["cached"] is True and set(stored["curves"]["keep"]) == {"tiny_standard", "tiny_robust"}
    rc, foreground, _ = cli(saliency + ["--no-cache"], capsys)
    assert rc == 0 and foreground["curve"]["cached"] is False
    assert foreground["curve"]["curves"] == stored["curves"]["keep"]
    assert foreground["curve"]["result"] == JobStore().get(both["curve"]["job"]).result_key
