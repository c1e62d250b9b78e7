"""A RobustBench zoo in one command (issue 26): three tiny RobustBench-format checkpoints (random
weights, in RobustBench's cache layout) and a tiny CIFAR-10 in its binary format; ``evaluate --zoo``
imports each once, queues one job each, and the leaderboard puts our figures beside the reported
ones."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis_helpers import cli
from engine.checkpoints import robustbench as rb
from engine.cli import main
from engine.jobs import JobStore, run_worker
from factories import ZOO_NAMES as NAMES, tiny_cifar, tiny_zoo

pytestmark = pytest.mark.usefixtures("no_autostart")
@pytest.fixture
def zoo(monkeypatch, tmp_path):
    tiny_cifar(tmp_path / "data")
    monkeypatch.setenv("ROBUSTSCOPE_DATA", str(tmp_path / "data"))
    return tiny_zoo(monkeypatch, tmp_path / "models")


def zoo_argv(tmp_path, *extra) -> list:
    return ["evaluate", "--zoo", "cifar10/Linf", "--names", *NAMES, "--model-dir", tmp_path / "models",
            "--no-download", "--n", 4, "--attack", "autoattack", "--version", "custom", "--attacks", "apgd-ce",
            "--steps", 3, *extra]


def test_a_zoo_is_queued_evaluated_and_put_beside_the_leaderboard(zoo, tmp_path, capsys):
    rc, body, err = cli([*zoo_argv(tmp_path), "--background"], capsys)
    assert rc == 0, err
    assert [job["name"] for job in body["jobs"]] == list(NAMES) and body["skipped"] == []
    assert run_worker(JobStore(), once=True, lane="analysis") == 3
    assert all(JobStore().get(job["job"]).status == "done" for job in body["jobs"])
    from streamlit.testing.v1 import AppTest

    page = AppTest.from_file(str(Path(__file__).resolve().parents[3] / "pages" / "results.py"), default_timeout=120).run()
    assert not page.exception and "RobustBench zoo: ours vs the leaderboard" in [h.value for h in page.subheader]
    assert main(["zoo", "--leaderboard", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["name"] for r in rows) == sorted(NAMES)
    for row in rows:
        entry = zoo[row["name"]]
        assert row["reported_autoattack_acc"] == entry.leaderboard["autoattack_acc"]
        assert row["difference"] == pytest.approx(row["robust_acc"] - entry.leaderboard["autoattack_acc"])
        assert row["n"] == 4 and row["eps"] == pytest.approx(8 / 255)
    # again: the imports are reused (no second copy) and every answer is stored
    rc, again, _ = cli([*zoo_argv(tmp_path), "--background"], capsys)
    assert rc == 0 and all(job["status"] == "done" for job in again["jobs"])
    assert len(list(Path(tmp_path / "checkpoints").glob("Tiny2025*.safetensors"))) == 3


def test_a_zoo_entry_whose_weights_are_missing_is_skipped_with_why(zoo, tmp_path, capsys):
    rb.cache_path(zoo["Tiny2025B"], tmp_path / "models").unlink()
    rc, body, err = cli([*zoo_argv(tmp_path), "--background"], capsys)
    assert rc == 0 and [job["name"] for job in body["jobs"]] == ["Tiny2025A", "Tiny2025C"]
    assert body["skipped"][0]["name"] == "Tiny2025B" and "warning: Tiny2025B: skipped" in err
    rc, _, err = cli(["evaluate", "--zoo", "cifar10/Linf", "--names", "Nobody2099"], capsys)
    assert rc == 2 and "not in the cifar10/Linf zoo: Nobody2099" in err
    rc, _, err = cli(["evaluate", "--zoo", "cifar10"], capsys)
    assert rc == 2 and "--zoo takes DATASET/THREAT" in err
