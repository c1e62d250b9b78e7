"""Features page: lucent's images are a stored analysis (``featvis``) beside the top-k search.

A background **Show** queues both per model -> a worker runs them -> the page shows the top-k and
lucent images -> the Results page opens a lucent result -> the permalinks reopen the view (all of
it, or one lucent column without models) without rendering anything."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import RESULTS, images_in, no_checkpoints, ok, open_result, page, refuse_compute, run_ok, texts
from engine.analysis import ResultStore
from engine.jobs import JobStore, run_worker

FEATURES = page("features")

pytestmark = pytest.mark.usefixtures("no_autostart")


def _images(at: AppTest) -> list[tuple[str, str]]:
    """``(media URL, caption)`` of every ``st.image`` (content hashes: equal URLs, equal pictures)."""
    return [(img.url, img.caption) for node in images_in(at) for img in node.proto.imgs]


def _show_in_background(steps: int) -> AppTest:
    """The page with ``steps`` lucent steps, **Show** pressed with *Run: in the background*."""
    at = run_ok(AppTest.from_file(FEATURES, default_timeout=120))
    next(n for n in at.number_input if n.label.startswith("Lucent")).set_value(steps)
    at.radio(key="fv_mode").set_value("background")
    next(b for b in at.button if b.label == "Show").click().run()
    return ok(at)


def _results_page_opens(key: str) -> None:
    """The Results page lists ``key`` as a lucent result and offers to open it on the Features page."""
    results = run_ok(AppTest.from_file(RESULTS, default_timeout=60))
    results.selectbox(key="results_pick").set_value(key).run()
    ok(results)
    assert "Feature visualisations (lucent)" in set(results.dataframe[-1].value["what"])
    assert f"/features?result={key}" in texts(results)
    assert results.button(key="results_open").label == "Open on the Features page"


def test_background_lucent_images_then_results_page_then_permalink(tiny_checkpoints, monkeypatch, tmp_path):
    at = _show_in_background(steps=8)
    job_ids = [int(i) for i in at.query_params["job"].split(",")]
    assert [JobStore().get(i).kind for i in job_ids] == ["featvis_topk", "featvis"] * 2  # per model A, B
    assert f"Queued as background jobs {', '.join(map(str, job_ids))}" in texts(at)
    assert not _images(at) and ResultStore().list() == []
    assert "rendered here only" not in texts(at)

    assert run_worker(JobStore(), once=True, lane="analysis") == 4
    run_ok(at)
    keys = [JobStore().get(i).result_key for i in job_ids]
    assert at.query_params["result"] == ",".join(keys)
    shown = _images(at)
    assert len(shown) == 16  # 4 rows x 2 models x (top-k grid + lucent image)
    assert sum(caption.startswith("lucent, objective") for _, caption in shown) == 8
    assert "lucent: 8 steps, seed 0" in texts(at)
    assert len(at.get("download_button")) == 3  # top-k JSON + one lucent PNG per model

    _results_page_opens(keys[3])  # model B's lucent images

    import engine.featvis

    refuse_compute(monkeypatch, engine.featvis, "visualise")
    refuse_compute(monkeypatch, engine.featvis, "stream_top_k")
    fresh = open_result(FEATURES, ",".join(keys))
    assert _images(fresh) == shown and f"`{keys[1]}` (stored earlier" in texts(fresh)

    no_checkpoints(monkeypatch, tmp_path)  # the Results page's "open": one lucent result, no models
    alone = open_result(FEATURES, keys[3])
    assert _images(alone) == shown[3::4]  # model B's lucent image of each row
    assert "tiny_robust · unit" in texts(alone) and "Choose model" not in texts(alone)
    assert "lucent: 8 steps" in texts(alone) and "top-" not in texts(alone)


def test_lucent_steps_zero_queues_only_the_top_k(tiny_checkpoints):
    at = _show_in_background(steps=0)
    job_ids = [int(i) for i in at.query_params["job"].split(",")]
    assert [JobStore().get(i).kind for i in job_ids] == ["featvis_topk"] * 2
