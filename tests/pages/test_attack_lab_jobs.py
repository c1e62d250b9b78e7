"""Attack Lab analyses as stored results: a background ε-sweep -> worker -> Results page ->
permalink reopens it without computing; the craft is a stored (cached) result too."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import RESULTS, finish_job, no_checkpoints, open_result, page, refuse_compute, run_ok, texts
from engine.analysis import ResultStore

PAGE = page("attack_lab")

pytestmark = pytest.mark.usefixtures("no_autostart")


def _texts(at: AppTest) -> str:
    return texts(at, ("markdown", "info", "caption", "warning"))


def test_background_sweep_then_results_page_then_permalink(tiny_checkpoints, monkeypatch):
    at = run_ok(AppTest.from_file(PAGE, default_timeout=120))
    at.selectbox(key="atk_name").set_value("fgsm")
    run_ok(at)
    at.text_input(key="atk_sweep_eps_fgsm_shapes_linf").set_value("0, 0.1")
    at.select_slider(key="atk_sweep_n").set_value(16)
    at.radio(key="atk_sweep_mode").set_value("background")
    at.button(key="atk_sweep_run").click()
    run_ok(at)
    job_id = int(at.query_params["job"])
    assert f"Queued as background job {job_id}" in _texts(at) and ResultStore().list() == []

    key = finish_job(at, job_id)
    frame = at.session_state["atk_sweep"]
    assert list(frame["eps"].unique()) == pytest.approx([0, 0.1]) and frame["model"].nunique() == 2

    results = run_ok(AppTest.from_file(RESULTS, default_timeout=60))
    assert list(results.dataframe[-1].value["key"]) == [key]
    assert f"/attack_lab?result={key}" in _texts(results)

    import engine.attacks

    refuse_compute(monkeypatch, engine.attacks, "eps_sweep")
    fresh = open_result(PAGE, key)
    assert fresh.session_state["atk_sweep"].equals(frame)
    assert f"`{key}` (stored earlier" in _texts(fresh)


def test_craft_is_a_stored_result_and_transfer_joins_the_permalink(tiny_checkpoints):
    at = run_ok(AppTest.from_file(PAGE, default_timeout=120))
    at.number_input(key="atk_index").set_value(5)
    at.button(key="atk_craft").click()
    run_ok(at)
    craft_key = at.query_params["result"]
    assert at.session_state["atk_state"]["stored"].key == craft_key
    at.select_slider(key="atk_transfer_n").set_value(16)
    at.radio(key="atk_transfer_mode").set_value("here")
    at.button(key="atk_transfer_run").click()
    run_ok(at)
    keys = at.query_params["result"].split(",")
    assert keys[0] == craft_key and len(keys) == 2
    assert sorted(e.kind for e in ResultStore().list()) == ["craft", "transfer"]

    fresh = open_result(PAGE, ",".join(keys))
    assert fresh.session_state["atk_transfer"].names == ["A", "B"]
    assert "stored earlier" in _texts(fresh) and len(fresh.get("plotly_chart")) == 2


def test_permalink_opens_every_view_without_sidebar_models(tiny_checkpoints, monkeypatch, tmp_path):
    at = run_ok(AppTest.from_file(PAGE, default_timeout=120))
    at.selectbox(key="atk_name").set_value("fgsm")
    run_ok(at)
    at.number_input(key="atk_index").set_value(3)
    at.button(key="atk_craft").click()
    run_ok(at)
    for section in ("sweep", "transfer"):
        at.select_slider(key=f"atk_{section}_n").set_value(16)
        at.radio(key=f"atk_{section}_mode").set_value("here")
        at.button(key=f"atk_{section}_run").click()
        run_ok(at)
    keys = at.query_params["result"]
    assert len(keys.split(",")) == 3
    headline = next(m.value for m in at.markdown if m.value.startswith("Crafted on"))
    sweep, transfer = at.session_state["atk_sweep"], at.session_state["atk_transfer"]

    import engine.attacks

    no_checkpoints(monkeypatch, tmp_path)
    for name in ("craft_and_compare", "eps_sweep", "transfer_matrix"):
        refuse_compute(monkeypatch, engine.attacks, name)
    fresh = open_result(PAGE, keys)
    shown = _texts(fresh)
    assert "Choose models A and B in the sidebar to craft" in shown
    assert "Choose model" not in shown.replace("Choose models A and B in the sidebar to craft", "")
    # the stored views, named by the stored requests' checkpoints (the sidebar has none)
    verdict = headline.split(" — it ")[1].split(",")[0]  # "fools A" / "does not fool A"
    assert f"Crafted on **A: tiny_standard** — it {verdict}" in shown and "**B: tiny_robust**" in shown
    assert list(fresh.session_state["atk_sweep"]["robust_acc"]) == list(sweep["robust_acc"])
    assert fresh.session_state["atk_transfer"].accuracy == transfer.accuracy
    assert len(fresh.get("plotly_chart")) == 3 and fresh.query_params["result"] == keys
