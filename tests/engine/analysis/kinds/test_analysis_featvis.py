"""Lucent feature visualisation as a stored analysis (``featvis``): request round trip and
validation, the stored images equal a direct ``engine.featvis.visualise`` call, a stopped render
stores nothing, and ``python -m engine featvis`` queues both parts and answers them from the store."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from analysis_helpers import assert_stopping_stores_nothing, cli
from engine.analysis import ANALYSES, ModelRef, ResultStore, get_analysis, run_analysis
from engine.analysis.kinds.featvis import FeatVisRequest
from engine.errors import InvalidParameterError
from engine.jobs import JobStore, run_worker

pytestmark = pytest.mark.usefixtures("no_autostart")

LAYER = "net.block2"


def vis_request(paths, **kw) -> FeatVisRequest:
    return FeatVisRequest(**{"model": ModelRef.of(paths["standard"]), "layer": LAYER,
                             "targets": (("unit", 1), ("direction", 3)), "steps": 4, "seed": 5, **kw}).validate()


def test_request_round_trips_through_json_and_bounds_match_the_renderer(tiny_checkpoints):
    from engine.analysis import fields as requests
    from engine.featvis import config

    request = vis_request(tiny_checkpoints, position=(1, 2), size=(16, 24), lr=0.1, fft=False, sd=0.05)
    back = FeatVisRequest.from_json(request.to_json())
    assert back == request and back.key() == request.key() and back.position == (1, 2) and back.size == (16, 24)
    assert ANALYSES["featvis"].request is FeatVisRequest and ANALYSES["featvis"].page == "features"
    assert request.key() != vis_request(tiny_checkpoints, position=(1, 2), size=(16, 24), lr=0.1, fft=False,
                                        sd=0.05, seed=6).key()
    assert (requests.MAX_TARGETS, requests.MAX_VIS_STEPS, requests.MAX_VIS_SIDE, requests.MAX_VIS_PIXELS) == \
        (config.MAX_VIS_TARGETS, config.MAX_VIS_STEPS, config.MAX_VIS_SIDE, config.MAX_VIS_PIXELS)


@pytest.mark.parametrize("field, value, message", [
    ("steps", 0, "steps must be an integer in [1, 10000]"),
    ("steps", 10_001, "steps must be an integer"),
    ("lr", 0.0, "lr must be a number in (0, 10]"),
    ("lr", math.nan, "lr must be a number"),
    ("lr", True, "lr must be a number"),
    ("seed", -1, "seed must be an integer"),
    ("sd", 2.0, "sd must be a number in (0, 1]"),
    ("size", (0, 8), "image side must be an integer in [1, 1024]"),
    ("size", (8,), "size must be (height, width)"),
    ("fft", "yes", "fft must be true or false"),
    ("transforms", None, "transforms must be true or false"),
    ("targets", (), "targets must list one to 64"),
    ("targets", (("pixel", 1),), "a target is"),
    ("targets", (("unit", -1),), "target unit must be an integer"),
    ("position", (1,), "position must be (y, x)"),
    ("layer", "", "layer must be a layer name"),
])
def test_request_refuses_bad_values(tiny_checkpoints, field, value, message):
    good = vis_request(tiny_checkpoints).to_dict()
    with pytest.raises(InvalidParameterError) as info:
        FeatVisRequest.from_dict({**good, field: value})
    assert message in str(info.value)


def test_request_refuses_too_many_pixels_and_unknown_fields(tiny_checkpoints):
    good = vis_request(tiny_checkpoints).to_dict()
    many = tuple(("unit", i) for i in range(64))
    with pytest.raises(InvalidParameterError, match="the limit is 16,777,216"):
        FeatVisRequest.from_dict({**good, "targets": many, "size": (1024, 1024)})
    FeatVisRequest.from_dict({**good, "targets": many, "size": (512, 512)})  # exactly the limit
    with pytest.raises(InvalidParameterError, match="unknown featvis request field"):
        FeatVisRequest.from_dict({**good, "colour": "red"})


def test_queueing_checks_the_pixels_at_the_models_input_size(tiny_checkpoints, monkeypatch):
    from types import SimpleNamespace

    from engine.analysis import ModelRef, preflight

    many = vis_request(tiny_checkpoints, targets=tuple(("unit", i) for i in range(64)))
    preflight(many)  # 64 images of 32×32: fine
    monkeypatch.setattr(ModelRef, "card", lambda self: SimpleNamespace(input_shape=(3, 1024, 1024)))
    with pytest.raises(InvalidParameterError, match="64 targets of 1024×1024 pixels"):
        preflight(many)
    preflight(vis_request(tiny_checkpoints, targets=tuple(("unit", i) for i in range(64)), size=(64, 64)))


def direct_call(paths, request):
    """``engine.featvis.visualise`` on the checkpoint, with the request's targets and settings."""
    from engine import featvis
    from engine.checkpoints import load
    from engine.models import list_layers

    model = load(paths["standard"]).model
    dim = next(info.output_shape[0] for info in list_layers(model) if info.name == LAYER)
    targets = [featvis.unit_target(1, request.position),
               featvis.direction_target(dim, seed=3, position=request.position)]
    shape = None if request.size is None else (3, *request.size)
    return featvis.visualise(model, LAYER, targets, featvis.VisConfig(**request.config()), input_shape=shape)


@pytest.mark.parametrize("options", [{}, {"size": (16, 24), "position": (1, 2), "lr": 0.2}])
def test_stored_images_equal_the_direct_call_and_are_reused(tiny_checkpoints, options):
    request = vis_request(tiny_checkpoints, **options)
    first = run_analysis(request)
    again = run_analysis(FeatVisRequest.from_json(request.to_json()))
    assert first.cached is False and again.cached is True and again.key == first.key
    assert first.arrays["images"].dtype == np.float16 and ResultStore().exists(first.key)
    direct = direct_call(tiny_checkpoints, request)
    stored = again.value()
    height, width = options.get("size", (32, 32))
    assert stored.images.shape == direct.images.shape == (2, height, width, 3)
    assert stored.images.dtype == np.float32 and stored.steps_done == 4 and not stored.stopped
    np.testing.assert_allclose(stored.images, direct.images, rtol=0, atol=5e-4)  # float16 storage
    np.testing.assert_array_equal(stored.trajectories, direct.trajectories)
    assert first.meta["labels"] == ["unit 1" + (" at (1, 2)" if "position" in options else ""),
                                    "random direction (seed 3)"]

    report = get_analysis("featvis").report(again)
    json.dumps(report, allow_nan=False)
    assert [t["image_shape"] for t in report["targets"]] == [[height, width, 3]] * 2
    assert [t["objective_final"] for t in report["targets"]] == pytest.approx(direct.trajectories[-1].tolist())
    assert report["config"] == request.config() and report["steps_done"] == 4
    rows = get_analysis("featvis").rows(again)
    assert len(rows) == 2 * 4 and rows[-1] == {"target": "random direction (seed 3)", "key": report["targets"][1]["key"],
                                               "step": 4, "objective": pytest.approx(float(direct.trajectories[-1, 1]))}


def test_a_stopped_render_stores_nothing(tiny_checkpoints):
    assert_stopping_stores_nothing(vis_request(tiny_checkpoints), polls=2)


def test_the_cost_estimate_counts_steps_targets_and_pixels(tiny_checkpoints):
    from engine.analysis.cost import GRADIENT_STEP, estimate
    from engine.checkpoints import load

    loaded = [load(tiny_checkpoints["standard"])]
    small = estimate(vis_request(tiny_checkpoints), loaded)                 # 4 steps at the model's 32×32
    assert small.passes > GRADIENT_STEP * 4 and "× 2 images" in small.how  # the model's passes and lucent's work
    longer = estimate(vis_request(tiny_checkpoints, steps=8), loaded)
    assert longer.passes == pytest.approx(small.passes * 2)                # linear in steps
    bigger = estimate(vis_request(tiny_checkpoints, steps=8, size=(64, 64)), loaded)
    assert longer.passes * 1.5 < bigger.passes < longer.passes * 4         # growing with the pixels


def featvis_args(paths, out, *extra) -> list:
    return ["featvis", "--checkpoint", paths["standard"], "--layer", LAYER, "--direction-seed", 3, "--dataset",
            "shapes", "--top-k", 3, "--n", 20, "--steps", 4, "--seed", 5, "--out", out, "--json", *extra]


def test_cli_background_queues_both_parts_and_the_foreground_reads_them_back(tiny_checkpoints, tmp_path, capsys):
    rc, queued, err = cli(featvis_args(tiny_checkpoints, tmp_path / "bg", "--background"), capsys)
    assert rc == 0, err
    assert queued["jobs"] == [queued["top_k"]["job"], queued["visualisation"]["job"]]
    assert (queued["top_k"]["kind"], queued["visualisation"]["kind"]) == ("featvis_topk", "featvis")
    assert not (tmp_path / "bg").exists()  # nothing computed or written here
    assert run_worker(JobStore(), once=True, lane="analysis") == 2
    vis_job = queued["visualisation"]["job"]
    rc, waited, _ = cli(["jobs", "wait", vis_job, "--json"], capsys)
    assert rc == 0 and waited["status"] == "done"
    rc, stored, _ = cli(["jobs", "result", vis_job, "--json"], capsys)
    assert rc == 0 and stored["result"] == waited["result"] and stored["targets"][0]["label"] == "random direction (seed 3)"
    assert cli(["jobs", "result", vis_job, "--out", tmp_path / "vis.csv"], capsys)[0] == 0
    assert len((tmp_path / "vis.csv").read_text().splitlines()) == 1 + 4

    rc, report, err = cli(featvis_args(tiny_checkpoints, tmp_path / "fg"), capsys)
    assert rc == 0, err
    part = report["visualisation"]
    assert report["top_k"]["cached"] is True and part["cached"] is True and part["result"] == waited["result"]
    assert part["objective_last"] == pytest.approx(stored["targets"][0]["objective_final"])
    assert len(part["trajectory"]) == 4 and part["config"]["seed"] == 5
    assert json.loads((tmp_path / "fg" / "featvis.json").read_text()) == report
    assert (tmp_path / "fg" / "vis.png").read_bytes()[:4] == b"\x89PNG"

    rc, fresh, err = cli(featvis_args(tiny_checkpoints, tmp_path / "fg", "--no-cache"), capsys)
    assert rc == 0, err
    assert fresh["top_k"]["cached"] is False and fresh["visualisation"]["cached"] is False
    assert fresh["visualisation"]["trajectory"] == part["trajectory"]  # the same seed renders the same images

    rc, _, err = cli(featvis_args(tiny_checkpoints, tmp_path / "none", "--background", "--steps", 0, "--top-k", 0),
                     capsys)
    assert rc == 2 and "nothing to queue" in err
