"""engine.analysis: typed requests, the result store, analysis jobs (kill -9, cancel), the CLI,
and flat memory in the number of images."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.analysis import ANALYSES, ModelRef, ResultStore, run_analysis
from engine.analysis.kinds.cka import CKARequest
from engine.analysis.kinds.ood import OODRequest
from engine.analysis.kinds.topk import TopKRequest
from engine.jobs import submit
from engine.errors import CheckpointError, InvalidParameterError
from engine.jobs import JobStore, run_job, run_worker
from engine.jobs.store import SCHEMA_VERSION
from analysis_helpers import assert_stopping_stores_nothing

REPO = Path(__file__).resolve().parents[3]


pytestmark = pytest.mark.usefixtures("no_autostart")


def refs(tiny_checkpoints) -> tuple[ModelRef, ModelRef]:
    return ModelRef.of(tiny_checkpoints["standard"]), ModelRef.of(tiny_checkpoints["robust"])


def cka_request(tiny_checkpoints, **kw) -> CKARequest:
    a, b = refs(tiny_checkpoints)
    return CKARequest(**{"a": a, "b": b, "dataset": "shapes", "n": 24, "batch_size": 8, **kw}).validate()


# ------------------------------------------------------------------ requests
def test_requests_round_trip_through_json(tiny_checkpoints):
    a, b = refs(tiny_checkpoints)
    requests = [
        CKARequest(a=a, b=b, dataset="shapes", n=40, layers_a=("net.block1", "net.fc"), inputs="adv", eps=0.01, steps=3),
        OODRequest(models=(a, b), dataset="shapes", n=12, distortions=("edges",), severities=(1, 3)),
        TopKRequest(model=a, layer="net.block2", targets=(("unit", 1), ("direction", 7)), dataset="shapes",
                    position=(1, 2), n=30, k=4),
    ]
    for request in requests:
        back = type(request).from_json(request.to_json())
        assert back == request and back.key() == request.key()
        assert json.loads(request.to_json())[type(request).MODEL_FIELDS[0]]  # models are plain JSON
        assert ANALYSES[request.kind].request is type(request)
    assert len({r.key() for r in requests}) == 3


def test_requests_refuse_bad_values_and_unknown_fields(tiny_checkpoints):
    a, b = refs(tiny_checkpoints)
    good = CKARequest(a=a, b=b, dataset="shapes").to_dict()
    with pytest.raises(InvalidParameterError, match="unknown cka request field"):
        CKARequest.from_dict({**good, "colour": "red"})
    for field, value in [("n", 3), ("batch_size", 2), ("kernel", "cubic"), ("inputs", "noisy"), ("eps", -1.0),
                         ("layers_a", []), ("craft_on", "c")]:
        with pytest.raises(InvalidParameterError):
            CKARequest.from_dict({**good, field: value})
    with pytest.raises(InvalidParameterError, match="sha256"):
        CKARequest.from_dict({**good, "a": {**good["a"], "sha256": "abc"}})
    with pytest.raises(InvalidParameterError, match="severity"):
        OODRequest(models=(a,), dataset="shapes", severities=(0,)).validate()
    with pytest.raises(InvalidParameterError, match="k must be"):
        TopKRequest(model=a, layer="net.fc", targets=(("unit", 0),), dataset="shapes", n=5, k=6).validate()


def test_image_suffixes_are_torchvisions():
    """The folder datasets' image suffixes (torch-free) are torchvision's ``IMG_EXTENSIONS``."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    from engine.data.imagefolder import IMAGE_SUFFIXES

    assert IMAGE_SUFFIXES == tuple(IMG_EXTENSIONS)


def test_building_a_request_and_reading_a_result_import_no_torch(tiny_checkpoints):
    code = ("import sys, engine.analysis as a, engine.cli.cka, engine.cli.jobs, engine.cli.ood, engine.cli.featvis; "
            f"r = a.ModelRef.of({str(tiny_checkpoints['standard'])!r}); a.ResultStore().list(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ result store
def test_same_request_hits_the_store_and_new_weights_miss_it(tiny_checkpoints):
    request = cka_request(tiny_checkpoints)
    first = run_analysis(request)
    assert not first.cached and ResultStore().exists(first.key)
    again = run_analysis(CKARequest.from_json(request.to_json()))
    assert again.cached and again.key == first.key
    for name in ("within_a", "within_b", "across"):
        np.testing.assert_array_equal(again.arrays[name], first.arrays[name])
    comparison = again.value()
    np.testing.assert_allclose(np.diag(comparison.within_a.matrix), 1.0, atol=1e-6)

    # the same weights under another path keep the key (the sha256 names the model)
    moved = request.a.__class__(str(request.a.path).replace("tiny_standard", "elsewhere"), request.a.sha256)
    assert CKARequest(**{**request.__dict__, "a": moved}).key() == request.key()
    # --no-cache recomputes and replaces
    assert not run_analysis(request, use_cache=False).cached

    # new weights at the same path: a new sha256, a new key, nothing stored for it yet
    from engine.checkpoints import load, save_checkpoint

    loaded = load(tiny_checkpoints["standard"])
    with torch.no_grad():
        for p in loaded.model.parameters():
            p.add_(0.5)
    save_checkpoint(loaded.model, loaded.card, Path(tiny_checkpoints["standard"]).with_suffix(""))
    changed = cka_request(tiny_checkpoints)
    assert changed.a.sha256 != request.a.sha256 and changed.key() != request.key()
    fresh = run_analysis(changed)
    assert not fresh.cached
    assert not np.allclose(fresh.arrays["across"], first.arrays["across"])
    # the old request still answers from the store, but cannot be recomputed from the new file
    assert run_analysis(request).cached
    with pytest.raises(CheckpointError, match="other weights"):
        run_analysis(request, use_cache=False)


def test_a_damaged_result_is_reported_and_recomputed(tiny_checkpoints):
    store = ResultStore()
    request = cka_request(tiny_checkpoints)
    first = run_analysis(request)
    arrays = store.path(first.key) / "arrays.npz"
    data = bytearray(arrays.read_bytes())
    data[len(data) // 2] ^= 0xFF
    arrays.write_bytes(bytes(data))
    again = run_analysis(request)
    assert not again.cached and any("damaged" in note for note in again.notes)
    np.testing.assert_allclose(again.arrays["across"], first.arrays["across"])
    assert any(p.name.startswith(".corrupt-") for p in store.root.iterdir())
    assert run_analysis(request).cached

    (store.path(first.key) / "result.json").write_text("{ not json")
    [entry] = store.list()
    assert entry.error and "not valid JSON" in entry.error  # listed as damaged, never raised
    assert not run_analysis(request).cached


def test_stop_stores_nothing_and_leaves_no_partial_state(tiny_checkpoints):
    assert_stopping_stores_nothing(cka_request(tiny_checkpoints, n=200, batch_size=4), polls=3)


def test_topk_and_ood_results_match_the_direct_engine_calls(tiny_checkpoints):
    from engine import data as edata
    from engine import featvis
    from engine.analysis.kinds.topk import picked_images
    from engine.checkpoints import load

    a, b = refs(tiny_checkpoints)
    request = TopKRequest(model=a, layer="net.block2", targets=(("unit", 1), ("direction", 3)), dataset="shapes",
                          n=60, k=5, batch_size=7)
    result = run_analysis(request)
    loaded = load(tiny_checkpoints["standard"])
    images, _ = edata.take(edata.load_dataset("shapes", split="test", n=60), 60, seed=0)
    direct = featvis.top_k_many(loaded.model, "net.block2", images,
                                [featvis.unit_target(1), featvis.direction_target(result.meta["dim"], seed=3)], 5)
    for got, want in zip(result.value().top, direct):
        np.testing.assert_array_equal(got.indices, want.indices)
        np.testing.assert_allclose(got.scores, want.scores, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(picked_images(result)[0], images[direct[0].indices])

    ood = run_analysis(OODRequest(models=(a, b), dataset="shapes", n=12, distortions=("edges",), severities=(2,)))
    report = ood.value(names={"tiny_standard": "A"})
    assert set(report.table["model"]) == {"A", "tiny_robust"} and (report.table["total"] == 12).all()
    assert set(report.shape_bias) == {"A", "tiny_robust"}
    assert run_analysis(ood.request).cached


# ------------------------------------------------------------------ jobs
def test_old_job_store_is_migrated_and_keeps_its_jobs(tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    con = sqlite3.connect(root / "jobs.sqlite")
    con.executescript("""
        CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, config TEXT NOT NULL,
            status TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL, heartbeat REAL,
            worker_pid INTEGER, attempts INTEGER NOT NULL DEFAULT 0, cancel_requested INTEGER NOT NULL DEFAULT 0,
            error TEXT, checkpoint TEXT, best_checkpoint TEXT, submitter TEXT);
        CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id INTEGER NOT NULL, time REAL NOT NULL,
            kind TEXT NOT NULL, epoch INTEGER, epochs INTEGER, batch INTEGER, batches INTEGER, eta_s REAL, metrics TEXT);
    """)
    con.execute("INSERT INTO jobs (name, config, status, created) VALUES (?, ?, 'done', 1.0)",
                ("old", json.dumps({"dataset": "shapes", "arch": "small_cnn", "epochs": 1, "name": "old"})))
    con.commit()
    con.close()
    store = JobStore(root)
    [job] = store.list()
    assert job.kind == "train" and not job.is_analysis and job.config.epochs == 1 and job.result_key is None
    with sqlite3.connect(root / "jobs.sqlite") as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    JobStore(root)  # opening a migrated store again is a no-op


def test_analyses_are_claimed_before_training_and_a_stored_result_is_a_done_job(tiny_checkpoints):
    from engine.training import TrainConfig

    store = JobStore()
    train = store.submit(TrainConfig(dataset="shapes", arch="small_cnn", epochs=1, device="cpu"))
    request = cka_request(tiny_checkpoints)
    job = submit(request, jobs=store)
    assert job.status == "queued" and job.kind == "cka"
    assert store.claim(lane="analysis").id == job.id
    assert store.claim(lane="analysis") is None and store.claim(lane="all").id == train.id
    assert run_job(store, store.get(job.id)) == "done"
    assert store.get(job.id).result_key == request.key()
    again = submit(request, jobs=store)
    assert again.status == "done" and again.result_key == request.key()


def test_cancelled_analysis_job_leaves_no_result(tiny_checkpoints, monkeypatch):
    import engine.jobs.worker as worker

    monkeypatch.setattr(worker, "HEARTBEAT_S", 0.01)
    store = JobStore()
    request = cka_request(tiny_checkpoints, n=2000, batch_size=4)
    job = submit(request, jobs=store)
    claimed = store.claim(lane="analysis")
    store.cancel(job.id)
    assert run_job(store, claimed) == "cancelled"
    assert store.get(job.id).status == "cancelled" and store.get(job.id).result_key is None
    assert ResultStore().list() == [] and not ResultStore().partial_dir(request.key()).exists()


@pytest.mark.timeout(300)
def test_analysis_job_survives_kill_9_and_resumes_from_its_saved_sums(tiny_checkpoints):
    store = JobStore()
    request = cka_request(tiny_checkpoints, n=2000, batch_size=4)
    job = submit(request, jobs=store)
    state = ResultStore().partial_dir(request.key()) / "state.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "engine.jobs", "--once", "--lane", "analysis", "--runs",
                             str(store.root)], env=env, start_new_session=True)
    try:
        deadline = time.time() + 180
        while not state.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert state.exists(), "the worker never saved partial state"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    assert store.get(job.id).status == "running" and not ResultStore().exists(request.key())
    assert run_worker(store, once=True, lane="analysis") == 1
    done = store.get(job.id)
    assert done.status == "done" and done.attempts == 2 and done.result_key == request.key()
    resumed = run_analysis(request)
    assert resumed.cached and resumed.meta["resumed_at_images"] > 0
    fresh = run_analysis(request, use_cache=False, resume=False, store=ResultStore(store.root / "other"))
    np.testing.assert_allclose(resumed.arrays["across"], fresh.arrays["across"], rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------ CLI
def test_cli_background_wait_result_and_cached_foreground(tiny_checkpoints, capsys):
    from engine.cli import main

    a, b = str(tiny_checkpoints["standard"]), str(tiny_checkpoints["robust"])
    args = ["cka", "--a", a, "--b", b, "--dataset", "shapes", "--n", "16", "--batch-size", "8", "--json"]
    assert main(args + ["--background"]) == 0
    job_id = json.loads(capsys.readouterr().out)["job"]
    assert run_worker(JobStore(), once=True, lane="analysis") == 1
    assert main(["jobs", "wait", str(job_id), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["jobs", "result", str(job_id), "--json"]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["cached"] is True and stored["n"] == 16
    assert main(args) == 0
    foreground = json.loads(capsys.readouterr().out)
    assert foreground["cached"] is True and foreground["across"] == stored["across"]
    assert main(args + ["--no-cache"]) == 0
    assert json.loads(capsys.readouterr().out)["cached"] is False

    bad = submit(cka_request(tiny_checkpoints, layers_a=("net.nope",)), jobs=JobStore())
    run_worker(JobStore(), once=True, lane="analysis")
    assert main(["jobs", "wait", str(bad.id), "--quiet"]) == 1
    assert main(["jobs", "result", str(bad.id), "--json"]) == 2
    assert "failed" in capsys.readouterr().err


def test_cli_cached_answer_is_fast(tiny_checkpoints):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    a, b = str(tiny_checkpoints["standard"]), str(tiny_checkpoints["robust"])
    cmd = [sys.executable, "-m", "engine", "cka", "--a", a, "--b", b, "--dataset", "shapes", "--n", "8",
           "--batch-size", "4", "--json"]
    first = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    start = time.perf_counter()
    second = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    assert second.returncode == 0 and json.loads(second.stdout)["cached"] is True
    assert seconds < 3.0, f"a stored result took {seconds:.2f} s to print"


# ------------------------------------------------------------------ memory
_RSS_SCRIPT = """
import json, resource, sys, torch
torch.set_num_threads(1)
from engine.analysis.kinds.cka import CKARequest
from engine.analysis import ModelRef, run_analysis
from engine.analysis.kinds.topk import TopKRequest
a, b, n, kind, dataset = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
def request(n):
    if kind == "cka":
        return CKARequest(a=ModelRef.of(a), b=ModelRef.of(b), dataset=dataset, n=n, batch_size=25)
    return TopKRequest(model=ModelRef.of(a), layer="net.block1", targets=(("unit", 0), ("direction", 1)),
                       dataset=dataset, n=n, k=5, batch_size=25)
for _ in range(2):  # warm-up: imports, data, models, allocator pools (the second run still grows them)
    run_analysis(request(100), use_cache=False)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
run_analysis(request(n), use_cache=False)
print(json.dumps({"base_kb": base, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


@pytest.mark.timeout(600)
@pytest.mark.parametrize("kind", ["cka", "topk"])
def test_peak_memory_does_not_grow_with_the_number_of_images(kind, tmp_path, request):
    """4N images must not cost more memory than N: holding every image's activations would need
    ~60 KB × 1,200 more images × 2 models ≈ 140 MB more for CKA on ``shapes``. Top-k runs on MNIST,
    whose test split has the same size for every N (``shapes`` is generated at size N for top-k,
    as the CLI does, so its data itself would grow)."""
    from engine.checkpoints import make_card, save_checkpoint
    from engine.data import get_spec
    from engine.models import build_model

    dataset = "shapes" if kind == "cka" else "mnist"
    env = dict(os.environ, PYTHONPATH=str(REPO), ROBUSTSCOPE_RUNS=str(tmp_path / "runs"))
    if dataset == "mnist":
        env["ROBUSTSCOPE_DATA"] = str(request.getfixturevalue("real_data_root"))
    spec = get_spec(dataset)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=8, hidden=32)
        paths.append(str(save_checkpoint(model.eval(), make_card(model, dataset, name=f"m{seed}"),
                                         tmp_path / f"m{seed}")))
    peaks = {}
    for n in (400, 1600):
        out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, *paths, str(n), kind, dataset], env=env, cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        numbers = json.loads(out.stdout.strip().splitlines()[-1])
        peaks[n] = (numbers["peak_kb"] - numbers["base_kb"]) / 1024
    assert peaks[1600] - peaks[400] < 8, f"peak MB above a warmed-up run of 100 images: {peaks}"


def test_forward_pieces_and_resumed_state_give_the_same_maps(tiny_checkpoints):
    """The streamed CKA's options change memory, never the numbers: forward pieces (centred in
    place) and a run resumed from a saved state agree with one plain pass."""
    from engine.checkpoints import load
    from engine.data import load_dataset
    from engine.similarity import compare_models

    a, b = (load(tiny_checkpoints[k]).model for k in ("standard", "robust"))
    data = load_dataset("shapes", split="test")
    plain = compare_models(a, b, data, n=40, batch_size=10)
    pieces = compare_models(a, b, data, n=40, batch_size=10, forward_batch=3)
    saved = []
    compare_models(a, b, data, n=20, batch_size=10, save_state=saved.append)   # the first two batches
    resumed = compare_models(a, b, data, n=40, batch_size=10, forward_batch=4, state=saved[-1])
    for other in (pieces, resumed):
        np.testing.assert_allclose(other.across.matrix, plain.across.matrix, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(other.within_a.matrix, plain.within_a.matrix, rtol=1e-5, atol=1e-6)
    assert saved[-1]["batches"] == 2 and resumed.within_a.n == 40


def test_saliency_grid_is_stored_and_decodes_to_the_same_cells(tiny_checkpoints):
    from engine.analysis.kinds.saliency import SaliencyGridRequest
    from engine.attribution import attribution_grid
    from engine.checkpoints import load
    from engine.data import load_dataset

    a, b = refs(tiny_checkpoints)
    request = SaliencyGridRequest(models=(a, b), dataset="shapes", index=3,
                                  methods=("saliency", "integrated_gradients"),
                                  params=(("integrated_gradients", "steps", 8),))
    assert SaliencyGridRequest.from_json(request.to_json()) == request
    result = run_analysis(request)
    cells = run_analysis(request).value()
    image, _ = load_dataset("shapes", split="test")[3]
    models = {"tiny_standard": load(tiny_checkpoints["standard"]).model,
              "tiny_robust": load(tiny_checkpoints["robust"]).model}
    direct = attribution_grid(models, image, request.method_params())
    assert not result.cached and [(c.model, c.method) for c in cells] == [(c.model, c.method) for c in direct]
    for got, want in zip(cells, direct):
        np.testing.assert_allclose(got.attribution.maps, want.attribution.maps, rtol=1e-4, atol=1e-6)
        assert got.predicted == want.predicted and got.attribution.params == want.attribution.params
    with pytest.raises(InvalidParameterError, match="not chosen"):
        SaliencyGridRequest(models=(a,), dataset="shapes", params=(("smoothgrad", "n_samples", 4),)).validate()


def test_top_level_help_lists_every_command_without_importing_them():
    code = ("import io, sys, contextlib; from engine.cli import main, build_parser\n"
            "out = io.StringIO()\n"
            "with contextlib.redirect_stdout(out):\n"
            "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
            "quick, heavy = out.getvalue(), 'torch' in sys.modules\n"
            "full = io.StringIO(); build_parser().print_help(full)\n"
            "print(heavy, quick == full.getvalue() and 'cka' in quick and 'jobs' in quick)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["False", "True"], out.stdout


def test_concurrent_writers_of_one_result_leave_one_readable_entry(tiny_checkpoints):
    import threading

    store = ResultStore()
    result = run_analysis(cka_request(tiny_checkpoints))
    errors = []

    def write_many():
        try:
            for _ in range(20):
                store.save(result)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write_many) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    np.testing.assert_array_equal(store.load(result.key).arrays["across"], result.arrays["across"])
    assert [e.key for e in store.list()] == [result.key]
    assert not [p for p in store.root.iterdir() if p.name.startswith(".tmp-")]
