"""Jobs on a real local Ray cluster (issue 26): a head and a second node on this machine, one CPU
each (``ray.cluster_utils.Cluster``, stopped afterwards), and the dispatcher as a user starts it
(``python -m engine worker --ray ADDRESS``). Six analyses run on both nodes and equal the local
worker's results; a node killed mid-job hands its job to the other, which resumes; cancel stops a
remote job."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from analysis_helpers import refs
from engine.analysis import ResultStore, run_analysis
from engine.analysis.kinds.cka import CKARequest
from engine.jobs import JobStore, submit

ray = pytest.importorskip("ray", reason="the Ray backend's tests need ray (requirements-cluster.txt)")
REPO = Path(__file__).resolve().parents[3]
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_autostart")]


@pytest.fixture
def cluster(tmp_path, monkeypatch):
    """A head and a second node (one CPU each) whose workers see this test's folders."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("ROBUSTSCOPE_WEIGHTS_CACHE", str(tmp_path / "weights-cache"))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("ROBUSTSCOPE_DATA", str(tmp_path / "data"))   # each node's data root (a zoo test fills it)
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    second = made.add_node(num_cpus=1)
    try:
        yield made, second
    finally:
        made.shutdown()


def dispatcher(address: str, *extra: str) -> subprocess.Popen:
    """``python -m engine worker --ray ADDRESS --once`` on this test's runs folder."""
    return subprocess.Popen([sys.executable, "-m", "engine", "worker", "--ray", address, "--once", *extra],
                            cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@contextmanager
def dispatching(address: str):
    """A dispatcher for the block (killed at its end if it still runs, e.g. after a failure)."""
    proc = dispatcher(address)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)


def nodes_of(store: JobStore, job_id: int) -> list[str]:
    return [event.metrics["node_id"] for event in store.events(job_id, kind="node")]


def cka_request(paths, **kw) -> CKARequest:
    a, b = refs(paths)
    return CKARequest(**{"a": a, "b": b, "dataset": "shapes", "n": 24, "batch_size": 8, **kw})


def test_analyses_a_zoo_and_training_run_on_both_nodes_as_they_would_locally(cluster, tiny_checkpoints, tmp_path,
                                                                           monkeypatch, capsys):
    """One dispatcher run of what a lab queues: six CKAs (results equal to the local worker's), a
    three-model zoo evaluation (its leaderboard rows), a one-process training job and a two-process
    DDP job through Ray Train across both nodes (checkpoints published on the head). A local worker
    refuses a DDP job in one line."""
    import json

    from engine.checkpoints import load
    from engine.cli import main
    from engine.jobs import run_worker
    from factories import ZOO_NAMES, tiny_cifar, tiny_config, tiny_zoo

    made, second = cluster
    store = JobStore()
    requests = [cka_request(tiny_checkpoints, n=n) for n in (16, 20, 24, 28, 32, 36)]
    jobs = [submit(request, start_worker=False) for request in requests]
    tiny_cifar(Path(os.environ["ROBUSTSCOPE_DATA"]))   # the nodes' data root (set when the cluster started)
    tiny_zoo(monkeypatch, tmp_path / "models")
    assert main(["evaluate", "--zoo", "cifar10/Linf", "--names", *ZOO_NAMES, "--model-dir", str(tmp_path / "models"),
                 "--no-download", "--n", "4", "--attack", "autoattack", "--version", "custom", "--attacks", "apgd-ce",
                 "--steps", "3", "--background"]) == 0
    zoo_jobs = json.loads(capsys.readouterr().out)["jobs"]
    from engine.analysis.kinds.evaluate import EvaluateRequest

    no_data = submit(EvaluateRequest.make(model=str(tiny_checkpoints["standard"]), dataset="mnist", n=4),
                     start_worker=False)                         # the nodes' data root has no MNIST
    single = store.submit(tiny_config(name="single", epochs=1))
    ddp = store.submit(tiny_config(name="ddp", epochs=2, workers=2))
    proc = dispatcher(made.address)
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output

    done = [store.get(job.id) for job in jobs]
    assert [job.status for job in done] == ["done"] * 6, [(j.status, j.error) for j in done]
    used = {nodes_of(store, job.id)[-1] for job in done}
    assert len(used) == 2 and second.node_id in used            # both nodes ran analyses
    local = ResultStore(Path(os.environ["ROBUSTSCOPE_RUNS"]) / "local")
    for request, job in zip(requests, done):
        remote = ResultStore().load(job.result_key)
        here = run_analysis(request, store=local)
        assert remote.key == here.key and store.events(job.id, kind="batch")   # progress came back
        for name in ("within_a", "within_b", "across"):
            np.testing.assert_array_equal(remote.arrays[name], here.arrays[name])

    assert all(store.get(job["job"]).status == "done" for job in zoo_jobs), output
    assert main(["zoo", "--leaderboard", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(row["name"] for row in rows) == sorted(ZOO_NAMES)
    assert all(row["reported_autoattack_acc"] is not None and row["difference"] is not None for row in rows)

    for job, name in ((single, "single"), (ddp, "ddp")):
        finished = store.get(job.id)
        assert finished.status == "done", (name, finished.error, output)
        assert Path(finished.checkpoint).name == f"{name}.safetensors" and load(finished.checkpoint).card.name == name
    ranks = {(event.metrics["rank"], event.metrics["node_id"]) for event in store.events(ddp.id, kind="node")}
    assert {rank for rank, _ in ranks} == {0, 1} and len({node for _, node in ranks}) == 2   # both nodes trained
    failed = store.get(no_data.id)
    assert failed.status == "failed" and "dataset 'mnist' is not available" in failed.error   # the node's error
    assert "\n" not in failed.error and "Traceback" not in failed.error                       # in one line
    refused = store.submit(tiny_config(name="local-ddp", workers=2))
    assert run_worker(store, once=True) == 1
    assert store.get(refused.id).status == "failed" and "2 data-parallel workers" in store.get(refused.id).error


def _running_on(store: JobStore, job_id: int, node_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node_id in nodes_of(store, job_id) and store.events(job_id, kind="batch"):
            return
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not start on node {node_id[:8]}")


@pytest.fixture
def doomed(tmp_path, monkeypatch):
    """A head with no CPU for jobs and one worker node: every job starts on that node, which the
    test kills; ``add()`` then brings a fresh node for Ray's retry."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("ROBUSTSCOPE_WEIGHTS_CACHE", str(tmp_path / "weights-cache"))
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    first = made.add_node(num_cpus=1)
    try:
        yield made, first
    finally:
        made.shutdown()


def test_a_node_killed_mid_job_hands_it_to_another_node_which_resumes(doomed, tiny_checkpoints):
    made, first = doomed
    request = slow_atlas(tiny_checkpoints)
    job = submit(request, start_worker=False)
    store = JobStore()
    partial = ResultStore().partial_dir(request.key())
    with dispatching(made.address) as proc:
        _until(lambda: _rendered(request, partial) >= 2)
        assert _rendered(request, partial) >= 2 and store.get(job.id).status == "running", \
            "the head never held two rendered batches of the running job"
        made.remove_node(first)                                    # the node dies mid-job
        second = made.add_node(num_cpus=1)
        output, _ = proc.communicate(timeout=400)
    finished = store.get(job.id)
    assert finished.status == "done", (finished.error, output)
    assert nodes_of(store, job.id)[-1] == second.node_id            # retried on the new node
    result = ResultStore().load(finished.result_key)
    assert result.meta["resumed_renders"] >= 2, output              # from the head's state, not from scratch
    here = run_analysis(request, store=ResultStore(Path(os.environ["ROBUSTSCOPE_RUNS"]) / "local"))
    assert np.abs(result.arrays["0/images"].astype(int) - here.arrays["0/images"].astype(int)).max() <= 8


def test_a_training_job_whose_node_dies_resumes_from_its_finished_epochs(doomed):
    from factories import tiny_config

    made, first = doomed
    store = JobStore()
    job = store.submit(tiny_config(name="moved", method="pgd", steps=5, epochs=16,   # ~1 s an epoch
                                   dataset_options={"n": 512, "image_size": 16}))
    with dispatching(made.address) as proc:
        run = store.job_dir(job.id) / "run"
        deadline = time.monotonic() + 200
        while not list(run.glob("epoch-*")) and time.monotonic() < deadline:
            time.sleep(0.2)                                        # epoch 1 done and copied to the head
        assert list(run.glob("epoch-*")), f"no finished epoch reached the head: {store.get(job.id)}"
        made.remove_node(first)
        second = made.add_node(num_cpus=1)
        output, _ = proc.communicate(timeout=500)
    finished = store.get(job.id)
    assert finished.status == "done", (finished.error, output)
    assert nodes_of(store, job.id)[-1] == second.node_id
    assert store.events(job.id, kind="resumed")[0].metrics["from_epoch"] >= 1
    epochs = [event.epoch for event in store.events(job.id, kind="epoch")]
    assert max(epochs) == 16 and Path(finished.checkpoint).is_file()   # the history reached the head
    assert sorted(p.name for p in run.glob("epoch-*"))                # and the run folder, as for a local job


def slow_atlas(paths):
    """An atlas of one model rendered one unit per batch: about a minute of work, saved batch by batch."""
    from engine.analysis.kinds.atlas import AtlasRequest

    return AtlasRequest.make(models=(paths["standard"],), layers=("net.block1",), dataset="shapes", n=40, k=2,
                             directions=0, steps=400, render_batch=1)


def _until(condition, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.2)


def test_cancel_and_a_dispatcher_restart(cluster, tiny_checkpoints):
    """Cancel reaches a remote job (nothing stored); then a kill -9 of the head's dispatcher: Ray ends
    its tasks with it, the next dispatcher marks the job interrupted (its pid is gone), claims it
    again and resumes from the head's partial state — no job lost, none completed twice."""
    import signal

    made, _ = cluster
    store = JobStore()
    cancelled = submit(slow_atlas(tiny_checkpoints), start_worker=False)
    with dispatching(made.address) as proc:
        _until(lambda: store.events(cancelled.id, kind="batch"))
        store.cancel(cancelled.id)
        output, _ = proc.communicate(timeout=120)
    assert store.get(cancelled.id).status == "cancelled", output
    request = slow_atlas(tiny_checkpoints)
    assert ResultStore().list() == [] and not ResultStore().partial_dir(request.key()).exists()

    store.resume(cancelled.id)                                      # the same atlas again, then the head dies
    partial = ResultStore().partial_dir(request.key())
    with dispatching(made.address) as first:
        _until(lambda: (partial / "state.json").is_file() and _rendered(request, partial) >= 1)
        assert store.get(cancelled.id).status == "running", "the atlas finished before the dispatcher was killed"
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    assert _rendered(request, partial) >= 1                         # the head holds its batches
    second = dispatcher(made.address)
    output, _ = second.communicate(timeout=400)
    finished = store.get(cancelled.id)
    assert finished.status == "done" and finished.attempts == 2, (finished.error, output)
    statuses = [event.metrics.get("status") for event in store.events(cancelled.id, kind="status")]
    assert statuses.count("done") <= 1 and len(ResultStore().list()) == 1


def _rendered(request, partial: Path) -> int:
    """Units rendered in the head's copy of the job's partial state (0 before there is one)."""
    from engine.analysis.runner import read_state
    from engine.analysis.store import CorruptResult

    try:
        return int(read_state(partial, request, request.key())["0/units_rendered"])
    except (CorruptResult, KeyError):
        return 0
