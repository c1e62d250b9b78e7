"""Jobs record the settings they depend on; a worker runs only jobs with its own settings (a stale
worker leaves the others, visibly); workers a dashboard started stop with it; the workers table."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from engine.jobs import JobStore, ensure_worker, run_worker
from engine.jobs.store import SCHEMA_VERSION, pid_alive
from engine.jobs.worker import WorkerLock, lock_path, worker_alive
from engine.paths import current_settings, settings_key
from factories import tiny_config

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.skipif(os.name != "posix", reason="workers, locks and pids are POSIX")


def tiny(**kw):
    return tiny_config(**{"dataset_options": {"n": 64, "image_size": 16}, "arch_kwargs": {"width": 4, "hidden": 16},
                          "epochs": 1, **kw})


def wait_for(condition, timeout: float, every: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    return condition()


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ------------------------------------------------------------------ settings
def test_settings_are_read_in_one_place_with_the_engines_variable_names(monkeypatch, tmp_path):
    from engine import paths
    from engine.analysis.registry import PLUGINS_ENV
    from engine.checkpoints.store import CHECKPOINTS_ENV
    from engine.data.base import DATA_ENV

    assert (paths.DATA_ENV, paths.CHECKPOINTS_ENV, paths.ANALYSES_ENV) == (DATA_ENV, CHECKPOINTS_ENV, PLUGINS_ENV)
    monkeypatch.setenv("ROBUSTSCOPE_DATA", str(tmp_path / "d" / ".." / "data"))
    monkeypatch.setenv("ROBUSTSCOPE_ANALYSES", " b_kind, a_kind ,,")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    settings = current_settings(tmp_path / "runs")
    assert settings == {"data_root": str((tmp_path / "data").resolve()),
                        "checkpoints_root": str((tmp_path / "checkpoints").resolve()),
                        "runs_root": str((tmp_path / "runs").resolve()), "analyses": "a_kind,b_kind",
                        "cuda_visible_devices": None}
    monkeypatch.delenv("ROBUSTSCOPE_DATA")
    monkeypatch.chdir(tmp_path)  # unset: ./data of the current folder, the same folder as set explicitly
    assert current_settings(tmp_path / "runs")["data_root"] == settings["data_root"]
    # the runs folder is the store's own: never compared
    assert settings_key(settings) == settings_key({**settings, "runs_root": "/elsewhere"})
    assert settings_key(settings) != settings_key({**settings, "data_root": "/elsewhere"})


def test_training_and_analysis_jobs_record_their_settings(tmp_path, tiny_checkpoints):
    from engine.analysis import ModelRef
    from engine.analysis.kinds.cka import CKARequest

    store = JobStore(tmp_path / "runs")
    train = store.submit(tiny())
    assert train.settings == store.settings() == current_settings(tmp_path / "runs")
    a, b = ModelRef.of(tiny_checkpoints["standard"]), ModelRef.of(tiny_checkpoints["robust"])
    analysis = store.submit_analysis(CKARequest(a=a, b=b, dataset="shapes", n=8, batch_size=8).validate())
    assert analysis.settings == store.settings() and analysis.to_dict()["settings"] == analysis.settings


def test_a_version_2_store_is_migrated_and_its_jobs_run_as_before(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    con = sqlite3.connect(root / "jobs.sqlite")
    con.executescript("""
        CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, config TEXT NOT NULL,
            status TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL, heartbeat REAL,
            worker_pid INTEGER, attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,
            error TEXT, checkpoint TEXT, best_checkpoint TEXT, submitter TEXT, kind TEXT NOT NULL DEFAULT 'train',
            result_key TEXT);
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL, time REAL NOT NULL,
            kind TEXT NOT NULL, epoch INTEGER, epochs INTEGER, batch INTEGER, batches INTEGER, eta_s REAL, metrics TEXT);
        PRAGMA user_version = 2;
    """)
    con.execute("INSERT INTO jobs (name, config, status, created) VALUES ('old', ?, 'queued', 1.0)", (tiny().to_json(),))
    con.commit()
    con.close()
    store = JobStore(root)
    [old] = store.list()
    assert old.settings is None and store.waiting_reason(old) and "no worker is running" in store.waiting_reason(old)
    with sqlite3.connect(root / "jobs.sqlite") as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
    # an unrecorded job is claimed by any worker, whatever its settings
    assert store.claim(settings={**store.settings(), "data_root": "/another/data"}).id == old.id
    JobStore(root)  # opening it again is a no-op


def test_claim_takes_only_jobs_with_the_workers_settings_and_says_why_the_others_wait(tmp_path):
    store = JobStore(tmp_path / "runs")
    mine = store.settings()
    other = {**mine, "data_root": str(tmp_path / "other-data")}
    job = store.submit(tiny())
    assert store.claim(settings=other) is None
    store.register_worker(os.getpid(), "all", other)  # a live worker with other settings
    reason = store.waiting_reason(store.get(job.id))
    assert f"uses data root {other['data_root']} (this job needs {mine['data_root']})" in reason
    assert f"ROBUSTSCOPE_DATA={mine['data_root']}" in reason and "python -m engine worker" in reason
    store.unregister_worker(os.getpid())
    assert "no worker is running with this job's settings" in store.waiting_reason(store.get(job.id))
    store.register_worker(os.getpid(), "all", mine)
    assert store.waiting_reason(store.get(job.id)) is None
    claimed = store.claim(settings=mine)
    assert claimed.id == job.id and store.workers()[0].job_id == job.id
    assert store.waiting_reason(store.get(job.id)) is None  # running: not waiting


def test_locks_are_per_lane_and_settings_so_workers_of_two_settings_coexist(tmp_path):
    store = JobStore(tmp_path / "runs")
    other = {**store.settings(), "data_root": str(tmp_path / "other-data")}
    assert lock_path(store) != lock_path(store, settings=other) != lock_path(store, "analysis")
    a, b = WorkerLock(lock_path(store)), WorkerLock(lock_path(store, settings=other))
    assert a.acquire() and b.acquire()
    try:
        assert worker_alive(store) and worker_alive(store, settings=other)
        assert not worker_alive(store, "analysis")
        assert run_worker(store, once=True) == -1  # the same lane and settings: one worker
    finally:
        a.release()
        b.release()


def test_workers_table_lists_live_workers_and_drops_dead_ones(tmp_path):
    store = JobStore(tmp_path / "runs")
    store.register_worker(os.getpid(), "analysis", store.settings(), owner_pid=1, device="cpu")
    store.register_worker(2**22 + 4321, "all", store.settings())  # a pid that does not exist
    [live] = store.workers()
    assert (live.pid, live.lane, live.device, live.owner_pid, live.job_id) == (os.getpid(), "analysis", "cpu", 1, None)
    assert live.settings == store.settings()
    with sqlite3.connect(store.path) as con:
        assert [r[0] for r in con.execute("SELECT pid FROM workers")] == [os.getpid()]  # the dead row is gone
    assert store.workers(stale_after_s=-1) == []  # a heartbeat too old: its pid may be another process by now


def test_a_running_worker_records_itself_and_removes_its_row(tmp_path, monkeypatch):
    import engine.training

    store = JobStore(tmp_path / "runs")
    seen = []

    def fake_train(config, run_dir, progress, should_stop):
        seen.append(store.workers())
        return SimpleNamespace(status="done", checkpoint=None, best_checkpoint=None, epochs_completed=1)

    monkeypatch.setattr(engine.training, "train", fake_train)
    job = store.submit(tiny())
    assert run_worker(store, once=True) == 1
    [[worker]] = seen
    assert worker.pid == os.getpid() and worker.job_id == job.id and worker.lane == "all"
    assert worker.settings["data_root"] == store.settings()["data_root"] and worker.device
    assert store.workers() == []


# ------------------------------------------------------------------ the stale worker
@pytest.mark.timeout(240)
def test_a_worker_with_another_data_root_leaves_the_job_visibly_and_one_with_its_settings_runs_it(
        tmp_path, monkeypatch):
    """The issue: a worker started with an old ROBUSTSCOPE_DATA must not take (and fail) a job
    submitted with another one."""
    root = tmp_path / "runs"
    store = JobStore(root)
    job = store.submit(tiny())
    needs = job.settings["data_root"]
    stale_data = tmp_path / "old-data"
    env = dict(os.environ, PYTHONPATH=str(REPO), ROBUSTSCOPE_DATA=str(stale_data), ROBUSTSCOPE_RUNS=str(root))

    once = subprocess.run([sys.executable, "-m", "engine.jobs", "--once", "--runs", str(root)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert once.returncode == 0, once.stderr
    assert json.loads(once.stdout.strip().splitlines()[-1]) == {"jobs_run": 0}
    left = store.get(job.id)
    assert left.status == "queued" and left.error is None and left.attempts == 0

    stale = subprocess.Popen([sys.executable, "-m", "engine.jobs", "--runs", str(root), "--idle-exit", "60"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert wait_for(lambda: [w for w in store.workers() if w.pid == stale.pid and w.device], 60)
        time.sleep(2.5)  # a couple of its polls
        assert store.get(job.id).status == "queued"
        reason = store.waiting_reason(store.get(job.id))
        assert f"the running worker (pid {stale.pid}) uses data root {stale_data.resolve()}" in reason
        assert f"this job needs {needs}" in reason
    finally:
        kill(stale.pid)
        stale.wait(timeout=30)

    # ensure_worker from a process with yet another data root starts one with the job's settings
    monkeypatch.setenv("ROBUSTSCOPE_DATA", str(tmp_path / "third-data"))
    pid = ensure_worker(store, idle_exit_s=1.0, settings=job.settings)
    assert pid
    try:
        done = wait_for(lambda: store.get(job.id).status in ("done", "failed") and store.get(job.id), 180, 0.2)
        assert done and done.status == "done", done and done.error
        assert done.worker_pid == pid
    finally:
        wait_for(lambda: not pid_alive(pid), 30)
        kill(pid)


# ------------------------------------------------------------------ owners
@pytest.mark.timeout(120)
def test_a_worker_stops_when_its_owner_is_gone(tmp_path):
    store = JobStore(tmp_path / "runs")
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    pid = ensure_worker(store, idle_exit_s=None, lane="analysis", owner_pid=owner.pid)
    try:
        worker = wait_for(lambda: next((w for w in store.workers() if w.pid == pid), None), 60)
        assert worker and worker.owner_pid == owner.pid and worker.lane == "analysis"
        assert worker_alive(store, "analysis")
        time.sleep(1.0)
        assert pid_alive(pid)  # the owner lives: the worker stays (no idle exit)
        owner.kill()
        owner.wait(timeout=10)
        start = time.time()
        assert wait_for(lambda: not pid_alive(pid), 20), "the worker outlived its owner"
        assert time.time() - start < 20
        assert not worker_alive(store, "analysis") and store.workers() == []
    finally:
        owner.kill()
        kill(pid)


def test_a_worker_finishes_its_training_job_then_exits_when_its_owner_is_gone(tmp_path, monkeypatch):
    import engine.jobs.worker as worker
    import engine.training

    monkeypatch.setattr(worker, "OWNER_CHECK_S", 0.05)
    store = JobStore(tmp_path / "runs")
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])

    def train_while_the_owner_dies(config, run_dir, progress, should_stop):
        owner.kill()
        owner.wait(timeout=10)
        time.sleep(0.3)
        return SimpleNamespace(status="done", checkpoint=None, best_checkpoint=None, epochs_completed=1)

    monkeypatch.setattr(engine.training, "train", train_while_the_owner_dies)
    first, second = store.submit(tiny()), store.submit(tiny())
    try:
        assert run_worker(store, owner_pid=owner.pid, idle_exit_s=None) == 1
    finally:
        owner.kill()
    assert store.get(first.id).status == "done"
    assert store.get(second.id).status == "queued"  # left for the next worker


def test_a_cli_worker_has_no_owner_and_keeps_its_idle_exit(tmp_path):
    store = JobStore(tmp_path / "runs")
    start = time.monotonic()
    assert run_worker(store, idle_exit_s=0.3, poll_s=0.05) == 0
    assert time.monotonic() - start >= 0.3


# ------------------------------------------------------------------ CLI
def test_jobs_list_and_wait_say_why_a_job_waits_and_show_a_failure_in_one_line(tmp_path, monkeypatch, capsys):
    import engine.training
    from engine.cli import main

    runs = tmp_path / "runs"
    store = JobStore(runs)
    waiting = store.submit(tiny(), settings={**store.settings(), "data_root": str(tmp_path / "their-data")})

    def boom(*a, **k):
        raise ValueError("a bad\nbatch")

    monkeypatch.setattr(engine.training, "train", boom)
    failed = store.submit(tiny())
    run_worker(store, once=True)
    assert store.get(waiting.id).status == "queued"
    assert main(["jobs", "--runs", str(runs), "list"]) == 0
    out = capsys.readouterr().out
    assert f"ROBUSTSCOPE_DATA={tmp_path / 'their-data'}" in out and "waiting: no worker is running" in out
    assert f"ValueError: a bad batch (details: `python -m engine jobs logs {failed.id}`)" in out
    assert "Traceback" not in out
    assert main(["jobs", "--runs", str(runs), "wait", str(failed.id), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"job {failed.id} failed: ValueError: a bad batch" in err and f"jobs logs {failed.id}" in err
    assert "Traceback" not in err
    assert main(["jobs", "--runs", str(runs), "wait", str(waiting.id), "--quiet", "--timeout", "0.2"]) == 124
    assert "waiting: no worker is running with this job's settings" in capsys.readouterr().err
    assert main(["jobs", "--runs", str(runs), "logs", str(failed.id)]) == 0
    assert "Traceback" in capsys.readouterr().out
    store.register_worker(os.getpid(), "all", store.settings(), device="cpu")
    assert main(["jobs", "--runs", str(runs), "workers"]) == 0
    out = capsys.readouterr().out
    assert f"pid {os.getpid()}" in out and "idle" in out and store.settings()["data_root"] in out
