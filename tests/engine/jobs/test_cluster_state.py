"""The Ray backend's state copies and weights cache, without Ray: a task's state folder reaches the
head as the files changed since its last report (a training run's epochs once each, not the whole
folder at every epoch), deletions included; a node's weights cache drops its least recently used
models beyond its size limit."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.errors import RobustScopeError
from engine.jobs import cluster


class _Remote:
    """``channel.method.remote(...)`` calling a local :class:`cluster.Channel`, recording what was sent."""

    def __init__(self, channel: cluster.Channel, sent: list):
        self.channel, self.sent = channel, sent

    def __getattr__(self, name):
        method = getattr(self.channel, name)

        class Call:
            @staticmethod
            def remote(*args):
                self.sent.append((name, args))
                return method(*args)

        return Call


def _bump(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    later = path.stat().st_mtime_ns + 10**9   # a new mtime even on a coarse clock
    os.utime(path, ns=(later, later))


def test_a_task_sends_only_what_changed_and_the_head_follows_deletions(tmp_path):
    task, head = tmp_path / "task", tmp_path / "head"
    channel, sent = cluster.Channel(), []
    sync = cluster._StateSync(task, _Remote(channel, sent), "run/7")
    _bump(task / "state.json", b'{"last": "epoch-1"}')
    _bump(task / "epoch-1" / "weights.safetensors", b"1" * 1000)
    sync.push()
    _, states, _ = channel.drain()
    cluster.write_files(head, *states["run/7"])
    assert cluster.folder_files(head) == cluster.folder_files(task)

    _bump(task / "state.json", b'{"last": "epoch-2"}')           # epoch 2 replaces epoch 1
    _bump(task / "epoch-2" / "weights.safetensors", b"2" * 1000)
    (task / "epoch-1" / "weights.safetensors").unlink()
    (task / "epoch-1").rmdir()
    sync.push()
    name, (key, files, present) = sent[-1]
    assert (name, key) == ("save_state", "run/7")
    assert set(files) == {"state.json", "epoch-2/weights.safetensors"}  # epoch 1 is not sent again
    assert present == ["epoch-2/weights.safetensors", "state.json"]
    _, states, _ = channel.drain()
    cluster.write_files(head, *states["run/7"])
    assert cluster.folder_files(head) == cluster.folder_files(task) and not (head / "epoch-1").exists()
    assert channel.state("run/7") == cluster.folder_files(task)   # what a retry on another node starts from

    sync.push()                                                    # nothing changed: nothing sent
    assert len(sent) == 2 and channel.drain()[1] == {}


def test_changes_between_two_drains_arrive_together(tmp_path):
    task, head = tmp_path / "task", tmp_path / "head"
    channel = cluster.Channel()
    sync = cluster._StateSync(task, _Remote(channel, []), "key")
    _bump(task / "a", b"a1")
    sync.push()
    _bump(task / "b", b"b1")
    sync.push()
    _, states, _ = channel.drain()
    files, present = states["key"]
    assert files == {"a": b"a1", "b": b"b1"} and present == ["a", "b"]
    cluster.write_files(head, files, present)
    assert cluster.folder_files(head) == {"a": b"a1", "b": b"b1"}


@pytest.mark.parametrize("name", ["../outside", "/etc/passwd", "a/../../b"])
def test_the_head_refuses_a_state_file_outside_its_folder(tmp_path, name):
    with pytest.raises(RobustScopeError, match="outside its folder"):
        cluster.write_files(tmp_path / "head", {name: b"x"}, [name])
    with pytest.raises(RobustScopeError, match="outside its folder"):
        cluster.write_files(tmp_path / "head", {}, [name])
    assert not (tmp_path / "outside").exists()


def test_the_weights_cache_drops_the_least_recently_used_models_beyond_its_limit(tmp_path, monkeypatch):
    monkeypatch.setenv(cluster.WEIGHTS_CACHE_ENV, str(tmp_path / "cache"))
    for age, digest in enumerate(["old", "older_but_running", "new"]):
        folder = tmp_path / "cache" / digest
        folder.mkdir(parents=True)
        (folder / "m.safetensors").write_bytes(b"w" * 2**20)     # 1 MiB each
        used = 1_000_000 + (10 if digest == "new" else -age)
        os.utime(folder, (used, used))
    assert cluster.prune_weights_cache(keep={"older_but_running"}, limit_mb=10) == []   # 3 MiB fit
    assert cluster.prune_weights_cache(keep={"older_but_running"}, limit_mb=2) == ["old"]   # 2 MiB left
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["new", "older_but_running"]
    assert cluster.prune_weights_cache(keep={"older_but_running", "new"}, limit_mb=0) == []   # never a kept one
