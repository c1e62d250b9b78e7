"""Saliency page's keep/remove curves and ε-vs-interpretability trade-off as stored analyses:
background job -> worker -> Results page -> permalink reopens the view without computing."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import RESULTS, finish_job, no_checkpoints, ok, open_result, page, refuse_compute, texts
from engine.analysis import ResultStore

SALIENCY = page("saliency")

pytestmark = pytest.mark.usefixtures("no_autostart")


def _results_page_then_permalink(monkeypatch, key: str, compute: str) -> AppTest:
    """The Results page lists ``key`` and offers to open it on the Saliency page; the permalink
    opens it there without calling ``engine.attribution.COMPUTE``."""
    import engine.attribution

    results = ok(AppTest.from_file(RESULTS, default_timeout=60).run())
    assert key in list(results.dataframe[-1].value["key"])
    results.selectbox(key="results_pick").set_value(key).run()
    ok(results)
    assert f"/saliency?result={key}" in texts(results)
    assert results.button(key="results_open").label == "Open on the Saliency page"
    refuse_compute(monkeypatch, engine.attribution, compute)
    return open_result(SALIENCY, key)


def _kinds() -> list[str]:
    return sorted(info.kind for info in ResultStore().list())


def _background(at: AppTest, picker: str, button: str) -> str:
    """Choose "in the background" on ``picker``, click ``button``, run the queued job: its result key."""
    at.radio(key=picker).set_value("background")
    at.button(key=button).click().run()
    ok(at)
    job_id = int(at.query_params["job"])
    assert f"Queued as background job {job_id}" in texts(at)
    at.run()  # another look while it waits: its state is read from the job store
    assert f"Background job {job_id} is waiting: no worker is running" in texts(at)
    return finish_job(at, job_id)


def test_background_curves_then_results_page_then_permalink(tiny_checkpoints, monkeypatch, tmp_path):
    at = ok(AppTest.from_file(SALIENCY, default_timeout=120).run())
    at.select_slider(key="curve_n").set_value(16)
    at.multiselect(key="curve_fractions").set_value([0.0, 0.5, 1.0])
    key = _background(at, "curve_mode", "curve_run")
    assert _kinds() == ["saliency_curves", "saliency_grid"]
    frame = at.session_state["curve_frame"]
    assert len(frame) == 2 * 2 * 3 and set(frame["model"]) == {"A: tiny_standard (standard)",
                                                               "B: tiny_robust (pgd ℓ∞ ε=0.0314)"}
    assert at.get("plotly_chart") and "(computed now" not in texts(at)
    at.number_input(key="sal_index").set_value(4).run()  # the maps change; the URL stays the curves'
    ok(at)
    assert at.query_params["result"] == key

    fresh = _results_page_then_permalink(monkeypatch, key, "keep_remove_curves")
    assert fresh.session_state["curve_frame"].equals(frame)
    assert f"Result `{key}` (stored earlier" in texts(fresh) and fresh.query_params["result"] == key

    no_checkpoints(monkeypatch, tmp_path)  # the Results page's "open" with no models chosen
    alone = open_result(SALIENCY, key)
    assert "Stored curves" in texts(alone) and "These curves are for `tiny_standard`, `tiny_robust`." in texts(alone)
    assert set(alone.session_state["curve_frame"]["model"]) == {"tiny_standard", "tiny_robust"}
    assert alone.get("plotly_chart") and "Choose model" not in texts(alone)


def test_background_tradeoff_then_results_page_then_permalink(tiny_checkpoints, monkeypatch, tmp_path):
    at = ok(AppTest.from_file(SALIENCY, default_timeout=120).run())
    at.select_slider(key="eps_n").set_value(16)
    key = _background(at, "eps_mode", "eps_run")
    assert _kinds() == ["saliency_grid", "tradeoff"]
    frame = at.session_state["eps_frame"]
    assert list(frame["epsilon"]) == pytest.approx([0.0, 8 / 255]) and (frame["n"] == 16).all()

    fresh = _results_page_then_permalink(monkeypatch, key, "epsilon_tradeoff")
    assert fresh.session_state["eps_frame"].equals(frame)
    assert f"Result `{key}` (stored earlier" in texts(fresh)

    no_checkpoints(monkeypatch, tmp_path)
    alone = open_result(SALIENCY, key)
    assert "Stored trade-off" in texts(alone) and alone.get("plotly_chart")
    assert alone.session_state["eps_frame"].equals(frame) and "Choose model" not in texts(alone)
