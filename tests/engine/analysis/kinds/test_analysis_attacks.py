"""The Attack Lab's capabilities as analyses: craft-and-compare (``craft``), the ε-sweep
(``eps_sweep``) and the transfer matrix (``transfer``): requests, the result store, the CLI
(``attack``, ``sweep``, ``transfer``), background jobs and agreement with the engine functions
called directly on tiny seeded models."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import engine
from engine import attacks
from engine import data as edata
from engine.analysis import ANALYSES, AnalysisCancelled, run_analysis
from engine.analysis.kinds.craft import CraftRequest
from engine.analysis.kinds.sweep import EpsSweepRequest
from engine.analysis.kinds.transfer import TransferRequest
from engine.analysis.kinds._attacklab import attack_params
from engine.analysis.runner import seeded
from engine.errors import InvalidParameterError
from engine.jobs import JobStore, run_worker
from analysis_helpers import cli, refs, without

PGD = attack_params({"eps": 0.1, "steps": 3, "random_start": True})


pytestmark = pytest.mark.usefixtures("no_autostart")


def loaded_models(paths) -> dict:
    return {"A": engine.load(paths["standard"]).model, "B": engine.load(paths["robust"]).model}


def without_timing(obj):
    return without(obj, ("seconds", "created", "cached", "device"))


def small_requests(paths) -> list:
    a, b = refs(paths)
    return [
        CraftRequest(models=(a, b), dataset="shapes", params=PGD, source=1, offset=3),
        CraftRequest(models=(a,), dataset="shapes", attack="lbfgs", n=4, sample_seed=2, target=1),
        EpsSweepRequest(models=(a, b), dataset="shapes", eps=(0.0, 0.05, 0.2), attack="fgsm", n=12),
        TransferRequest(models=(a, b), dataset="shapes", attack="pgd", params=PGD, n=12),
    ]


# ------------------------------------------------------------------ requests
def test_requests_round_trip_and_refuse_what_does_not_fit(tiny_checkpoints):
    requests = small_requests(tiny_checkpoints)
    for request in requests:
        back = type(request).from_json(request.to_json())
        assert back == request and back.key() == request.key()
        assert ANALYSES[request.kind].request is type(request) and ANALYSES[request.kind].page == "attack_lab"
    assert len({r.key() for r in requests}) == len(requests)
    assert requests[0].slots() == ("A", "B") and "pgd on B" in requests[0].describe()
    assert attack_params({"steps": 3, "eps": None, "alpha": 0.1}) == (("alpha", 0.1), ("steps", 3))
    assert requests[0].attack_kwargs() == {"eps": 0.1, "random_start": True, "steps": 3}

    a, _ = refs(tiny_checkpoints)
    bad = [
        lambda: CraftRequest(models=(a,), dataset="shapes", source=1),
        lambda: CraftRequest(models=(a,), dataset="shapes", offset=2, sample_seed=0),
        lambda: CraftRequest(models=(a,), dataset="shapes", params=(("steps", 3), ("eps", 0.1))),  # unsorted
        lambda: CraftRequest(models=(a,), dataset="shapes", params=(("eps", [1]),)),
        lambda: CraftRequest(models=(), dataset="shapes"),
        lambda: EpsSweepRequest(models=(a,), dataset="shapes", eps=()),
        lambda: EpsSweepRequest(models=(a,), dataset="shapes", eps=(0.1,), params=(("eps", 0.1),)),
        lambda: TransferRequest(models=(a,) * 9, dataset="shapes"),
        lambda: TransferRequest(models=(a,), dataset="shapes", n=0),
    ]
    for make in bad:
        with pytest.raises(InvalidParameterError):
            make().validate()


# ------------------------------------------------------------------ equal to the engine calls
def test_craft_equals_craft_and_compare_and_is_cached(tiny_checkpoints):
    request = small_requests(tiny_checkpoints)[0]
    first = run_analysis(request)
    again = run_analysis(request)
    assert not first.cached and again.cached and again.key == first.key

    models = loaded_models(tiny_checkpoints)
    images, labels = edata.take(torch.utils.data.Subset(edata.load_dataset("shapes", split="test"), [3]), 1)
    attack = attacks.make_attack("pgd", "shapes", eps=0.1, steps=3, random_start=True)
    with seeded(0, "cpu"):
        direct = attacks.craft_and_compare(models, "B", images, labels, attack)
    for stored in (first.value(), again.value()):
        assert stored.source == "B" and stored.result.config == direct.result.config
        torch.testing.assert_close(stored.x, direct.x)
        torch.testing.assert_close(stored.result.adv, direct.result.adv)
        torch.testing.assert_close(stored.result.success, direct.result.success)
        for slot in ("A", "B"):
            for got, want in zip(stored.logits[slot], direct.logits[slot]):
                torch.testing.assert_close(got, want)
    probs = first.value().probabilities()
    assert set(probs) == {"A", "B"} and probs["B"]["adversarial"].sum() == pytest.approx(1.0)
    body = ANALYSES["craft"].report(again)
    assert body["source"] == "B" and body["n"] == 1 and body["indices"] == [3]
    assert body["robust_acc"] == direct.accuracy()["B"]["adversarial"]
    assert [m["slot"] for m in body["models"]] == ["A", "B"] and len(ANALYSES["craft"].rows(again)) == 2


def test_targeted_craft_on_a_seeded_sample(tiny_checkpoints):
    result = run_analysis(small_requests(tiny_checkpoints)[1])
    comparison = result.value()
    indices = edata.take_indices(len(edata.load_dataset("shapes", split="test")), 4, 2).tolist()
    assert result.meta["indices"] == indices
    assert comparison.result.targets.tolist() == [1] * 4 and list(comparison.logits) == ["A"]


def test_sweep_and_transfer_equal_the_engine_calls(tiny_checkpoints):
    _, _, sweep_request, transfer_request = small_requests(tiny_checkpoints)
    models = loaded_models(tiny_checkpoints)
    images, labels = edata.take(edata.load_dataset("shapes", split="test"), 12)

    swept = run_analysis(sweep_request)
    with seeded(0, "cpu"):
        direct = attacks.eps_sweep(models, images, labels, "fgsm", [0.0, 0.05, 0.2], dataset="shapes")
    assert swept.value() == direct and run_analysis(sweep_request).cached
    body = ANALYSES["eps_sweep"].report(swept)
    assert body["eps"] == [0.0, 0.05, 0.2] and [m["robust_acc"] for m in body["models"]] == [
        direct.accuracy["A"], direct.accuracy["B"]]
    assert len(ANALYSES["eps_sweep"].rows(swept)) == 6

    matrix = run_analysis(transfer_request)
    attack = attacks.make_attack("pgd", "shapes", eps=0.1, steps=3, random_start=True)
    with seeded(0, "cpu"):
        direct = attacks.transfer_matrix(models, images, labels, attack)
    assert matrix.value() == direct and run_analysis(transfer_request).cached
    assert ANALYSES["transfer"].report(matrix)["accuracy"] == direct.accuracy
    assert len(ANALYSES["transfer"].rows(matrix)) == 4


def test_a_stopped_sweep_stores_nothing(tiny_checkpoints):
    request = small_requests(tiny_checkpoints)[2]
    with pytest.raises(AnalysisCancelled):
        run_analysis(request, should_stop=lambda: True)
    from engine.analysis import ResultStore

    assert ResultStore().list() == []


def test_a_parameter_the_attack_does_not_take_is_refused(tiny_checkpoints):
    a, b = refs(tiny_checkpoints)
    with pytest.raises(InvalidParameterError):
        run_analysis(TransferRequest(models=(a, b), dataset="shapes", attack="fgsm", params=(("restarts", 2),), n=4))


# ------------------------------------------------------------------ CLI, background jobs
def test_cli_sweep_background_worker_result_equals_foreground(tiny_checkpoints, capsys):
    args = ["sweep", "--checkpoint", tiny_checkpoints["standard"], "--checkpoint", tiny_checkpoints["robust"],
            "--attack", "fgsm", "--eps", "0", "0.05", "0.2", "--n", "12", "--json"]
    rc, queued, _ = cli(args + ["--background"], capsys)
    assert rc == 0 and queued["kind"] == "eps_sweep" and queued["status"] == "queued"
    assert run_worker(JobStore(), once=True, lane="analysis") == 1
    rc, from_job, _ = cli(["jobs", "result", queued["job"], "--json"], capsys)
    assert rc == 0
    rc, here, _ = cli(args, capsys)
    assert rc == 0 and here["cached"] is True and here["result"] == JobStore().get(queued["job"]).result_key
    rc, fresh, _ = cli(args + ["--no-cache"], capsys)
    assert rc == 0 and fresh["cached"] is False
    assert without_timing(fresh) == without_timing(from_job) == without_timing(here)
    assert [m["slot"] for m in here["models"]] == ["A", "B"] and here["eps"] == [0.0, 0.05, 0.2]


def test_cli_transfer_background_worker_result_equals_foreground(tiny_checkpoints, capsys):
    args = ["transfer", "--checkpoint", tiny_checkpoints["standard"], "--checkpoint", tiny_checkpoints["robust"],
            "--attack", "pgd", "--eps", "0.1", "--steps", "3", "--n", "8", "--json"]
    rc, queued, _ = cli(args + ["--background"], capsys)
    assert rc == 0 and queued["kind"] == "transfer"
    assert run_worker(JobStore(), once=True, lane="analysis") == 1
    rc, from_job, _ = cli(["jobs", "result", queued["job"], "--json"], capsys)
    rc, fresh, _ = cli(args + ["--no-cache"], capsys)
    assert rc == 0 and without_timing(fresh) == without_timing(from_job)
    assert np.asarray(fresh["accuracy"]).shape == (2, 2)


def test_cli_attack_writes_the_npz_and_answers_again_from_the_store(tiny_checkpoints, capsys, tmp_path):
    out = tmp_path / "adv.npz"
    args = ["attack", "--checkpoint", tiny_checkpoints["robust"], "--compare", tiny_checkpoints["standard"],
            "--n", "6", "--eps", "0.1", "--steps", "3", "--out", out, "--json"]
    rc, summary, _ = cli(args, capsys)
    assert rc == 0 and summary["n"] == 6 and summary["out"] == str(out) and summary["cached"] is False
    with np.load(out) as npz:
        assert npz["x_adv"].shape == (6, 3, 32, 32)
        assert float((npz["preds"] == npz["labels"]).mean()) == pytest.approx(summary["robust_acc"])
        first = npz["x_adv"].copy()
    assert [m["slot"] for m in summary["models"]] == ["A", "B"] and summary["source"] == "A"
    out.unlink()
    rc, again, _ = cli(args, capsys)
    assert rc == 0 and again["cached"] is True
    with np.load(out) as npz:
        np.testing.assert_array_equal(npz["x_adv"], first)

    rc, queued, _ = cli(args[:-3] + ["--background", "--json"], capsys)  # no --out: nothing to write
    assert rc == 0 and queued["status"] == "done" and queued["result"] == again["result"]


def test_cost_estimates_grow_with_the_work(tiny_checkpoints):
    from engine.analysis.cost import estimate

    loaded = [engine.load(tiny_checkpoints["standard"]), engine.load(tiny_checkpoints["robust"])]
    craft, _, sweep, transfer = small_requests(tiny_checkpoints)
    for request in (craft, sweep, transfer):
        assert estimate(request, loaded).passes > 2
    longer = EpsSweepRequest(**{**sweep.__dict__, "eps": sweep.eps * 2})
    assert estimate(longer, loaded).passes == pytest.approx(2 * estimate(sweep, loaded).passes)
