"""A training job whose worker dies MAX_ATTEMPTS times (issue 23): it ends failed, but its finished
epochs are kept — the last one published (the model picker lists it) — and its one-line error says
where it is and that ``jobs resume ID`` continues from it, which it does."""
from __future__ import annotations

import os
from pathlib import Path

from engine.checkpoints import load
from engine.jobs import JobStore, run_worker
from engine.jobs.store import MAX_ATTEMPTS
from engine.training import train
from factories import tiny_config

DEAD_PID = 2**22 + 777  # above the default pid_max: no such process


def first_epoch_then_killed(store: JobStore, job) -> None:
    """What a worker killed mid-epoch 2 leaves: epoch 1 saved in the job's run folder."""
    done = []
    train(job.config, run_dir=store.job_dir(job.id) / "run", progress=lambda ev: done.append(ev.kind == "epoch"),
          should_stop=lambda: any(done))


def die(store: JobStore, times: int) -> None:
    """Claim the job ``times`` times by a worker that then dies (recovered as interrupted)."""
    for _ in range(times):
        assert store.claim(worker_pid=DEAD_PID) is not None
        assert store.recover(alive=lambda pid: False)


def test_a_training_job_given_up_on_keeps_and_publishes_its_finished_epochs_and_resumes_from_them(tmp_path):
    store = JobStore(tmp_path / "runs")
    job = store.submit(tiny_config(epochs=2))
    die(store, 1)
    first_epoch_then_killed(store, job)
    die(store, MAX_ATTEMPTS - 1)
    assert store.get(job.id).attempts == MAX_ATTEMPTS

    assert run_worker(store, once=True) == 0  # gives up on it: it would likely kill the worker again
    failed = store.get(job.id)
    kept = store.job_dir(job.id) / "run" / "epoch-0001" / "model.safetensors"
    assert failed.status == "failed" and failed.checkpoint and failed.best_checkpoint
    published = Path(failed.checkpoint)
    assert published.parent == Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"]) and published.is_file()
    assert f"died {MAX_ATTEMPTS} times" in failed.error and "\n" not in failed.error
    assert f"published as {published}" in failed.error and f"kept in {kept}" in failed.error
    assert f"`python -m engine jobs resume {job.id}` continues from it" in failed.error
    card = load(published).card.to_dict()["training"]
    assert card["epochs_completed"] == 1 and card["status"] == "failed"
    assert kept.is_file()

    assert store.resume(job.id).status == "queued"
    assert run_worker(store, once=True) == 1
    done = store.get(job.id)
    assert done.status == "done" and done.attempts == 1 and done.checkpoint == str(published)
    assert [h["epoch"] for h in store.history(job.id)] == [1, 2]
    assert "resumed from" in store.read_log(job.id)  # continued from epoch 1, not from scratch
    assert load(published).card.to_dict()["training"]["epochs_completed"] == 2


def test_a_job_given_up_on_before_any_epoch_finished_says_to_check_its_log(tmp_path):
    store = JobStore(tmp_path / "runs")
    job = store.submit(tiny_config())
    die(store, MAX_ATTEMPTS)
    [given_up] = store.give_up()
    assert given_up.id == job.id and given_up.status == "failed" and given_up.checkpoint is None
    assert "Check its log" in given_up.error and f"jobs resume {job.id}" in given_up.error
    assert store.give_up() == []
