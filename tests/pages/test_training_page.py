"""AppTest of the Training page: the form queues a job that shows in the queue."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.jobs import JobStore


def test_page_queues_a_job(monkeypatch):
    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")
    at = AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages" / "training.py"), default_timeout=60)
    at.run()
    assert not at.exception
    assert any("No training jobs yet" in i.value for i in at.info)
    assert any("Estimated cost" in c.value for c in at.caption)
    at.button[0].click().run()
    assert not at.exception
    jobs = JobStore().list()
    assert len(jobs) == 1 and jobs[0].status == "queued" and jobs[0].config.method == "standard"
    assert any(f"Queued job {jobs[0].id}" in s.value for s in at.success)
