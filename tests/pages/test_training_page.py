"""AppTest of the Training page: the form queues a job that shows in the queue."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from engine.jobs import JobStore
from engine.training import TrainConfig


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


def _page() -> AppTest:
    return AppTest.from_file(str(Path(__file__).resolve().parents[2] / "pages" / "training.py"), default_timeout=60)


def test_page_says_when_no_worker_runs_and_how_to_start_one(monkeypatch):
    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")
    at = _page()
    at.run()
    assert not at.exception
    assert any("No training worker is running" in w.value and "python -m engine worker" in w.value
               for w in at.warning)


def test_page_names_the_running_worker_pid_and_how_to_stop_it(monkeypatch):
    from engine.jobs.worker import WorkerLock, lock_path, pid_path

    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")
    store = JobStore()
    lock = WorkerLock(lock_path(store))  # what a live worker holds
    assert lock.acquire()
    try:
        pid_path(store).write_text("424242")
        at = _page()
        at.run()
        assert not at.exception
        notice = [c.value for c in at.caption if "Training worker" in c.value]
        assert notice and "pid 424242" in notice[0] and "kill 424242" in notice[0]
        assert not any("No training worker" in w.value for w in at.warning)
    finally:
        lock.release()


def test_page_lists_live_workers_and_says_why_a_job_with_other_settings_waits(monkeypatch, tmp_path):
    import os

    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")
    store = JobStore()
    other = {**store.settings(), "data_root": str(tmp_path / "old-data")}
    store.register_worker(os.getpid(), "all", other, owner_pid=None, device="cpu")
    job = store.submit(TrainConfig(dataset="shapes", arch="small_cnn", epochs=1), submitter="test")
    at = _page()
    at.run()
    assert not at.exception
    workers = at.dataframe[0].value
    assert list(workers["pid"]) == [os.getpid()] and list(workers["data root"]) == [str(tmp_path / "old-data")]
    assert list(workers["device"]) == ["cpu"] and list(workers["running"]) == ["idle"]
    assert list(workers["settings"]) == ["other"]
    waiting = [w.value for w in at.warning if f"Job {job.id} is waiting" in w.value]
    assert waiting and f"uses data root {tmp_path / 'old-data'}" in waiting[0]
    assert f"this job needs {store.settings()['data_root']}" in waiting[0]
    assert "waiting" in at.dataframe[1].value["note"][0]


def test_page_shows_a_failed_jobs_error_in_one_line(monkeypatch):
    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")
    store = JobStore()
    job = store.submit(TrainConfig(dataset="shapes", arch="small_cnn", epochs=1), submitter="test")
    store.claim()
    store.finish(job.id, "failed", error="Traceback (most recent call last):\n  File x\nRuntimeError: out of memory")
    at = _page()
    at.run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any(f"Job {job.id} failed: RuntimeError: out of memory" in e and f"jobs logs {job.id}" in e
               for e in errors), errors
    assert not any("Traceback" in e for e in errors)


def test_one_epoch_is_a_table_and_a_standard_run_shows_no_robust_accuracy(monkeypatch):
    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")
    store = JobStore()
    job = store.submit(TrainConfig(dataset="shapes", arch="small_cnn", method="standard", epochs=1))
    store.add_event(job.id, "epoch", {"epoch": 1, "train_loss": 0.5, "train_acc": 0.8, "clean_acc": 0.9,
                                      "robust_acc": 0.9}, epoch=1)
    at = _page()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.get("plotly_chart")
    table = at.dataframe[-1].value
    assert list(table["clean_acc"]) == [0.9] and "robust_acc" not in table.columns
