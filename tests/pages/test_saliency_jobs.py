"""Saliency page's keep/remove curves and ε-vs-interpretability trade-off as stored analyses:
background job -> worker -> Results page -> permalink reopens the view without computing."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.analysis import ResultStore
from engine.jobs import JobStore, run_worker

REPO = Path(__file__).resolve().parents[2]
SALIENCY = str(REPO / "pages" / "saliency.py")
RESULTS = str(REPO / "pages" / "results.py")


@pytest.fixture(autouse=True)
def _no_autostart(monkeypatch):
    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")


def _texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "info", "caption", "warning", "subheader")
                    for e in at.get(kind))


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _no_compute(*args, **kwargs):
    raise AssertionError("a permalink must not compute")


def _results_page_offers(key: str) -> None:
    """The Results page lists ``key`` and offers to open it on the Saliency page."""
    results = _ok(AppTest.from_file(RESULTS, default_timeout=60).run())
    assert key in list(results.dataframe[-1].value["key"])
    results.selectbox(key="results_pick").set_value(key).run()
    _ok(results)
    assert f"/saliency?result={key}" in _texts(results)
    assert results.button(key="results_open").label == "Open on the Saliency page"


def _kinds() -> list[str]:
    return sorted(info.kind for info in ResultStore().list())


def _background(at: AppTest, picker: str, button: str) -> int:
    """Choose "in the background" on ``picker``, click ``button``: the queued job's id."""
    at.radio(key=picker).set_value("background")
    at.button(key=button).click().run()
    _ok(at)
    job_id = int(at.query_params["job"])
    assert f"Queued as background job {job_id}" in _texts(at)
    at.run()  # another look while it waits: its state is read from the job store
    assert f"Background job {job_id} is queued" in _texts(at)
    assert run_worker(JobStore(), once=True, lane="analysis") == 1  # the tab is irrelevant to the worker
    at.run()
    _ok(at)
    key = JobStore().get(job_id).result_key
    assert at.query_params["result"] == key
    return key


def test_background_curves_then_results_page_then_permalink(tiny_checkpoints, monkeypatch, tmp_path):
    at = _ok(AppTest.from_file(SALIENCY, default_timeout=120).run())
    at.select_slider(key="curve_n").set_value(16)
    at.multiselect(key="curve_fractions").set_value([0.0, 0.5, 1.0])
    key = _background(at, "curve_mode", "curve_run")
    assert _kinds() == ["saliency_curves", "saliency_grid"]
    frame = at.session_state["curve_frame"]
    assert len(frame) == 2 * 2 * 3 and set(frame["model"]) == {"A: tiny_standard (standard)",
                                                               "B: tiny_robust (pgd ℓ∞ ε=0.0314)"}
    assert at.get("plotly_chart") and "(computed now" not in _texts(at)
    at.number_input(key="sal_index").set_value(4).run()  # the maps change; the URL stays the curves'
    _ok(at)
    assert at.query_params["result"] == key

    _results_page_offers(key)

    import engine.attribution

    monkeypatch.setattr(engine.attribution, "keep_remove_curves", _no_compute)
    fresh = AppTest.from_file(SALIENCY, default_timeout=60)
    fresh.query_params["result"] = key
    _ok(fresh.run())
    assert fresh.session_state["curve_frame"].equals(frame)
    assert f"Result `{key}` (stored earlier" in _texts(fresh) and fresh.query_params["result"] == key

    empty = tmp_path / "no_checkpoints"  # the Results page's "open" with no models chosen
    empty.mkdir()
    monkeypatch.setenv("ROBUSTSCOPE_CHECKPOINTS", str(empty))
    alone = AppTest.from_file(SALIENCY, default_timeout=60)
    alone.query_params["result"] = key
    _ok(alone.run())
    assert "Stored curves" in _texts(alone) and "These curves are for `tiny_standard`, `tiny_robust`." in _texts(alone)
    assert set(alone.session_state["curve_frame"]["model"]) == {"tiny_standard", "tiny_robust"}
    assert alone.get("plotly_chart") and "Choose model" not in _texts(alone)


def test_background_tradeoff_then_results_page_then_permalink(tiny_checkpoints, monkeypatch, tmp_path):
    at = _ok(AppTest.from_file(SALIENCY, default_timeout=120).run())
    at.select_slider(key="eps_n").set_value(16)
    key = _background(at, "eps_mode", "eps_run")
    assert _kinds() == ["saliency_grid", "tradeoff"]
    frame = at.session_state["eps_frame"]
    assert list(frame["epsilon"]) == pytest.approx([0.0, 8 / 255]) and (frame["n"] == 16).all()

    _results_page_offers(key)

    import engine.attribution

    monkeypatch.setattr(engine.attribution, "epsilon_tradeoff", _no_compute)
    fresh = AppTest.from_file(SALIENCY, default_timeout=60)
    fresh.query_params["result"] = key
    _ok(fresh.run())
    assert fresh.session_state["eps_frame"].equals(frame)
    assert f"Result `{key}` (stored earlier" in _texts(fresh)

    empty = tmp_path / "no_checkpoints"
    empty.mkdir()
    monkeypatch.setenv("ROBUSTSCOPE_CHECKPOINTS", str(empty))
    alone = AppTest.from_file(SALIENCY, default_timeout=60)
    alone.query_params["result"] = key
    _ok(alone.run())
    assert "Stored trade-off" in _texts(alone) and alone.get("plotly_chart")
    assert alone.session_state["eps_frame"].equals(frame) and "Choose model" not in _texts(alone)
