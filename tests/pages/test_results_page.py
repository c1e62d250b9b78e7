"""Background analysis from a page -> worker -> Results page -> permalink reopens the view."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import (
    APP,
    RESULTS,
    finish_job,
    images_in,
    no_checkpoints,
    ok,
    open_result,
    page,
    refuse_compute,
    run_ok,
    texts,
)
from pages.common import page_title
from engine.analysis import ResultStore
from engine.jobs import JobStore, run_worker

REPRESENTATIONS = page("representations")

pytestmark = pytest.mark.usefixtures("no_autostart")


def test_background_cka_then_results_page_then_permalink(tiny_checkpoints, monkeypatch):
    at = AppTest.from_file(REPRESENTATIONS, default_timeout=120)
    run_ok(at)
    at.number_input[0].set_value(24)
    at.number_input[1].set_value(8)
    at.radio(key="cka_mode").set_value("background")
    at.button[0].click().run()
    ok(at)
    job_id = int(at.query_params["job"])
    assert f"Queued as background job {job_id}" in texts(at)
    assert not at.get("plotly_chart") and ResultStore().list() == []

    at.run()  # another look while it waits: its state is read from the job store
    assert f"Background job {job_id} is waiting: no worker is running" in texts(at)

    assert run_worker(JobStore(), once=True, lane="analysis") == 1  # the tab is irrelevant to the worker
    run_ok(at)
    key = at.query_params["result"]
    assert JobStore().get(job_id).result_key == key
    assert "clean inputs · 24 images" in at.subheader[0].value and len(at.get("plotly_chart")) == 2

    results = AppTest.from_file(RESULTS, default_timeout=60)
    run_ok(results)
    listing = results.dataframe[-1].value
    assert list(listing["key"]) == [key] and "tiny_standard" in listing["models"][0]
    assert results.selectbox(key="results_pick").value == key
    assert f"/representations?result={key}" in texts(results)
    jobs = results.dataframe[0].value
    assert list(jobs["job"]) == [job_id] and list(jobs["status"]) == ["done"]

    import engine.similarity

    refuse_compute(monkeypatch, engine.similarity, "compare_models")
    fresh = open_result(REPRESENTATIONS, key)
    assert "clean inputs · 24 images" in fresh.subheader[0].value and len(fresh.get("plotly_chart")) == 2
    assert f"Result `{key}` (stored earlier" in texts(fresh)


def test_results_page_lists_a_damaged_entry_without_failing(tiny_checkpoints):
    from engine.analysis.kinds.cka import CKARequest
    from engine.analysis import ModelRef, run_analysis

    request = CKARequest(a=ModelRef.of(tiny_checkpoints["standard"]), b=ModelRef.of(tiny_checkpoints["robust"]),
                         dataset="shapes", n=12, batch_size=6)
    good = run_analysis(request)
    other = run_analysis(CKARequest(**{**request.__dict__, "n": 16}))
    (ResultStore().path(other.key) / "result.json").write_text("{")
    at = AppTest.from_file(RESULTS, default_timeout=60)
    run_ok(at)
    listing = at.dataframe[-1].value.set_index("key")
    assert listing.loc[other.key, "details"].startswith("damaged")
    assert at.selectbox(key="results_pick").value == good.key


def test_stale_permalink_says_so(tiny_checkpoints):
    at = open_result(REPRESENTATIONS, "0123456789abcdef0123456789abcdef")
    assert "No stored result" in texts(at)


FEATURES = page("features")
SALIENCY = page("saliency")


def _image_urls(at: AppTest) -> list[str]:
    """The media URLs of every ``st.image`` on the page (content hashes: equal URLs, equal pictures)."""
    return [img.url for node in images_in(at) for img in node.proto.imgs]


def _results_page_lists(keys: list[str], page: str) -> None:
    """The Results page lists exactly ``keys`` and offers to open the chosen one on ``page``."""
    results = AppTest.from_file(RESULTS, default_timeout=60)
    run_ok(results)
    assert sorted(results.dataframe[-1].value["key"]) == sorted(keys)
    chosen = results.selectbox(key="results_pick").value
    assert f"/{page}?result={chosen}" in texts(results)
    assert results.button(key="results_open").label == f"Open on the {page_title(page)} page"
    assert list(results.dataframe[0].value["status"]) == ["done"] * len(keys)


def test_background_topk_then_results_page_then_permalink(tiny_checkpoints, monkeypatch, tmp_path):
    at = AppTest.from_file(FEATURES, default_timeout=120)
    at.run()
    next(n for n in at.number_input if n.label.startswith("Lucent")).set_value(0)
    at.radio(key="fv_mode").set_value("background")
    next(b for b in at.button if b.label == "Show").click().run()
    ok(at)
    job_ids = [int(i) for i in at.query_params["job"].split(",")]
    assert len(job_ids) == 2 and f"Queued as background jobs {job_ids[0]}, {job_ids[1]}" in texts(at)
    assert not _image_urls(at) and ResultStore().list() == []

    at.run()  # another look while they wait: read from the job store
    assert all(f"Background job {i} is waiting: no worker is running" in texts(at) for i in job_ids)

    assert run_worker(JobStore(), once=True, lane="analysis") == 2
    run_ok(at)
    keys = [JobStore().get(i).result_key for i in job_ids]
    assert at.query_params["result"] == ",".join(keys)
    urls = _image_urls(at)
    assert len(urls) == 8  # 4 rows x 2 models (no lucent images in a background run)
    assert "Model A · unit" in texts(at)

    _results_page_lists(keys, "features")

    import engine.featvis

    refuse_compute(monkeypatch, engine.featvis, "stream_top_k")
    fresh = open_result(FEATURES, ",".join(keys))
    assert _image_urls(fresh) == urls and "Model B · random direction (seed 0)" in texts(fresh)
    assert f"`{keys[0]}` (stored earlier" in texts(fresh)

    no_checkpoints(monkeypatch, tmp_path)  # the Results page's "open": one result, no models chosen
    alone = open_result(FEATURES, keys[1])
    assert _image_urls(alone) == urls[1::2]  # model B's column
    assert "tiny_robust · unit" in texts(alone) and "Choose model" not in texts(alone)


def test_background_saliency_grid_then_results_page_then_permalink(tiny_checkpoints, monkeypatch, tmp_path):
    import engine.analysis.cost

    import pages.analysis_ui

    monkeypatch.setattr(engine.analysis.cost, "BACKGROUND_ABOVE_S", 0.0)  # every grid counts as long
    monkeypatch.setattr(pages.analysis_ui, "AUTO_RUN_S", 0.0)  # and none runs by itself on arrival
    at = AppTest.from_file(SALIENCY, default_timeout=120)
    run_ok(at)
    assert "This takes" in texts(at) and not _image_urls(at)
    at.button(key="sal_grid_background").click().run()
    ok(at)
    job_id = int(at.query_params["job"])
    assert f"Background job {job_id} is waiting: no worker is running" in texts(at)
    assert "The maps show here when the background job is done" in texts(at) and not _image_urls(at)

    key = finish_job(at, job_id)
    urls = _image_urls(at)
    assert len(urls) == 9  # 3 default methods x (input + A + B)

    _results_page_lists([key], "saliency")

    import engine.attribution

    refuse_compute(monkeypatch, engine.attribution, "attribution_grid")
    fresh = open_result(SALIENCY, key)
    assert _image_urls(fresh) == urls and f"Result `{key}` (stored earlier" in texts(fresh)

    no_checkpoints(monkeypatch, tmp_path)
    alone = open_result(SALIENCY, key)
    assert _image_urls(alone) == urls
    assert "These maps are for `tiny_standard`, `tiny_robust`." in texts(alone)
    assert "Choose model" not in texts(alone)


def _stored_view_request(kind: str, paths: dict):
    """A small stored request of ``kind`` on the tiny checkpoints."""
    from engine.analysis import ModelRef
    from engine.analysis.kinds.topk import TopKRequest
    from engine.analysis.kinds.saliency import SaliencyGridRequest

    if kind == "featvis_topk":
        return TopKRequest(model=ModelRef.of(paths["standard"]), layer="net.block2",
                           targets=(("unit", 0), ("direction", 0)), dataset="shapes", n=20, k=2)
    return SaliencyGridRequest(models=(ModelRef.of(paths["standard"]), ModelRef.of(paths["robust"])),
                               dataset="shapes", index=7, methods=("saliency",))


@pytest.mark.parametrize("kind, page, shown, images", [
    ("featvis_topk", "features", "Model A · unit 0", 2),        # 2 rows x model A
    ("saliency_grid", "saliency", "**Stored maps**", 3),        # 1 method x (input + A + B)
])
def test_open_on_the_results_page_lands_on_the_view(tiny_checkpoints, kind, page, shown, images):
    from engine.analysis import run_analysis

    stored = run_analysis(_stored_view_request(kind, tiny_checkpoints))
    at = AppTest.from_file(APP, default_timeout=90)
    at.run()
    at.switch_page(RESULTS).run()
    at.button(key="results_open").click().run()
    ok(at)
    assert at.query_params["result"] == stored.key and shown in texts(at)
    assert len(_image_urls(at)) == images


def test_pages_are_named_by_their_menu_titles():
    assert page_title("attack_lab") == "Attack Lab" and page_title("representations") == "Representations (CKA)"
    assert page_title("results") == "Results" and page_title("no_such_page") == "No Such Page"
