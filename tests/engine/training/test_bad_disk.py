"""Training onto a bad disk (issue 23): a read-only run folder and a full disk end in one sentence
(``error: ...``, exit status 1; a background job's one-line error), never a traceback, and the run
folder's earlier epochs stay as they were (the same command resumes once there is room).

The disks are real: tmpfs mounts from ``tests/faults.py`` (skipped where mounting is not permitted).
"""
from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest
import torch

from engine.errors import StorageError
from engine.jobs import JobStore, run_worker
from engine.training import train
from engine.training.state import read_state, save_optimizer
from engine.training.trainer import save_model
from factories import tiny_config
from faults import fill, full_disk, read_only_dir, tmpfs


def config(**kw):
    """The tiny recipe, as the CLI reads it back from its JSON file (so ``config.json`` is the same)."""
    from engine.training import TrainConfig

    return TrainConfig.from_json(tiny_config(**{"epochs": 2, **kw}).to_json())


def train_one_epoch(run_dir: Path) -> None:
    """Train ``config()`` into ``run_dir`` and stop after its first epoch (resumable)."""
    done = []
    result = train(config(), run_dir=run_dir, progress=lambda ev: done.append(ev.kind == "epoch"),
                   should_stop=lambda: any(done))
    assert result.status == "cancelled" and result.epochs_completed == 1


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` -> the sha256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def cli_train(tmp_path: Path, run_dir: Path, capsys) -> tuple[int, str]:
    from engine.cli import main

    path = tmp_path / "config.json"
    path.write_text(config().to_json())
    code = main(["train", "--config", str(path), "--run-dir", str(run_dir)])
    return code, capsys.readouterr().err


def assert_one_sentence(err: str, *needles: str) -> str:
    [line] = [line for line in err.splitlines() if line.startswith("error: ")]
    assert line.startswith("error: cannot "), line
    assert "Traceback" not in err and "basic_ios" not in err and "SafetensorError" not in err, err
    for needle in needles:
        assert needle in line, line
    return line


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` says the disk is full: the OSError itself, or its one-sentence StorageError."""
    if isinstance(exc, StorageError):
        return "the disk is full" in str(exc) and "\n" not in str(exc)
    return isinstance(exc, OSError) and exc.errno == errno.ENOSPC


def test_checkpoints_and_optimiser_state_on_a_full_disk_say_so_and_leave_nothing(tmp_path):
    model = torch.nn.Linear(200, 200)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 200)).sum().backward()
    optimizer.step()
    with full_disk(tmp_path, size_kb=64) as folder:
        fill(folder)
        with pytest.raises(Exception) as caught:  # torch.save alone says "basic_ios::clear" / "unexpected pos"
            save_optimizer(folder, optimizer)
        assert disk_full(caught.value), repr(caught.value)
        assert sorted(p.name for p in folder.iterdir()) == ["filler.bin"]
        with pytest.raises(Exception) as caught:  # safetensors says "SafetensorError: ... (os error 28)"
            save_model(model_for_card(), card_for_model(), folder / "model")
        assert disk_full(caught.value), repr(caught.value)
        assert sorted(p.name for p in folder.iterdir()) == ["filler.bin"]


def model_for_card():
    from engine.data import get_spec
    from engine.models import build_model

    spec = get_spec("shapes")
    return build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=8, hidden=32)


def card_for_model():
    from engine.checkpoints import make_card

    return make_card(model_for_card(), "shapes", name="m")


@pytest.mark.timeout(300)
def test_foreground_training_onto_a_full_disk_is_one_sentence_and_keeps_the_earlier_epoch(tmp_path, capsys):
    with full_disk(tmp_path, size_kb=768) as disk:
        run_dir = disk / "run"
        train_one_epoch(run_dir)
        before = snapshot(run_dir)
        filler = fill(disk, leave_bytes=16 * 1024)  # config.json fits, epoch 2's checkpoint does not
        code, err = cli_train(tmp_path, run_dir, capsys)
        assert code == 1, err
        assert_one_sentence(err, str(run_dir), "the disk is full")
        assert snapshot(run_dir) == before  # the pointer, epoch 1's checkpoint and optimiser untouched
        assert not (run_dir / "epoch-0002").exists() and not list(run_dir.rglob("*.tmp"))
        filler.unlink()  # room again: the same command resumes from epoch 1
        code, err = cli_train(tmp_path, run_dir, capsys)
        assert code == 0, err
        state = read_state(run_dir)
        assert state.epoch == 2 and [h["epoch"] for h in state.history] == [1, 2]


@pytest.mark.timeout(300)
def test_foreground_training_into_a_read_only_run_folder_is_one_sentence(tmp_path, capsys):
    with read_only_dir(tmp_path, populate=lambda folder: train_one_epoch(folder / "run")) as folder:
        run_dir = folder / "run"
        before = snapshot(run_dir)
        assert read_state(run_dir).epoch == 1
        code, err = cli_train(tmp_path, run_dir, capsys)
        assert code == 1, err
        assert_one_sentence(err, str(run_dir), "read-only")
        assert snapshot(run_dir) == before


@pytest.mark.timeout(300)
def test_a_background_training_job_on_a_full_disk_fails_with_the_same_one_line_error(tmp_path):
    store = JobStore(tmp_path / "runs")
    job = store.submit(config(epochs=1))
    run_dir = store.job_dir(job.id) / "run"
    with tmpfs(run_dir, size_kb=64):  # config.json fits, the first epoch's checkpoint does not
        assert run_worker(store, once=True) == 1
        failed = store.get(job.id)
        assert failed.status == "failed"
        assert failed.error.startswith("cannot ") and str(run_dir) in failed.error
        assert "the disk is full" in failed.error and "free some space" in failed.error
        assert "\n" not in failed.error and "Error" not in failed.error and "basic_ios" not in failed.error
        assert sorted(p.name for p in run_dir.iterdir()) == ["config.json"]  # no half-written epoch folder
    assert "Traceback" in store.read_log(job.id)  # the details go to the job's log
