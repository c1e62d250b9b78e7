"""Measured estimates: the probe, the kinds' cost models and the correction learnt from recorded runs."""
from __future__ import annotations

import json

import pytest

from engine.analysis import ModelRef, ResultStore, run_analysis
from engine.analysis import cost


def _request(paths, n=8):
    from engine.analysis.kinds.activations import ActivationsRequest

    return ActivationsRequest(models=(ModelRef.of(paths["standard"]),), dataset="shapes", n=n)


def test_a_computed_run_is_recorded_and_corrects_the_next_estimate(tiny_checkpoints):
    from engine.checkpoints import load

    loaded = [load(tiny_checkpoints["standard"])]
    store = ResultStore()
    request = _request(tiny_checkpoints)
    before = cost.estimate(request, loaded, results=store.root)
    assert cost.correction("layer_activations", "cpu", store.root) == (1.0, 0) and "run(s) here" not in before.how
    result = run_analysis(request, loaded=loaded, store=store)
    [row] = [json.loads(line) for line in (store.root / cost.TIMINGS_FILE).read_text().splitlines()]
    assert row["kind"] == "layer_activations" and row["device"] == "cpu" and row["actual_s"] == result.seconds
    raw = cost.raw_estimate(request, loaded).seconds
    assert row["raw_s"] == pytest.approx(raw)                              # the probe is cached: the same figure
    factor, runs = cost.correction("layer_activations", "cpu", store.root)
    assert runs == 1 and factor == pytest.approx(result.seconds / raw)
    after = cost.estimate(request, loaded, results=store.root)
    assert after.seconds == pytest.approx(raw * factor) and "the last 1 layer_activations run(s) here" in after.how
    run_analysis(request, loaded=loaded, store=store)                      # answered from the store: not a run
    assert len((store.root / cost.TIMINGS_FILE).read_text().splitlines()) == 1


def test_the_correction_is_a_bounded_median_of_the_kinds_recent_runs(tmp_path):
    rows = [{"kind": "cka", "device": "cpu", "raw_s": 1.0, "actual_s": a} for a in (2.0, 4.0, 8.0)]
    rows += [{"kind": "cka", "device": "cuda", "raw_s": 1.0, "actual_s": 100.0},
             {"kind": "ood", "device": "cpu", "raw_s": 1.0, "actual_s": 0.001}]
    text = "\n".join(json.dumps(r) for r in rows) + "\nnot json\n" + json.dumps({"kind": "cka"}) + "\n"
    (tmp_path / cost.TIMINGS_FILE).write_text(text)
    assert cost.correction("cka", "cpu", tmp_path) == (4.0, 3)
    assert cost.correction("cka", "cuda", tmp_path) == (cost.CORRECTION_RANGE[1], 1)
    assert cost.correction("ood", "cpu", tmp_path) == (cost.CORRECTION_RANGE[0], 1)
    assert cost.correction("units", "cpu", tmp_path) == (1.0, 0)
    many = [{"kind": "units", "device": "cpu", "raw_s": 1.0, "actual_s": 1.0}] * cost.HISTORY
    (tmp_path / cost.TIMINGS_FILE).write_text("\n".join(json.dumps(r) for r in
                                                       [{"kind": "units", "device": "cpu", "raw_s": 1.0, "actual_s": 9.0}] * 5 + many))
    assert cost.correction("units", "cpu", tmp_path) == (1.0, cost.HISTORY)  # only the latest HISTORY runs count


def test_the_probe_times_a_batch_once_per_model_and_device(tiny_checkpoints, monkeypatch):
    from engine.checkpoints import load

    model = load(tiny_checkpoints["standard"]).model
    calls = []
    real = cost._timed
    monkeypatch.setattr(cost, "_timed", lambda m, images: calls.append(images) or real(m, images))
    first = cost.seconds_per_image(model)
    assert cost.seconds_per_image(model) == first and first > 0
    assert calls in ([cost.PROBE_IMAGES], [cost.PROBE_IMAGES, cost.PROBE_BATCH])


def test_each_similarity_measure_learns_its_own_correction(tiny_checkpoints, tmp_path):
    """CKA and, say, Procrustes run different code: one's recorded times never correct the other's
    estimate (CKA keeps the ``cka`` runs recorded before other measures existed)."""
    from engine.analysis.kinds.cka import CKARequest
    from engine.checkpoints import load

    a, b = ModelRef.of(tiny_checkpoints["standard"]), ModelRef.of(tiny_checkpoints["robust"])
    plain = CKARequest(a=a, b=b, dataset="shapes", n=8)
    procrustes = CKARequest(a=a, b=b, dataset="shapes", n=8, measure="procrustes")
    assert (plain.cost_class(), procrustes.cost_class()) == ("cka", "cka:procrustes")
    assert _request(tiny_checkpoints).cost_class() == "layer_activations"
    rows = [{"kind": "cka:procrustes", "device": "cpu", "raw_s": 1.0, "actual_s": 30.0}]
    (tmp_path / cost.TIMINGS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = [load(tiny_checkpoints["standard"]), load(tiny_checkpoints["robust"])]
    assert "run(s) here" not in cost.estimate(plain, loaded, results=tmp_path).how
    corrected = cost.estimate(procrustes, loaded, results=tmp_path)
    assert "× 30 (the last 1 cka:procrustes run(s) here)" in corrected.how
    assert corrected.seconds == pytest.approx(30 * cost.raw_estimate(procrustes, loaded).seconds)

    store = ResultStore(tmp_path / "results")
    run_analysis(procrustes, loaded=loaded, store=store)                   # a computed run records its class
    [row] = [json.loads(line) for line in (store.root / cost.TIMINGS_FILE).read_text().splitlines()]
    assert row["kind"] == "cka:procrustes"
