"""Job store and worker: lifecycle, cancel, crash, concurrent submits, kill -9 and resume."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from engine.jobs import JobStore, run_worker
from factories import tiny_config

REPO = Path(__file__).resolve().parents[3]


tiny = tiny_config


def test_submit_run_done_with_events_log_and_checkpoint(tmp_path):
    store = JobStore(tmp_path / "runs")
    job = store.submit(tiny())
    assert job.status == "queued" and job.name.endswith(f"-j{job.id}")
    assert run_worker(store, once=True) == 1
    done = store.get(job.id)
    assert done.status == "done" and done.attempts == 1
    assert [h["epoch"] for h in store.history(job.id)] == [1, 2]
    assert "job %d done" % job.id in store.read_log(job.id)
    from engine.checkpoints import load
    assert load(done.checkpoint).card.to_dict()["training"]["epochs_completed"] == 2


def test_cancel_queued_and_running(tmp_path):
    store = JobStore(tmp_path / "runs")
    queued = store.submit(tiny())
    assert store.cancel(queued.id).status == "cancelled"
    running = store.submit(tiny(epochs=50))
    claimed = store.claim()
    assert claimed.id == running.id
    store.cancel(running.id)
    from engine.jobs import run_job
    assert run_job(store, claimed) == "cancelled"
    assert store.get(running.id).status == "cancelled"
    assert store.resume(running.id).status == "queued"


def test_crash_marks_failed_with_one_line_error_and_the_traceback_in_the_log(tmp_path, monkeypatch):
    import engine.training

    def boom(*a, **k):
        raise RuntimeError("simulated crash\nin the trainer")

    monkeypatch.setattr(engine.training, "train", boom)
    store = JobStore(tmp_path / "runs")
    job = store.submit(tiny())
    run_worker(store, once=True)
    failed = store.get(job.id)
    assert failed.status == "failed"
    assert failed.error == "RuntimeError: simulated crash in the trainer" and failed.error_line == failed.error
    log = store.read_log(job.id)
    assert "Traceback" in log and "simulated crash" in log and "def boom" not in failed.error


def test_a_robustscope_error_is_stored_as_its_message(tmp_path, monkeypatch):
    import engine.training
    from engine.errors import InvalidParameterError

    def refuse(*a, **k):
        raise InvalidParameterError("MNIST files were not found under /nowhere; set ROBUSTSCOPE_DATA")

    monkeypatch.setattr(engine.training, "train", refuse)
    store = JobStore(tmp_path / "runs")
    job = store.submit(tiny())
    run_worker(store, once=True)
    assert store.get(job.id).error == "MNIST files were not found under /nowhere; set ROBUSTSCOPE_DATA"
    assert "Traceback" in store.read_log(job.id)


def test_concurrent_submits_from_threads_are_neither_lost_nor_duplicated(tmp_path):
    root = tmp_path / "runs"
    JobStore(root)
    ids, errors = [], []

    def submit_many():
        try:
            store = JobStore(root)
            for _ in range(5):
                ids.append(store.submit(tiny()).id)
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=submit_many) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(ids) == len(set(ids)) == 30
    assert sorted(j.id for j in JobStore(root).list()) == sorted(ids)
    claimed = [JobStore(root).claim() for _ in range(31)]
    assert len({j.id for j in claimed if j is not None}) == 30 and claimed[-1] is None


def test_recover_marks_dead_workers_jobs_interrupted(tmp_path):
    store = JobStore(tmp_path / "runs")
    job = store.submit(tiny())
    store.claim(worker_pid=2**22 + 12345)  # a pid that does not exist
    assert store.recover() == [job.id]
    assert store.get(job.id).status == "interrupted"
    assert store.claim().id == job.id


@pytest.mark.timeout(240)
def test_kill_9_worker_then_restart_finishes_job(tmp_path):
    root = tmp_path / "runs"
    store = JobStore(root)
    job = store.submit(tiny(epochs=4, dataset_options={"n": 512, "image_size": 16}))
    env = dict(os.environ, PYTHONPATH=str(REPO), ROBUSTSCOPE_RUNS=str(root))
    proc = subprocess.Popen([sys.executable, "-m", "engine.jobs", "--once", "--runs", str(root)],
                            env=env, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not store.events(job.id, "epoch") and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert store.events(job.id, "epoch"), "worker never finished an epoch"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert store.get(job.id).status == "running"
    assert run_worker(store, once=True) == 1
    done = store.get(job.id)
    assert done.status == "done" and done.attempts == 2
    assert [h["epoch"] for h in store.history(job.id)] == [1, 2, 3, 4]
    from engine.checkpoints import load
    for path in (done.checkpoint, done.best_checkpoint):
        assert load(path).card.to_dict()["training"]["epochs_completed"] >= 1
