"""A classroom's load, what the pages control: panels poll fast only while a job moves, the landing
page draws no model card's thousands of elements until asked, and the server is configured and
primed (no file watching, no forced full collection after every run, imports frozen)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import streamlit
from streamlit.testing.v1 import AppTest

from apptest_helpers import APP, RESULTS, page, run_ok
from engine.analysis import ModelRef
from engine.jobs import JobStore
from pages import common

REPO = Path(__file__).resolve().parents[2]
TRAINING = page("training")

pytestmark = pytest.mark.usefixtures("no_autostart")


@pytest.fixture
def paces(monkeypatch) -> list[float | None]:
    """Every ``run_every`` the pages' live panels are declared with, in order (they still run)."""
    seen: list[float | None] = []
    real = streamlit.fragment

    def recording(func=None, *, run_every=None, **kw):
        if func is not None and func.__qualname__.startswith("live_panel."):
            seen.append(run_every)
        return real(func, run_every=run_every, **kw)

    monkeypatch.setattr(streamlit, "fragment", recording)
    return seen


def _cka(paths, n: int):
    from engine.analysis.kinds.cka import CKARequest

    return CKARequest(a=ModelRef.of(paths["standard"]), b=ModelRef.of(paths["robust"]), dataset="shapes", n=n,
                      batch_size=8)


def test_the_results_page_polls_fast_only_while_an_analysis_job_moves(tiny_checkpoints, paces):
    at = AppTest.from_file(RESULTS, default_timeout=60)
    run_ok(at)
    assert paces == [common.IDLE_REFRESH_S]                      # nothing queued: every 30 s

    job = JobStore().submit_analysis(_cka(tiny_checkpoints, 16))
    run_ok(at)
    assert paces[-1] == common.LIVE_REFRESH_S                    # queued: every 3 s
    assert list(at.dataframe[0].value["job"]) == [job.id]

    JobStore().cancel(job.id)
    run_ok(at)
    assert paces[-1] == common.IDLE_REFRESH_S and list(at.dataframe[0].value["status"]) == ["cancelled"]


def test_the_training_queue_polls_fast_only_while_a_training_job_moves(paces):
    from engine.training import TrainConfig

    at = AppTest.from_file(TRAINING, default_timeout=60)
    run_ok(at)
    assert paces == [common.IDLE_REFRESH_S]
    job = JobStore().submit(TrainConfig(dataset="shapes", arch="small_cnn", epochs=1))
    run_ok(at)
    assert paces[-1] == common.LIVE_REFRESH_S
    JobStore().cancel(job.id)
    run_ok(at)
    assert paces[-1] == common.IDLE_REFRESH_S


class _Rerun(Exception):
    pass


@pytest.mark.parametrize("moving, now, reruns", [(False, False, False), (True, True, False),
                                                  (False, True, True), (True, False, True)])
def test_a_live_panel_reruns_the_page_when_its_pace_no_longer_fits(monkeypatch, moving, now, reruns):
    declared = []

    def fragment(func, run_every=None):
        declared.append((func.__qualname__, run_every))
        return func

    def rerun():
        raise _Rerun

    monkeypatch.setattr(common.st, "fragment", fragment)
    monkeypatch.setattr(common.st, "rerun", rerun)

    def draw() -> bool:
        return now

    if reruns:
        with pytest.raises(_Rerun):
            common.live_panel(draw, moving)
    else:
        common.live_panel(draw, moving)
    expected = common.LIVE_REFRESH_S if moving else common.IDLE_REFRESH_S
    assert declared == [(f"live_panel.{draw.__qualname__}", expected)]   # one fragment per drawing function


def test_the_models_page_draws_a_full_model_card_only_when_asked(tiny_checkpoints):
    at = AppTest.from_file(APP, default_timeout=90)
    run_ok(at)
    assert at.get("json") == [] and len(at.dataframe) == 1       # the listing only
    at.toggle(key="full_card_A").set_value(True)
    run_ok(at)
    assert len(at.get("json")) == 1 and len(at.dataframe) == 2   # A's card as a table and as JSON
    assert '"dataset": "shapes"' in str(at.get("json")[0].proto.body)


def test_the_served_dashboard_neither_watches_files_nor_collects_after_every_run():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["fileWatcherType"] == "none"
    assert config["runner"]["postScriptGC"] is False


def test_the_imports_are_frozen_once_per_server_process():
    code = ("import gc; from pages import common; common.freeze_imports(); frozen = gc.get_freeze_count(); "
            "common.freeze_imports(); print(frozen, gc.get_freeze_count())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    first, again = map(int, out)
    assert first > 100_000 and again == first                   # torch & co. frozen; a second call adds nothing
