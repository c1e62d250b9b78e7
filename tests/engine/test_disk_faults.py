"""Faults end in a sentence (issue 23), on real disks: a tiny tmpfs that fills up and a read-only
mount (see tests/faults.py; skipped where mounting is not permitted). The result store, ``--out``
files and checkpoint publishing each end in one ``error:`` line (exit 1), serve nothing
half-written, keep what was there, and give the right answer once the disk has room again."""
from __future__ import annotations

import json
import shutil

import pytest

from analysis_helpers import cli
from engine.analysis import ResultStore
from engine.checkpoints import load, save_checkpoint
from engine.errors import StorageError
from faults import fill, full_disk, read_only_dir

pytestmark = pytest.mark.usefixtures("no_autostart")


def cka_argv(paths, *extra) -> list:
    return ["cka", "--a", paths["standard"], "--b", paths["robust"], "--dataset", "shapes", "--n", 24, *extra]


def error_lines(err: str) -> list[str]:
    return [line for line in err.split("\n") if line.startswith("error:")]


def test_a_full_results_disk_is_one_sentence_then_the_right_answer(tiny_checkpoints, tmp_path, monkeypatch, capsys):
    rc, reference, _ = cli(cka_argv(tiny_checkpoints, "--json"), capsys)   # computed on a disk with room
    assert rc == 0
    with full_disk(tmp_path, size_kb=256) as runs:
        monkeypatch.setenv("ROBUSTSCOPE_RUNS", str(runs))
        filler = fill(runs, leave_bytes=1024)
        rc, _, err = cli(cka_argv(tiny_checkpoints, "--json"), capsys)
        [line] = error_lines(err)
        assert rc == 1 and "Traceback" not in err
        assert line.startswith(f"error: cannot save the result in {runs}/results") and "the disk is full" in line
        assert ResultStore().list() == [] and not list((runs / "results").glob(".tmp-*"))
        filler.unlink()   # room again: the same command now answers, and stores
        rc, again, _ = cli(cka_argv(tiny_checkpoints, "--json"), capsys)
        assert rc == 0 and again["cached"] is False and again["result"] == reference["result"]
        assert again["block_structure"] == reference["block_structure"]
        rc, cached, _ = cli(cka_argv(tiny_checkpoints, "--json"), capsys)
        assert rc == 0 and cached["cached"] is True


def test_a_read_only_results_folder_serves_what_is_whole_and_refuses_the_rest(tiny_checkpoints, tmp_path,
                                                                              monkeypatch, capsys):
    def populate(runs):
        monkeypatch.setenv("ROBUSTSCOPE_RUNS", str(runs))
        assert cli(cka_argv(tiny_checkpoints, "--json"), capsys)[0] == 0
        assert cli(cka_argv(tiny_checkpoints, "--json", "--kernel", "rbf"), capsys)[0] == 0
        damaged = next(e for e in ResultStore().list() if "rbf" not in json.dumps(_request(e.key)))
        record = ResultStore().path(damaged.key) / "result.json"
        record.write_text(record.read_text().replace('"n": 24', '"n": 25', 1))

    with read_only_dir(tmp_path, populate=populate) as runs:
        monkeypatch.setenv("ROBUSTSCOPE_RUNS", str(runs))
        rc, stored, _ = cli(cka_argv(tiny_checkpoints, "--json", "--kernel", "rbf"), capsys)
        assert rc == 0 and stored["cached"] is True    # a whole entry still answers
        rc, _, err = cli(cka_argv(tiny_checkpoints, "--json"), capsys)
        [line] = error_lines(err)
        assert rc == 1 and "the file system is read-only" in line and "Traceback" not in err
        assert len(ResultStore().list()) == 2           # the damaged entry was not served, and stays


def _request(key: str) -> dict:
    return json.loads((ResultStore().path(key) / "result.json").read_text())["request"]


def test_out_files_on_a_full_disk_keep_the_old_file_and_leave_no_temp(tiny_checkpoints, tmp_path, capsys):
    with full_disk(tmp_path, size_kb=256) as disk:
        target = disk / "cka.csv"
        target.write_text("the old answer")
        fill(disk, leave_bytes=256)
        rc, _, err = cli(cka_argv(tiny_checkpoints, "--out", target), capsys)
        [line] = error_lines(err)
        assert rc == 1 and line.startswith(f"error: cannot write the CSV file {target}") and "disk is full" in line
        assert target.read_text() == "the old answer"
        assert sorted(p.name for p in disk.iterdir()) == sorted(["cka.csv", "filler.bin"])


def test_publishing_a_checkpoint_on_a_full_disk_keeps_the_old_one(tiny_checkpoints, tmp_path):
    loaded = load(tiny_checkpoints["standard"])
    with full_disk(tmp_path, size_kb=512) as disk:
        for suffix in (".safetensors", ".json"):
            shutil.copy(tiny_checkpoints["standard"].with_suffix(suffix), disk / f"model{suffix}")
        before = {p.name: p.read_bytes() for p in disk.iterdir()}
        fill(disk, leave_bytes=512)
        loaded.model.net.fc.weight.data += 1.0   # new weights that must not half-replace the old
        with pytest.raises(StorageError, match=f"cannot save the checkpoint {disk}/model: the disk is full"):
            save_checkpoint(loaded.model, loaded.card, disk / "model")
        assert {p.name: p.read_bytes() for p in disk.iterdir() if p.name != "filler.bin"} == before
        assert load(disk / "model").sha256 == loaded.sha256
