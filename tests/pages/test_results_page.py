"""Background analysis from a page -> worker -> Results page -> permalink reopens the view."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.analysis import ResultStore
from engine.jobs import JobStore, run_worker

REPO = Path(__file__).resolve().parents[2]
REPRESENTATIONS = str(REPO / "pages" / "representations.py")
RESULTS = str(REPO / "pages" / "results.py")


@pytest.fixture(autouse=True)
def _no_autostart(monkeypatch):
    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")


def _texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "info", "caption", "warning", "subheader")
                    for e in at.get(kind))


def test_background_cka_then_results_page_then_permalink(tiny_checkpoints, monkeypatch):
    at = AppTest.from_file(REPRESENTATIONS, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.number_input[0].set_value(24)
    at.number_input[1].set_value(8)
    at.radio(key="cka_mode").set_value("background")
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    job_id = int(at.query_params["job"])
    assert f"Queued as background job {job_id}" in _texts(at)
    assert not at.get("plotly_chart") and ResultStore().list() == []

    at.run()  # another look while it waits: its state is read from the job store
    assert f"Background job {job_id} is queued" in _texts(at)

    assert run_worker(JobStore(), once=True, lane="analysis") == 1  # the tab is irrelevant to the worker
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    key = at.query_params["result"]
    assert JobStore().get(job_id).result_key == key
    assert "clean inputs · 24 images" in at.subheader[0].value and len(at.get("plotly_chart")) == 2

    results = AppTest.from_file(RESULTS, default_timeout=60)
    results.run()
    assert not results.exception, [e.value for e in results.exception]
    listing = results.dataframe[-1].value
    assert list(listing["key"]) == [key] and "tiny_standard" in listing["models"][0]
    assert results.selectbox(key="results_pick").value == key
    assert f"/representations?result={key}" in _texts(results)
    jobs = results.dataframe[0].value
    assert list(jobs["job"]) == [job_id] and list(jobs["status"]) == ["done"]

    import engine.similarity

    def no_compute(*args, **kwargs):
        raise AssertionError("a permalink must not compute")

    monkeypatch.setattr(engine.similarity, "compare_models", no_compute)
    fresh = AppTest.from_file(REPRESENTATIONS, default_timeout=60)
    fresh.query_params["result"] = key
    fresh.run()
    assert not fresh.exception, [e.value for e in fresh.exception]
    assert "clean inputs · 24 images" in fresh.subheader[0].value and len(fresh.get("plotly_chart")) == 2
    assert f"Result `{key}` (stored earlier" in _texts(fresh)


def test_results_page_lists_a_damaged_entry_without_failing(tiny_checkpoints):
    from engine.analysis import CKARequest, ModelRef, run_analysis

    request = CKARequest(a=ModelRef.of(tiny_checkpoints["standard"]), b=ModelRef.of(tiny_checkpoints["robust"]),
                         dataset="shapes", n=12, batch_size=6)
    good = run_analysis(request)
    other = run_analysis(CKARequest(**{**request.__dict__, "n": 16}))
    (ResultStore().path(other.key) / "result.json").write_text("{")
    at = AppTest.from_file(RESULTS, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    listing = at.dataframe[-1].value.set_index("key")
    assert listing.loc[other.key, "details"].startswith("damaged")
    assert at.selectbox(key="results_pick").value == good.key


def test_stale_permalink_says_so(tiny_checkpoints):
    at = AppTest.from_file(REPRESENTATIONS, default_timeout=60)
    at.query_params["result"] = "0123456789abcdef0123456789abcdef"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "No stored result" in _texts(at)
