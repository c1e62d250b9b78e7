"""Short work never waits behind long work: the short lane, the claim order and a queued job's place."""
from __future__ import annotations


import pytest

from engine.analysis import ModelRef
from engine.errors import InvalidParameterError
from engine.jobs import JobStore
from engine.jobs.store import SHORT_S


def _request(paths, n: int):
    from engine.analysis.kinds.cka import CKARequest

    a, b = ModelRef.of(paths["standard"]), ModelRef.of(paths["robust"])
    return CKARequest(a=a, b=b, dataset="shapes", n=n, batch_size=8)


def test_a_short_analysis_overtakes_long_ones_and_has_its_own_lane(tmp_path, tiny_checkpoints):
    store = JobStore(tmp_path / "runs")
    long_one = store.submit_analysis(_request(tiny_checkpoints, 16), estimate_s=10 * SHORT_S)
    unknown = store.submit_analysis(_request(tiny_checkpoints, 24))            # no estimate: long work
    short = store.submit_analysis(_request(tiny_checkpoints, 32), estimate_s=SHORT_S)
    assert short.lanes == ("all", "analysis", "short") and long_one.lanes == unknown.lanes == ("all", "analysis")
    assert short.config.estimate_s == SHORT_S and unknown.config.estimate_s is None

    running, queued = store.ahead_of(long_one)
    assert running == [] and [j.id for j in queued] == [short.id]           # the short one is claimed first
    assert store.ahead_of(short) == ([], [])
    assert store.claim(lane="short").id == short.id                         # the short lane's worker
    assert store.claim(lane="short") is None                                # takes nothing else
    running, queued = store.ahead_of(unknown)
    assert [j.id for j in running] == [short.id] and [j.id for j in queued] == [long_one.id]
    assert store.claim(lane="analysis").id == long_one.id and store.claim(lane="analysis").id == unknown.id


def test_the_estimate_is_checked_and_kept_in_the_jobs_config(tmp_path, tiny_checkpoints):
    store = JobStore(tmp_path / "runs")
    for bad in (-1.0, float("nan"), float("inf"), "5"):
        with pytest.raises(InvalidParameterError, match="estimate_s"):
            store.submit_analysis(_request(tiny_checkpoints, 8), estimate_s=bad)
    job = store.submit_analysis(_request(tiny_checkpoints, 8), estimate_s=3.5)
    assert job.config.to_dict()["estimate_s"] == 3.5
    assert store.get(job.id).config.short


def test_submit_starts_the_short_lanes_worker_for_short_work(tmp_path, tiny_checkpoints, monkeypatch):
    import engine.jobs.queueing as submitting

    started = []
    monkeypatch.setattr(submitting, "ensure_worker", lambda store, **kw: started.append(kw["lane"]))
    store = JobStore(tmp_path / "runs")
    submitting.submit(_request(tiny_checkpoints, 8), jobs=store, start_worker=True, estimate_s=1.0)
    submitting.submit(_request(tiny_checkpoints, 16), jobs=store, start_worker=True, estimate_s=1000.0)
    submitting.submit(_request(tiny_checkpoints, 24), jobs=store, start_worker=True)
    assert started == ["short", "analysis", "analysis"]


@pytest.mark.parametrize("bad", ["999999999999999999999999", "0", "-3", "²", "x", 2**63, True])
def test_a_job_id_out_of_range_is_a_clear_error_everywhere(tmp_path, bad, capsys):
    from engine.cli import main

    store = JobStore(tmp_path / "runs")
    with pytest.raises(InvalidParameterError, match="job"):
        store.get(bad)
    if isinstance(bad, str) and bad.lstrip("-").isascii() and bad.lstrip("-").isdigit():
        runs = ["jobs", "--runs", str(tmp_path / "runs")]
        for argv in (runs + ["wait", bad, "--timeout", "1"], runs + ["result", bad]):
            assert main(argv) == 2
            assert capsys.readouterr().err.startswith("error: no job with id")


def test_a_link_naming_an_absurd_job_says_so_on_the_page(tiny_checkpoints):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parents[3] / "pages" / "representations.py"),
                           default_timeout=120)
    at.query_params["job"] = "999999999999999999999999"
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("`?job=` in this link: no job with id 999999999999999999999999" in w.value for w in at.warning)
