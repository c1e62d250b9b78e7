"""Saliency page's explanation-metrics view, run headlessly with Streamlit's AppTest on the tiny
shapes pair: the table of every metric for A and B side by side, its CSV, the explanations, the
background round trip and the permalink that reopens it without models."""
from __future__ import annotations

import math

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import finish_job, no_checkpoints, ok, open_result, page, refuse_compute, run_ok, texts
from engine.analysis import ResultStore
from engine.analysis.kinds.saliency_metrics import METRICS, SCORES

SALIENCY = page("saliency")
A, B = "A: tiny_standard (standard)", "B: tiny_robust (pgd ℓ∞ ε=0.0314)"

pytestmark = pytest.mark.usefixtures("no_autostart")


def _small(at: AppTest, where: str = "here") -> AppTest:
    """The view's settings made cheap (16 images, few flipping steps and sensitivity samples), run
    ``where`` ("here" or "background": not the measured estimate's choice)."""
    at.radio(key="metrics_mode").set_value(where)
    at.select_slider(key="metrics_n").set_value(16)
    at.number_input(key="metrics_flip_steps").set_value(8)
    at.number_input(key="metrics_samples").set_value(2)
    return at


def _cells(frame) -> list[float]:
    return [float(v) for column in (A, B) for v in frame[column]]


def test_the_metrics_view_shows_every_figure_for_a_and_b(tiny_checkpoints):
    at = run_ok(AppTest.from_file(SALIENCY, default_timeout=180))
    assert at.multiselect(key="metrics_names").value == list(METRICS)  # shapes has masks: all offered
    _small(at).button(key="metrics_run").click()
    run_ok(at)
    frame = at.session_state["metrics_frame"]
    assert list(frame.columns) == ["method", "metric", "better", A, B]
    assert list(frame["metric"]) == [SCORES[s].label for m in METRICS for s in METRICS[m][1]]
    assert all(math.isfinite(v) for v in _cells(frame))  # every figure is there, for both models
    assert set(frame["better"]) == {"higher", "lower"} and (frame["method"] == "Vanilla gradient").all()
    shown = next(table.value for table in at.dataframe if A in table.value.columns)
    assert shown[A].tolist() == frame[A].tolist() and shown[B].tolist() == frame[B].tolist()
    assert any(b.label == "Download metrics (CSV)" for b in at.get("download_button"))
    assert "ROAD MoRF accuracy** (lower is better)" in " ".join(m.value for m in at.markdown)
    key = at.query_params["result"]
    assert f"Result `{key}` (computed now" in texts(at)
    assert "metrics_stop" not in {b.key for b in at.button}  # the run ended: its Stop button is gone


@pytest.fixture
def fresh_mask_cache():
    """``has_masks`` forgets its answers before and after (Streamlit's cache outlives a test)."""
    import pages.saliency_metrics_view as view

    view.has_masks.clear()
    yield view.has_masks
    view.has_masks.clear()


def test_without_masks_localisation_is_not_offered(tiny_checkpoints, monkeypatch, fresh_mask_cache):
    at = run_ok(AppTest.from_file(SALIENCY, default_timeout=120))
    assert "pointing_game" in at.multiselect(key="metrics_names").options
    fresh_mask_cache.clear()
    monkeypatch.setattr("engine.attribution.metrics.dataset_masks", lambda dataset, indices=None: None)
    run_ok(at)
    names = at.multiselect(key="metrics_names")
    assert not set(names.options) & {"pointing_game", "relevance_mass"} and names.value == names.options
    assert "has no foreground masks" in texts(at)


def test_background_metrics_then_permalink_without_models(tiny_checkpoints, monkeypatch, tmp_path):
    import engine.attribution.metrics

    at = run_ok(_small(AppTest.from_file(SALIENCY, default_timeout=180).run(), "background"))
    at.multiselect(key="metrics_names").set_value(["road", "pointing_game"])
    at.button(key="metrics_run").click().run()
    ok(at)
    job_id = int(at.query_params["job"])
    assert f"Queued as background job {job_id}" in texts(at) and "metrics_frame" not in at.session_state
    key = finish_job(at, job_id)
    frame = at.session_state["metrics_frame"]
    assert list(frame["metric"]) == ["ROAD MoRF accuracy", "ROAD LeRF accuracy", "Pointing game"]
    assert all(math.isfinite(v) for v in _cells(frame))
    assert [e.kind for e in ResultStore().list() if e.key == key] == ["saliency_metrics"]

    refuse_compute(monkeypatch, engine.attribution.metrics, "explanation_metrics")
    no_checkpoints(monkeypatch, tmp_path)
    alone = open_result(SALIENCY, key)
    assert "Stored metrics" in texts(alone) and "These metrics are for `tiny_standard`, `tiny_robust`." in texts(alone)
    stored = alone.session_state["metrics_frame"]
    assert list(stored.columns) == ["method", "metric", "better", "tiny_standard", "tiny_robust"]
    assert stored["tiny_standard"].tolist() == frame[A].tolist() and "Choose model" not in texts(alone)
