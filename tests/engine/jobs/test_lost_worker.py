"""No hangs (issue 23): a job whose worker died (kill -9, out of memory) is found by its pid at once
or by its heartbeat within ``STALE_AFTER_S``; ``jobs wait`` then ends (exit 1) with one sentence
saying the worker was lost and how to retry, unless a live worker takes the job up again; ``jobs
list`` and the pages show it as interrupted, never as running with a frozen ETA."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import engine.cli.jobs as cli_jobs
import engine.jobs.store as store_module
from engine.cli import main
from engine.jobs import JobStore
from factories import tiny_config

REPO = Path(__file__).resolve().parents[3]
DEAD_PID = 2**22 + 4242  # above the default pid_max: no such process

pytestmark = [pytest.mark.skipif(os.name != "posix", reason="pids and signals are POSIX"),
              pytest.mark.usefixtures("no_autostart")]


@pytest.fixture
def quick(monkeypatch):
    """Poll and give up fast, so a test that would hang fails in seconds instead."""
    monkeypatch.setattr(cli_jobs, "POLL_S", 0.05)
    monkeypatch.setattr(cli_jobs, "LOST_GRACE_S", 0.5)
    monkeypatch.setattr(cli_jobs, "NO_WORKER_S", 0.5)


def wait(runs: Path, job_id: int, *extra: str) -> tuple[int, float]:
    start = time.monotonic()
    code = main(["jobs", "--runs", str(runs), "wait", str(job_id), "--quiet", *extra])
    return code, time.monotonic() - start


@pytest.mark.timeout(180)
def test_jobs_wait_on_a_job_whose_worker_was_killed_ends_at_once_with_one_sentence(tmp_path, quick, capsys):
    runs = tmp_path / "runs"
    store = JobStore(runs)
    job = store.submit(tiny_config(epochs=200, dataset_options={"n": 512, "image_size": 16}))
    env = dict(os.environ, PYTHONPATH=str(REPO), ROBUSTSCOPE_RUNS=str(runs))
    worker = subprocess.Popen([sys.executable, "-m", "engine.jobs", "--once", "--runs", str(runs)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 120
        while store.latest_progress(job.id) is None and time.time() < deadline and worker.poll() is None:
            time.sleep(0.05)
        assert store.get(job.id).status == "running" and store.latest_progress(job.id), "the worker never started"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGKILL)
    assert store.get(job.id).status == "running"  # what the dead worker left behind

    code, seconds = wait(runs, job.id, "--timeout", "60")  # a hang would end in exit 124 after 60 s
    err = capsys.readouterr().err
    assert code == 1, err
    assert seconds < 10, f"the lost worker was noticed only after {seconds:.1f} s"
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"error: job {job.id}: worker lost (pid {worker.pid} stopped before finishing it")
    assert f"`python -m engine jobs resume {job.id}` to retry" in line and "Traceback" not in err

    assert main(["jobs", "--runs", str(runs), "list"]) == 0
    out = capsys.readouterr().out
    [row] = [line for line in out.splitlines() if line.startswith(f"{job.id:>4}  ")]
    assert row.split()[1] == "interrupted"
    assert f"job {job.id}: worker lost" in out


def test_a_stale_heartbeat_is_a_lost_worker_even_when_its_pid_lives(tmp_path, quick, monkeypatch, capsys):
    """A worker whose pid is alive (reused, hung, or on another machine) but whose heartbeat stopped."""
    monkeypatch.setattr(store_module, "STALE_AFTER_S", 0.5)
    runs = tmp_path / "runs"
    store = JobStore(runs)
    job = store.submit(tiny_config())
    store.claim(worker_pid=os.getpid())  # a pid that lives: this test's
    assert store.refresh(job.id).status == "running"  # a fresh heartbeat: left alone
    time.sleep(0.7)
    code, seconds = wait(runs, job.id, "--timeout", "30")
    assert code == 1 and seconds < 5
    assert f"error: job {job.id}: worker lost (pid {os.getpid()}" in capsys.readouterr().err
    assert store.get(job.id).status == "interrupted"


def test_a_lost_job_that_a_live_worker_may_take_up_is_waited_for(tmp_path, quick, capsys):
    runs = tmp_path / "runs"
    store = JobStore(runs)
    job = store.submit(tiny_config())
    store.claim(worker_pid=DEAD_PID)
    store.register_worker(os.getpid(), "all", store.settings(), device="cpu")  # a live worker with its settings
    assert store.refresh(job.id).status == "interrupted" and store.lost_reason(store.get(job.id)) is None
    code, _ = wait(runs, job.id, "--timeout", "1.5")
    assert code == 124 and "worker lost" not in capsys.readouterr().err  # kept waiting for it to be claimed
    store.unregister_worker(os.getpid())
    code, _ = wait(runs, job.id, "--timeout", "30")
    assert code == 1 and f"job {job.id}: worker lost (pid {DEAD_PID}" in capsys.readouterr().err


def test_a_queued_job_that_no_worker_may_claim_ends_the_wait(tmp_path, quick, capsys):
    runs = tmp_path / "runs"
    job = JobStore(runs).submit(tiny_config())
    code, seconds = wait(runs, job.id)  # no --timeout: still bounded
    err = capsys.readouterr().err
    assert code == 1 and seconds < 10
    assert f"error: job {job.id} is still queued after 0.5 s: no worker is running with this job's settings" in err


def test_the_training_page_shows_a_lost_job_as_interrupted_with_the_resume_hint(monkeypatch):
    from streamlit.testing.v1 import AppTest

    store = JobStore()
    job = store.submit(tiny_config(), submitter="test")
    store.claim(worker_pid=DEAD_PID)
    at = AppTest.from_file(str(REPO / "pages" / "training.py"), default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    table = at.dataframe[-1].value
    assert list(table["status"]) == ["interrupted"] and "worker lost" in table["note"][0]
    lost = [w.value for w in at.warning if f"Job {job.id}: worker lost (pid {DEAD_PID}" in w.value]
    assert lost and f"`python -m engine jobs resume {job.id}` to retry" in lost[0]
    assert any(b.label == "Resume" for b in at.button)


@pytest.mark.timeout(300)
def test_an_analysis_page_shows_a_lost_background_job_and_resumes_it(tiny_checkpoints, monkeypatch):
    import engine.jobs.queueing as queueing
    from streamlit.testing.v1 import AppTest

    from engine.analysis import ModelRef
    from engine.analysis.kinds.cka import CKARequest

    started = []
    monkeypatch.setattr(queueing, "ensure_worker", lambda store, **kw: started.append(kw["lane"]))
    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "1")
    store = JobStore()
    request = CKARequest(a=ModelRef.of(tiny_checkpoints["standard"]), b=ModelRef.of(tiny_checkpoints["robust"]),
                         dataset="shapes", n=16, batch_size=8)
    job = store.submit_analysis(request)
    store.claim(worker_pid=DEAD_PID)
    at = AppTest.from_file(str(REPO / "pages" / "representations.py"), default_timeout=120)
    at.query_params["job"] = str(job.id)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    lost = [w.value for w in at.warning if f"Background job {job.id}: worker lost (pid {DEAD_PID}" in w.value]
    assert lost and f"jobs resume {job.id}" in lost[0]
    next(b for b in at.button if b.label == "Resume").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert store.get(job.id).status == "queued" and started == ["analysis"]
