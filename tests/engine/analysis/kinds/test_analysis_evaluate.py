"""Robust accuracy / AutoAttack (``evaluate``) and the robustness report (``report``) as analyses:
requests, the result store, background jobs, cancel, ``--record`` with a stored result, and
agreement with the engine functions called directly."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from engine import data as edata
from engine.analysis import ANALYSES, ModelRef, run_analysis
from engine.analysis.kinds.evaluate import EvaluateRequest
from engine.analysis.kinds.report import ReportRequest
from engine.jobs import submit
from engine.analysis.base import finite
from engine.cli import main
from engine.errors import InvalidParameterError
from engine.jobs import JobStore, run_worker
from analysis_helpers import assert_stopping_stores_nothing, cli, without


pytestmark = pytest.mark.usefixtures("no_autostart")


def copy_checkpoint(src, dest_stem):
    """Copy a checkpoint (weights + card) to ``dest_stem``; returns the stem."""
    for suffix in (".safetensors", ".json"):
        shutil.copy(src.with_suffix(suffix), dest_stem.with_suffix(suffix))
    return dest_stem


def without_timing(obj):
    """``obj`` (a report as JSON) without wall-clock fields, which differ between two runs."""
    return without(obj, ("seconds", "created", "attack_seconds"))


# ------------------------------------------------------------------ requests
def test_requests_round_trip_and_refuse_what_does_not_fit(tiny_checkpoints):
    a, b = ModelRef.of(tiny_checkpoints["robust"]), ModelRef.of(tiny_checkpoints["standard"])
    requests = [
        EvaluateRequest(model=a, dataset="shapes", n=12),
        EvaluateRequest(model=a, dataset="shapes", n=12, attack="pgd", eps=0.1, steps=3, random_start=False),
        EvaluateRequest(model=a, dataset="shapes", attack="autoattack", version="custom", attacks=("apgd-ce", "square"),
                        queries=30, seed=3),
        ReportRequest(model=a, dataset="shapes", eps=0.1, n=8, sweep=(0.0, 0.1), source=(b,)),
        ReportRequest(model=a, dataset="shapes", eps=0.1, norm="l2", masking=False),
    ]
    for request in requests:
        back = type(request).from_json(request.to_json())
        assert back == request and back.key() == request.key()
        assert ANALYSES[request.kind].request is type(request) and ANALYSES[request.kind].page == "models"
    assert len({r.key() for r in requests}) == len(requests)
    assert requests[3].model_refs() == (a, b) and "ε=0.1" in requests[3].describe()
    assert requests[2].attack_params() == {"version": "custom", "attacks": ("apgd-ce", "square"), "queries": 30,
                                           "seed": 3}
    good = requests[1].to_dict()
    for field, value in [("n", 0), ("batch_size", 0), ("split", "val"), ("norm", "l3"), ("steps", 0),
                         ("random_start", "yes"), ("version", "standard"), ("seed", -1)]:
        with pytest.raises(InvalidParameterError):
            EvaluateRequest.from_dict({**good, field: value})
    with pytest.raises(InvalidParameterError, match="need an attack"):
        EvaluateRequest(model=a, dataset="shapes", eps=0.1).validate()
    with pytest.raises(InvalidParameterError, match="takes no alpha"):
        EvaluateRequest(model=a, dataset="shapes", attack="apgd-ce", alpha=0.1).validate()
    report = requests[3].to_dict()
    for field, value in [("eps", None), ("sweep", [0.1] * 33), ("masking", None), ("version", "custom"),
                         ("source", [report["model"], report["model"]]), ("pgd_steps", 0)]:
        with pytest.raises(InvalidParameterError):
            ReportRequest.from_dict({**report, field: value})


def test_stored_results_print_without_torch(tiny_checkpoints):
    import os
    import subprocess
    import sys
    from pathlib import Path

    ref = ModelRef.of(tiny_checkpoints["standard"])
    keys = [run_analysis(EvaluateRequest(model=ref, dataset="shapes", n=4, attack="apgd-ce", eps=0.1, steps=2)).key,
            run_analysis(ReportRequest(model=ref, dataset="shapes", eps=0.5, n=2, masking=False, sweep=(0.5,))).key]
    code = ("import sys, engine.analysis as a; s = a.ResultStore(); "
            "[a.get_analysis(r.kind).report(r) for r in (s.load(k) for k in sys.argv[1:])]; "
            "print('torch' in sys.modules)")
    repo = Path(__file__).resolve().parents[4]
    out = subprocess.run([sys.executable, "-c", code, *keys], cwd=repo, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(repo)))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_bad_attack_is_refused_before_a_job_is_queued(tiny_checkpoints):
    request = EvaluateRequest(model=ModelRef.of(tiny_checkpoints["standard"]), dataset="shapes", n=4,
                              attack="square", steps=3)
    with pytest.raises(InvalidParameterError, match="does not take steps"):
        submit(request)
    assert JobStore().list() == []


# ------------------------------------------------------------------ the same numbers as the engine
def test_evaluation_equals_the_direct_engine_calls(tiny_checkpoints):
    from engine.attacks import PGD, evaluate_autoattack, make_attack, robust_accuracy
    from engine.checkpoints import load
    from engine.evaluation import accuracy

    model = load(tiny_checkpoints["standard"]).model
    dataset = edata.load_dataset("shapes", split="test")
    images, labels = edata.take(dataset, 12)
    ref = ModelRef.of(tiny_checkpoints["standard"])

    pgd = run_analysis(EvaluateRequest(model=ref, dataset="shapes", n=12, batch_size=5, attack="pgd", eps=0.1,
                                       steps=3, seed=7))
    clean = accuracy(model, dataset, n=12, batch_size=5)
    torch.manual_seed(7)  # the analysis seeds PGD's random start with the request's seed
    direct = robust_accuracy(model, images, labels, PGD(eps=0.1, steps=3), batch_size=5)
    got = pgd.value()
    assert got.clean.accuracy == clean.accuracy and got.clean.total == 12
    assert got.attack.robust_acc == direct.robust_acc and got.attack.config == direct.config

    square = run_analysis(EvaluateRequest(model=ref, dataset="shapes", n=12, attack="square", eps=0.3, queries=40))
    direct = evaluate_autoattack(model, images, labels, make_attack("square", "shapes", eps=0.3, queries=40, seed=0))
    got = square.value().attack
    assert got.robust_acc == direct.robust_acc and without_timing(got.per_attack) == without_timing(direct.per_attack)
    assert torch.equal(got.found_by, direct.found_by) and torch.equal(got.robust, direct.robust)
    body = ANALYSES["robust_accuracy"].report(square)
    assert body["attack_n"] == 12 and body["per_attack"][0]["attack"] == "square" and body["seed"] == 0


def test_report_equals_the_report_computed_directly(tiny_checkpoints):
    from engine.attacks.report import robustness_report
    from engine.checkpoints import load

    loaded, source = load(tiny_checkpoints["robust"]), load(tiny_checkpoints["standard"])
    request = ReportRequest(model=ModelRef.of(tiny_checkpoints["robust"]), dataset="shapes", eps=0.1, n=6,
                            pgd_steps=3, square_queries=30, sweep=(0.0, 0.1), source=(ModelRef.of(source.path),))
    result = run_analysis(request)
    images, labels = edata.take(edata.load_dataset("shapes", split="test"), 6)
    torch.manual_seed(0)
    direct = robustness_report(loaded.model, images, labels, 0.1, "linf", name=loaded.name,
                               checkpoint=str(loaded.path), dataset="shapes", card=loaded.card, pgd_steps=3,
                               square_queries=30, sweep_eps=[0.0, 0.1], source_model=source.model)
    stored = result.value()
    assert without_timing(finite(stored.as_dict())) == without_timing(json.loads(json.dumps(finite(direct.as_dict()))))
    assert stored.masking is not None and stored.card_metrics == {"clean_acc": 0.5}
    assert ANALYSES["robustness_report"].report(result) == result.meta["report"]
    assert [r["measure"] for r in ANALYSES["robustness_report"].rows(result)] == \
        [r["measure"] for r in direct.summary_rows()]


def test_quick_report_is_its_own_stored_result_with_the_engine_figures(tiny_checkpoints):
    from engine.attacks import AutoAttack, evaluate_autoattack
    from engine.attacks.report import robustness_report
    from engine.checkpoints import load

    loaded, source = load(tiny_checkpoints["robust"]), load(tiny_checkpoints["standard"])
    ref, src = ModelRef.of(tiny_checkpoints["robust"]), ModelRef.of(source.path)
    full = ReportRequest(model=ref, dataset="shapes", eps=0.1, n=6, pgd_steps=3, source=(src,))
    quick = ReportRequest(model=ref, dataset="shapes", eps=0.1, n=6, pgd_steps=3, source=(src,), preset="quick")
    assert ReportRequest.from_json(quick.to_json()) == quick and quick.key() != full.key()
    # a full request's JSON (and key) is what it was before presets existed
    assert "preset" not in full.to_dict() and ReportRequest.from_dict(full.to_dict()) == full
    assert quick.to_dict()["preset"] == "quick" and "quick" in quick.describe()
    for bad in ({"preset": "fast"}, {"preset": "quick", "version": "plus"}, {"preset": "quick", "square_queries": 30}):
        with pytest.raises(InvalidParameterError):
            ReportRequest.from_dict({**quick.to_dict(), **bad})

    result = run_analysis(quick)
    stored = result.value()
    assert not result.cached and stored.preset == "quick"
    assert [s["attack"] for s in stored.autoattack["per_attack"]] == ["apgd-ce", "apgd-t"]
    again = run_analysis(quick)
    assert again.cached and again.key == result.key == quick.key()
    assert without_timing(again.meta["report"]) == without_timing(result.meta["report"])

    images, labels = edata.take(edata.load_dataset("shapes", split="test"), 6)
    torch.manual_seed(0)
    direct = robustness_report(loaded.model, images, labels, 0.1, "linf", name=loaded.name,
                               checkpoint=str(loaded.path), dataset="shapes", card=loaded.card, pgd_steps=3,
                               source_model=source.model, preset="quick")
    assert without_timing(finite(stored.as_dict())) == without_timing(json.loads(json.dumps(finite(direct.as_dict()))))
    attacks = evaluate_autoattack(loaded.model, images, labels,
                                  AutoAttack(eps=0.1, version="custom", attacks=("apgd-ce", "apgd-t"), seed=0))
    assert stored.autoattack["robust_acc"] == attacks.robust_acc
    assert without_timing(stored.autoattack["per_attack"]) == without_timing(attacks.per_attack)
    checks = {c["name"]: c["status"] for c in stored.masking["checks"]}
    assert checks["whitebox_vs_blackbox"] == checks["more_effort"] == "skipped"
    assert checks["whitebox_vs_transfer"] != "skipped"  # the standard model was given
    assert "quick: APGD-CE + APGD-T (upper bound)" in [r["measure"] for r in ANALYSES["robustness_report"].rows(result)]


def test_the_estimate_follows_the_preset(tiny_checkpoints):
    from engine.analysis.cost import attack_passes, estimate
    from engine.checkpoints import load

    loaded = load(tiny_checkpoints["standard"])
    ref = ModelRef.from_loaded(loaded)
    full = estimate(ReportRequest(model=ref, dataset="shapes", eps=0.1, n=100), [loaded])
    quick = estimate(ReportRequest(model=ref, dataset="shapes", eps=0.1, n=100, preset="quick"), [loaded])
    sequence = attack_passes("autoattack", {"version": "custom", "attacks": ["apgd-ce", "apgd-t"]})
    assert sequence < quick.passes < full.passes / 3  # no FAB-T, no Square, no extra effort
    assert full.passes > attack_passes("autoattack", {}) + 12 * attack_passes("apgd-ce", {})
    bare = estimate(ReportRequest(model=ref, dataset="shapes", eps=0.1, n=100, preset="quick", masking=False), [loaded])
    assert bare.passes < quick.passes


def test_estimates_cover_both_kinds(tiny_checkpoints):
    from engine.analysis.cost import attack_passes, estimate
    from engine.checkpoints import load

    loaded = load(tiny_checkpoints["standard"])
    ref = ModelRef.from_loaded(loaded)
    clean = estimate(EvaluateRequest(model=ref, dataset="shapes"), [loaded])
    attacked = estimate(EvaluateRequest(model=ref, dataset="shapes", n=100, attack="autoattack"), [loaded])
    assert clean.passes == 1.0 and "2000 images" in clean.how  # the whole split
    assert attacked.passes == 1.0 + attack_passes("autoattack", {"seed": 0}) > 1000
    report = estimate(ReportRequest(model=ref, dataset="shapes", eps=0.1, n=10), [loaded])
    assert report.passes > attacked.passes and report.seconds > 0


# ------------------------------------------------------------------ store, cancel, jobs, CLI
def test_cancel_stores_nothing(tiny_checkpoints):
    ref = ModelRef.of(tiny_checkpoints["standard"])
    for request in (EvaluateRequest(model=ref, dataset="shapes", n=40, batch_size=4, attack="apgd-ce", eps=0.1),
                    ReportRequest(model=ref, dataset="shapes", eps=0.1, n=8, batch_size=4, masking=False)):
        assert_stopping_stores_nothing(request, polls=3)


def test_cli_second_run_is_cached_and_new_weights_miss_it(tiny_checkpoints, tmp_path, capsys):
    stem = copy_checkpoint(tiny_checkpoints["standard"], tmp_path / "m")
    args = ["evaluate", "--checkpoint", stem, "--attack", "pgd", "--eps", "0.1", "--steps", "2", "--n", "10", "--json"]
    rc, first, _ = cli(args, capsys)
    assert rc == 0 and first["cached"] is False and {"clean_acc", "robust_acc", "attack_seconds"} <= set(first)
    rc, again, _ = cli(args, capsys)
    assert rc == 0 and again["cached"] is True and again["result"] == first["result"]
    assert without_timing(again) == {**without_timing(first), "cached": True}
    rc, fresh, _ = cli(args + ["--no-cache"], capsys)
    assert rc == 0 and fresh["cached"] is False and fresh["robust_acc"] == first["robust_acc"]  # seeded

    copy_checkpoint(tiny_checkpoints["robust"], stem)  # new weights under the same name
    rc, other, _ = cli(args, capsys)
    assert rc == 0 and other["cached"] is False and other["result"] != first["result"]

    report_args = ["report", "--checkpoint", stem, "--n", "4", "--no-masking", "--sweep", "0.1", "--pgd-steps", "2",
                   "--json"]
    rc, first, _ = cli(report_args, capsys)
    assert rc == 0 and first["cached"] is False and first["eps"] == pytest.approx(8 / 255)  # the card's threat
    rc, again, _ = cli(report_args, capsys)
    assert rc == 0 and again["cached"] is True and without_timing(again) == {**without_timing(first), "cached": True}
    out = tmp_path / "rep"
    assert main([str(a) for a in report_args[:-1]] + ["--out", str(out)]) == 0
    assert json.loads((out / "report.json").read_text())["autoattack"] == first["autoattack"]


def test_cli_background_job_gives_the_foreground_numbers(tiny_checkpoints, capsys):
    args = ["evaluate", "--checkpoint", tiny_checkpoints["standard"], "--attack", "autoattack", "--version", "custom",
            "--attacks", "apgd-ce,square", "--queries", "30", "--steps", "5", "--eps", "0.1", "--n", "12", "--json"]
    rc, queued, _ = cli(args + ["--background"], capsys)
    assert rc == 0 and queued["status"] == "queued" and queued["kind"] == "robust_accuracy"
    assert run_worker(JobStore(), once=True, lane="analysis") == 1
    assert main(["jobs", "wait", str(queued["job"]), "--quiet"]) == 0
    capsys.readouterr()
    rc, stored, _ = cli(["jobs", "result", queued["job"], "--json"], capsys)
    assert rc == 0 and stored["cached"] is True and [s["attack"] for s in stored["per_attack"]] == ["apgd-ce", "square"]
    rc, foreground, _ = cli(args + ["--no-cache"], capsys)
    assert rc == 0 and foreground["cached"] is False
    assert without_timing({**foreground, "cached": True}) == without_timing(stored)

    rc, report_job, _ = cli(["report", "--checkpoint", tiny_checkpoints["standard"], "--n", "4", "--eps", "0.5",
                             "--no-masking", "--sweep", "0.1", "--background", "--json"], capsys)
    assert rc == 0 and report_job["kind"] == "robustness_report"
    assert run_worker(JobStore(), once=True, lane="analysis") == 1
    rc, report, _ = cli(["jobs", "result", report_job["job"], "--json"], capsys)
    assert rc == 0 and report["n"] == 4 and report["autoattack"]["version"] == "standard"


def test_record_writes_the_card_also_from_a_stored_result(tiny_checkpoints, tmp_path, capsys):
    from engine.checkpoints.store import update_card

    stem = copy_checkpoint(tiny_checkpoints["standard"], tmp_path / "rec")
    key_before = ModelRef.of(stem).sha256
    args = ["evaluate", "--checkpoint", stem, "--attack", "apgd-ce", "--eps", "0.1", "--steps", "3", "--n", "8",
            "--json", "--record"]
    rc, first, _ = cli(args, capsys)
    assert rc == 0 and first["cached"] is False and first["recorded_in"].endswith("rec.json")
    card = json.loads((tmp_path / "rec.json").read_text())
    assert card["metrics"]["apgd-ce"]["robust_acc"] == first["robust_acc"]
    assert ModelRef.of(stem).sha256 == key_before  # the card changed, the weights (and the key) did not

    update_card(stem, {"metrics": {"clean_acc": 0.5}})  # someone else rewrites the card's figures
    rc, again, _ = cli(args, capsys)
    assert rc == 0 and again["cached"] is True and again["result"] == first["result"]
    card = json.loads((tmp_path / "rec.json").read_text())
    assert card["metrics"]["apgd-ce"]["robust_acc"] == first["robust_acc"]
    assert "--record" not in card["metrics"]["apgd-ce"]["measured_with"]

    rc, _, err = cli(args + ["--background"], capsys)
    assert rc == 2 and "drop --background" in err

