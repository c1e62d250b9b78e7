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


FEATURES = str(REPO / "pages" / "features.py")
SALIENCY = str(REPO / "pages" / "saliency.py")


def _image_urls(at: AppTest) -> list[str]:
    """The media URLs of every ``st.image`` on the page (content hashes: equal URLs, equal pictures)."""
    from apptest_helpers import images_in

    return [img.url for node in images_in(at) for img in node.proto.imgs]


def _no_checkpoints(monkeypatch, tmp_path) -> None:
    """An empty checkpoints folder: the sidebar has no models (a permalink must not need them)."""
    empty = tmp_path / "no_checkpoints"
    empty.mkdir()
    monkeypatch.setenv("ROBUSTSCOPE_CHECKPOINTS", str(empty))


def _results_page_lists(keys: list[str], page: str) -> None:
    """The Results page lists exactly ``keys`` and offers to open the chosen one on ``page``."""
    results = AppTest.from_file(RESULTS, default_timeout=60)
    results.run()
    assert not results.exception, [e.value for e in results.exception]
    assert sorted(results.dataframe[-1].value["key"]) == sorted(keys)
    chosen = results.selectbox(key="results_pick").value
    assert f"/{page}?result={chosen}" in _texts(results)
    assert results.button(key="results_open").label == f"Open on the {page.title()} page"
    assert list(results.dataframe[0].value["status"]) == ["done"] * len(keys)


def test_background_topk_then_results_page_then_permalink(tiny_checkpoints, monkeypatch, tmp_path):
    at = AppTest.from_file(FEATURES, default_timeout=120)
    at.run()
    next(n for n in at.number_input if n.label.startswith("Lucent")).set_value(0)
    at.radio(key="fv_mode").set_value("background")
    next(b for b in at.button if b.label == "Show").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job_ids = [int(i) for i in at.query_params["job"].split(",")]
    assert len(job_ids) == 2 and f"Queued as background jobs {job_ids[0]}, {job_ids[1]}" in _texts(at)
    assert not _image_urls(at) and ResultStore().list() == []

    at.run()  # another look while they wait: read from the job store
    assert all(f"Background job {i} is queued" in _texts(at) for i in job_ids)

    assert run_worker(JobStore(), once=True, lane="analysis") == 2
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    keys = [JobStore().get(i).result_key for i in job_ids]
    assert at.query_params["result"] == ",".join(keys)
    urls = _image_urls(at)
    assert len(urls) == 8  # 4 rows x 2 models (no lucent images in a background run)
    assert "Model A · unit" in _texts(at)

    _results_page_lists(keys, "features")

    import engine.featvis

    def no_compute(*args, **kwargs):
        raise AssertionError("a permalink must not compute")

    monkeypatch.setattr(engine.featvis, "stream_top_k", no_compute)
    fresh = AppTest.from_file(FEATURES, default_timeout=60)
    fresh.query_params["result"] = ",".join(keys)
    fresh.run()
    assert not fresh.exception, [e.value for e in fresh.exception]
    assert _image_urls(fresh) == urls and "Model B · random direction (seed 0)" in _texts(fresh)
    assert f"`{keys[0]}` (stored earlier" in _texts(fresh)

    _no_checkpoints(monkeypatch, tmp_path)  # the Results page's "open": one result, no models chosen
    alone = AppTest.from_file(FEATURES, default_timeout=60)
    alone.query_params["result"] = keys[1]
    alone.run()
    assert not alone.exception, [e.value for e in alone.exception]
    assert _image_urls(alone) == urls[1::2]  # model B's column
    assert "tiny_robust · unit" in _texts(alone) and "Choose model" not in _texts(alone)


def test_background_saliency_grid_then_results_page_then_permalink(tiny_checkpoints, monkeypatch, tmp_path):
    import engine.analysis.cost

    monkeypatch.setattr(engine.analysis.cost, "BACKGROUND_ABOVE_S", 0.0)  # every grid counts as long
    at = AppTest.from_file(SALIENCY, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "This takes" in _texts(at) and not _image_urls(at)
    at.button(key="sal_grid_background").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job_id = int(at.query_params["job"])
    assert f"Background job {job_id} is queued" in _texts(at)
    assert "The maps show here when the background job is done" in _texts(at) and not _image_urls(at)

    assert run_worker(JobStore(), once=True, lane="analysis") == 1
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    key = JobStore().get(job_id).result_key
    assert at.query_params["result"] == key
    urls = _image_urls(at)
    assert len(urls) == 9  # 3 default methods x (input + A + B)

    _results_page_lists([key], "saliency")

    import engine.attribution

    def no_compute(*args, **kwargs):
        raise AssertionError("a permalink must not compute")

    monkeypatch.setattr(engine.attribution, "attribution_grid", no_compute)
    fresh = AppTest.from_file(SALIENCY, default_timeout=60)
    fresh.query_params["result"] = key
    fresh.run()
    assert not fresh.exception, [e.value for e in fresh.exception]
    assert _image_urls(fresh) == urls and f"Result `{key}` (stored earlier" in _texts(fresh)

    _no_checkpoints(monkeypatch, tmp_path)
    alone = AppTest.from_file(SALIENCY, default_timeout=60)
    alone.query_params["result"] = key
    alone.run()
    assert not alone.exception, [e.value for e in alone.exception]
    assert _image_urls(alone) == urls
    assert "These maps are for `tiny_standard`, `tiny_robust`." in _texts(alone)
    assert "Choose model" not in _texts(alone)


def _stored_view_request(kind: str, paths: dict):
    """A small stored request of ``kind`` on the tiny checkpoints."""
    from engine.analysis import ModelRef, TopKRequest
    from engine.analysis.requests import SaliencyGridRequest

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
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=90)
    at.run()
    at.switch_page(RESULTS).run()
    at.button(key="results_open").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.query_params["result"] == stored.key and shown in _texts(at)
    assert len(_image_urls(at)) == images
