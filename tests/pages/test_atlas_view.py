"""The Features page's Unit atlas view (AppTest, issue 24): make an atlas of the shapes pair, page
through both models side by side, open a unit and its best match, reopen both from their links
without models, watch a running job's atlas fill in, and queue one in the background."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import no_checkpoints, page, run_ok, texts
from engine.analysis import ResultStore
from engine.analysis.kinds.atlas import AtlasRequest
from engine.analysis.runner import RunContext
from engine.jobs import JobStore, run_worker

PAGE = page("features")
pytestmark = pytest.mark.usefixtures("no_autostart")


def atlas_page(mode: str = "here") -> AppTest:
    """The Features page switched to the atlas view, its form filled small."""
    at = run_ok(AppTest.from_file(PAGE, default_timeout=180))
    at.radio(key="features_view").set_value("Unit atlas")
    run_ok(at)
    at.number_input(key="atlas_n").set_value(40)
    for label, value in (("Top-k images", 4), ("Random directions", 2), ("Lucent steps", 8)):
        next(n for n in at.number_input if n.label == label).set_value(value)
    at.radio(key="atlas_mode").set_value(mode)
    return at


def make(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Make the atlas").click()
    return run_ok(at)


def buttons(at: AppTest, prefix: str) -> list:
    return [b for b in at.button if (b.key or "").startswith(prefix)]


def test_make_an_atlas_page_through_it_and_open_a_unit_and_its_match(tiny_checkpoints, monkeypatch, tmp_path):
    at = make(atlas_page())
    key = at.query_params["atlas"]
    atlas = ResultStore().load(key).value()
    counts = [len(m.units.mean) for m in atlas.models]
    assert len(buttons(at, "atlas_open_0_")) == counts[0] and len(buttons(at, "atlas_open_1_")) == counts[1]
    assert "A: `tiny_standard`" in texts(at) and "B: `tiny_robust`" in texts(at)
    assert len(at.get("plotly_chart")) == 1 and len(at.get("download_button")) == 2
    at.selectbox(key="atlas_sort").set_value("best-match correlation ↓")
    run_ok(at)
    buttons(at, "atlas_open_0_")[0].click()
    run_ok(at)
    unit = int(at.query_params["unit"])
    assert at.query_params["side"] == "a" and f"unit {unit}" in texts(at)
    assert "Top 4 of 40 images" in texts(at) and "Best matches in B" in texts(at)
    match = buttons(at, "atlas_match_")[0]
    match.click()
    run_ok(at)
    assert at.query_params["side"] == "b" and "Best matches in A" in texts(at)
    link = dict(at.query_params)

    no_checkpoints(monkeypatch, tmp_path)   # the permalink opens without any model
    again = AppTest.from_file(PAGE, default_timeout=120)
    for name, value in link.items():
        again.query_params[name] = value
    run_ok(again)
    assert f"unit {link['unit']}" in texts(again) and "Load this model in the sidebar" in texts(again)
    grid = AppTest.from_file(PAGE, default_timeout=120)
    grid.query_params["atlas"] = key
    run_ok(grid)
    assert len(buttons(grid, "atlas_open_")) == sum(counts)
    bad = AppTest.from_file(PAGE, default_timeout=120)
    bad.query_params.update({"atlas": key, "unit": "999", "side": "b"})
    run_ok(bad)
    assert "names no unit of this atlas" in texts(bad)


def test_a_running_atlas_job_fills_in_and_a_background_atlas_arrives(tiny_checkpoints):
    import shutil

    at = make(atlas_page("background"))
    job_id = int(at.query_params["job"])
    request = JobStore().get(job_id).config.request
    assert isinstance(request, AtlasRequest)
    partial = ResultStore().partial_dir(request.key())
    _fake_state(request, RunContext(request, request.key(), state_dir=partial))   # scanned, 2 units rendered
    running = AppTest.from_file(PAGE, default_timeout=120)
    running.query_params["job"] = str(job_id)
    run_ok(running)
    assert "A: 2 of 4 units rendered" in texts(running) and "rendering…" in texts(running)
    shutil.rmtree(partial)   # the real worker starts from scratch
    assert run_worker(JobStore(), once=True, lane="analysis") == 1
    run_ok(running)
    key = JobStore().get(job_id).result_key
    assert running.query_params["atlas"] == key
    assert len(buttons(running, "atlas_open_")) == sum(len(m.units.mean) for m in ResultStore().load(key).value().models)


def _fake_state(request, ctx) -> None:
    """The partial state of an atlas of 4 units per model whose scan is done and whose first
    render batch (2 units) is."""
    import numpy as np

    from engine.featvis.atlas_data import TABLE_FIELDS

    state = {}
    for i in range(2):
        for what, count in (("units", 4), ("directions", 2)):
            for field in TABLE_FIELDS:
                shape = {"topk_index": (count, 4), "topk_score": (count, 4), "topk_pos": (count, 4, 2),
                         "topk_label": (count, 4), "class_mean": (count, 3)}.get(field, (count,))
                dtype = np.int64 if field in ("topk_index", "topk_label") else np.int32 if field == "topk_pos" else np.float32
                state[f"{i}/{what}/{field}"] = np.zeros(shape, dtype)
        state[f"{i}/images"] = np.full((4, 32, 32, 3), 128, np.uint8)
        state[f"{i}/direction_images"] = np.zeros((2, 32, 32, 3), np.uint8)
        state[f"{i}/direction_vectors"] = np.eye(2, 4, dtype=np.float32)
        state.update({f"{i}/grid": [16, 16], f"{i}/units_rendered": 2, f"{i}/directions_rendered": 0})
    ctx.save_state(state, force=True)
