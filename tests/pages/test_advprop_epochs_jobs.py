"""The AdvProp comparison (Models page) and CKA across epochs (Representations page) as stored
analyses: background job -> worker -> the view -> the Results page opens it on its page -> the
permalink reopens it without computing, also without any checkpoint in the sidebar."""
from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import APP, RESULTS, finish_job, no_checkpoints, ok, open_result, page, refuse_compute, run_ok, texts
from pages.common import page_title
from engine.analysis import ResultStore
from factories import advprop_model, snapshot_run

MODELS, REPRESENTATIONS = page("models"), page("representations")

pytestmark = pytest.mark.usefixtures("no_autostart")


def _save_advprop() -> None:
    from engine.checkpoints import make_card, save_checkpoint
    from engine.data import get_spec

    spec = get_spec("shapes")
    model = advprop_model(spec.num_classes, spec.input_shape, seed=4)
    save_checkpoint(model, make_card(model, "shapes", name="tiny_advprop", training={"method": "advprop"}),
                    Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"]) / "tiny_advprop")


def _advprop_table(at: AppTest):
    return next(d.value for d in at.dataframe if "PGD acc" in d.value.columns)


def _results_page_opens_on(key: str, page_name: str) -> None:
    results = run_ok(AppTest.from_file(RESULTS, default_timeout=60))
    assert list(results.dataframe[-1].value["key"]) == [key]
    assert f"/{page_name}?result={key}" in texts(results)
    assert results.button(key="results_open").label == f"Open on the {page_title(page_name)} page"
    assert list(results.dataframe[0].value["status"]) == ["done"]


def _compare_branches(mode: str) -> AppTest:
    """The Models page with an AdvProp checkpoint saved: **Compare branches** on 16 images, PGD-1, run ``mode``."""
    _save_advprop()
    at = run_ok(AppTest.from_file(MODELS, default_timeout=300))
    at.number_input(key="advprop_n").set_value(16)
    at.number_input(key="advprop_steps").set_value(1)
    at.radio(key="advprop_mode").set_value(mode)
    next(b for b in at.button if "Compare branches" in str(b.label)).click()
    return run_ok(at)


def test_background_advprop_then_results_page_then_permalink(tiny_checkpoints, monkeypatch, tmp_path):
    at = _compare_branches("background")
    job_id = int(at.query_params["job"])
    assert f"Queued as background job {job_id}" in texts(at) and ResultStore().list() == []
    assert not any("PGD acc" in d.value.columns for d in at.dataframe)

    key = finish_job(at, job_id)
    table = _advprop_table(at)
    assert list(table["model"]) == ["tiny_advprop (main BN)", "tiny_advprop (aux BN)", "tiny_standard", "tiny_robust"]
    assert "16 images" in texts(at) and "Robustness report" in texts(at)  # the report's view is still there

    _results_page_opens_on(key, "models")

    import engine.generalisation.advprop

    refuse_compute(monkeypatch, engine.generalisation.advprop, "compare_branches")
    fresh = open_result(MODELS, key)
    assert _advprop_table(fresh).equals(table) and f"Result `{key}` (stored earlier" in texts(fresh)
    assert "is a advprop result" not in texts(fresh)  # the report's view leaves the link to it

    no_checkpoints(monkeypatch, tmp_path)
    alone = open_result(MODELS, key)
    assert _advprop_table(alone).equals(table)


def test_advprop_here_is_stored_and_read_back(tiny_checkpoints, monkeypatch):
    at = _compare_branches("here")
    key = at.query_params["result"]
    assert ResultStore().exists(key) and f"Result `{key}` (computed now" in texts(at)

    import engine.generalisation.advprop

    refuse_compute(monkeypatch, engine.generalisation.advprop, "compare_branches",
                   "a stored comparison must not be measured again")
    again = run_ok(AppTest.from_file(MODELS, default_timeout=120))
    again.number_input(key="advprop_n").set_value(16)
    again.number_input(key="advprop_steps").set_value(1)
    next(b for b in again.button if "Compare branches" in str(b.label)).click()
    run_ok(again)
    assert again.query_params["result"] == key and f"Result `{key}` (stored earlier" in texts(again)


def test_background_epochs_then_results_page_then_permalink(tiny_checkpoints, monkeypatch, tmp_path):
    runs = Path(os.environ["ROBUSTSCOPE_RUNS"]) / "train"
    snapshot_run(runs / "std")
    snapshot_run(runs / "rob", method="pgd", seed=1)
    at = run_ok(AppTest.from_file(REPRESENTATIONS, default_timeout=120))
    at.number_input(key="epochs_n").set_value(24)
    at.radio(key="epochs_mode").set_value("background")
    next(b for b in at.button if "across epochs" in str(b.label)).click()
    run_ok(at)
    job_id = int(at.query_params["job"])
    assert f"Queued as background job {job_id}" in texts(at) and not at.get("plotly_chart")

    run_ok(at)  # another look while it waits: read from the job store
    assert f"Background job {job_id} is waiting: no worker is running" in texts(at)

    key = finish_job(at, job_id)
    assert len(at.get("plotly_chart")) == 1 and "train/rob vs train/std" in texts(at)  # sorted
    stored = ResultStore().load(key)
    assert [r.method for r in stored.value()] == ["pgd", "standard"] and stored.meta["runs"][0]["n"] == 24
    assert stored.request.layers_a == ("net.block1", "net.block2", "net.block3", "net.hidden", "net.fc")

    _results_page_opens_on(key, "representations")

    import engine.similarity.structure

    refuse_compute(monkeypatch, engine.similarity.structure, "cka_across_epochs")
    fresh = open_result(REPRESENTATIONS, key)
    assert len(fresh.get("plotly_chart")) == 1 and f"Result `{key}` (stored earlier" in texts(fresh)
    assert "is a cka_epochs result" not in texts(fresh)  # the maps' view leaves the link to it

    no_checkpoints(monkeypatch, tmp_path)
    alone = open_result(REPRESENTATIONS, key)
    assert len(alone.get("plotly_chart")) == 1 and "Choose model" not in texts(alone)
    ok(alone)


def _stored(kind: str):
    """A small stored ``kind`` result on the tiny checkpoints (AdvProp) or two snapshot runs."""
    from engine.analysis import run_analysis
    from engine.analysis.kinds.advprop import advprop_request
    from engine.checkpoints import list_checkpoints
    from engine.cli.cka import epochs_request

    if kind == "advprop":
        _save_advprop()
        root = os.environ["ROBUSTSCOPE_CHECKPOINTS"]
        return run_analysis(advprop_request(list_checkpoints(root), f"{root}/tiny_advprop.safetensors", n=8, steps=1))
    runs = Path(os.environ["ROBUSTSCOPE_RUNS"]) / "train"
    folders = [str(snapshot_run(runs / "std")), str(snapshot_run(runs / "rob", method="pgd", seed=1))]
    args = SimpleNamespace(run=folders, dataset=None, layers=None, layers_b=None, reference="final", split="test",
                           n=16, batch_size=8, kernel="linear", pooling="flatten")
    return run_analysis(epochs_request(args))


@pytest.mark.parametrize("kind, shown", [("advprop", "tiny_advprop (main and aux BN)"),
                                         ("cka_epochs", "train/std vs train/rob")])
def test_open_on_the_results_page_lands_on_the_view(tiny_checkpoints, kind, shown):
    stored = _stored(kind)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(RESULTS).run()
    assert at.selectbox(key="results_pick").value == stored.key
    at.button(key="results_open").click().run()
    ok(at)
    assert at.query_params["result"] == stored.key and shown in texts(at)
    assert f"Result `{stored.key}` (stored earlier" in texts(at)
