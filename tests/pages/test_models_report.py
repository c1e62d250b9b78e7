"""The Models page's robustness report as an analysis: background job -> worker -> the report on the
page -> the Results page opens it on the Models page -> the permalink reopens it without computing."""
from __future__ import annotations

import math
import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import RESULTS, finish_job, open_result, page, refuse_compute, run_ok, texts
from engine.analysis import ResultStore

MODELS = page("models")

pytestmark = pytest.mark.usefixtures("no_autostart")


def _ask_for_a_report(at: AppTest, mode: str) -> None:
    """A quick report of model A: ε 0.5 (every image falls to APGD-CE), 16 images, no masking checks."""
    at.number_input(key="report_eps_A_shapes_linf").set_value(0.5)
    at.select_slider(key="report_n").set_value(16)
    at.checkbox(key="report_masking").uncheck()
    at.radio(key="report_mode").set_value(mode)
    at.button(key="report_run").click()
    run_ok(at)


def test_background_report_then_results_page_then_permalink(tiny_checkpoints, monkeypatch):
    at = run_ok(AppTest.from_file(MODELS, default_timeout=300))
    _ask_for_a_report(at, "background")
    job_id = int(at.query_params["job"])
    assert f"Queued as background job {job_id}" in texts(at) and ResultStore().list() == []
    assert not at.get("download_button") or "Report (JSON)" not in {b.label for b in at.get("download_button")}

    run_ok(at)  # another look while it waits: read from the job store
    assert f"Background job {job_id} is waiting: no worker is running" in texts(at)

    key = finish_job(at, job_id)
    report = ResultStore().load(key).value()
    assert report.n == 16 and report.autoattack["robust_acc"] == 0.0 and math.isclose(report.eps, 0.5)
    assert report.masking is None and "Report (JSON)" in {b.label for b in at.get("download_button")}

    results = run_ok(AppTest.from_file(RESULTS, default_timeout=60))
    assert f"/models?result={key}" in texts(results)
    assert results.button(key="results_open").label == "Open on the Models page"

    import engine.attacks.report

    refuse_compute(monkeypatch, engine.attacks.report, "robustness_report")
    fresh = open_result(MODELS, key)
    assert f"Result `{key}` (stored earlier" in texts(fresh)
    assert "**tiny_standard** on 16 `shapes` test images" in texts(fresh)
    assert "Report (JSON)" in {b.label for b in fresh.get("download_button")}


def test_report_here_is_stored_and_the_same_settings_read_it_back(tiny_checkpoints, monkeypatch):
    at = run_ok(AppTest.from_file(MODELS, default_timeout=300))
    _ask_for_a_report(at, "here")
    key = at.query_params["result"]
    assert f"Result `{key}` (computed now" in texts(at) and ResultStore().exists(key)

    import engine.attacks.report

    refuse_compute(monkeypatch, engine.attacks.report, "robustness_report",
                   "a stored report must not be measured again")
    again = run_ok(AppTest.from_file(MODELS, default_timeout=60))
    _ask_for_a_report(again, "here")
    assert again.query_params["result"] == key and f"Result `{key}` (stored earlier" in texts(again)

    again.select_slider(key="report_n").set_value(32)  # a new report, queued while the stored one is linked
    again.radio(key="report_mode").set_value("background")
    again.button(key="report_run").click()
    run_ok(again)
    job_id = int(again.query_params["job"])
    assert "result" not in again.query_params and f"Queued as background job {job_id}" in texts(again)
    assert "Report (JSON)" not in {b.label for b in again.get("download_button")}


def test_quick_report_by_default_and_the_full_one_a_click_away(tiny_checkpoints):
    from engine.jobs import JobStore

    at = run_ok(AppTest.from_file(MODELS, default_timeout=300))
    labels = {b.label for b in at.button}
    assert {"Measure report", "Full AutoAttack report"} <= labels
    assert at.select_slider(key="report_n").value == 100
    _ask_for_a_report(at, "here")
    quick_key = at.query_params["result"]
    quick = ResultStore().load(quick_key).value()
    assert quick.preset == "quick" and [s["attack"] for s in quick.autoattack["per_attack"]] == ["apgd-ce", "apgd-t"]
    shown = texts(at)
    assert "quick report" in shown and "quick: APGD-CE + APGD-T" in shown and "upper bound" in shown
    assert "not AutoAttack" in shown and "Full AutoAttack report" in shown

    at.radio(key="report_mode").set_value("background")  # the full one, as a background job
    at.button(key="report_full").click()
    run_ok(at)
    job_id = int(at.query_params["job"])
    request = JobStore().get(job_id).config.request
    assert request.preset == "full" and request.version == "standard" and request.key() != quick_key
    full_key = finish_job(at, job_id)
    full = ResultStore().load(full_key).value()
    assert full.preset == "full" and [s["attack"] for s in full.autoattack["per_attack"]] == \
        ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert full.autoattack["per_attack"][1]["robust_acc_after"] == quick.autoattack["robust_acc"]
    assert "full AutoAttack report" in texts(at)
    assert any("AutoAttack (standard)" in frame.value.to_string() for frame in at.dataframe)
