"""AdvProp's branches as a stored analysis (``advprop``): request round trip and validation, the
stored table equals ``compare_branches`` called directly, new weights (of the AdvProp model or a
peer) miss the store, ``advprop`` answers from the store and in the background, and a stop stores
nothing."""
from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis_helpers import assert_stopping_stores_nothing, background_roundtrip, cli, without
from engine.analysis import ANALYSES, ModelRef, run_analysis
from engine.analysis.kinds.advprop import AdvPropRequest
from engine.jobs import submit
from engine.errors import InvalidParameterError
from engine.jobs import JobStore, run_worker
from factories import advprop_model

pytestmark = pytest.mark.usefixtures("no_autostart")

SETTINGS = {"n": 8, "steps": 2, "batch_size": 4}


def save_advprop(seed: int = 0, name: str = "tiny_advprop") -> Path:
    """A tiny seeded AdvProp checkpoint on ``shapes`` beside the ``tiny_checkpoints``."""
    from engine.checkpoints import make_card, save_checkpoint
    from engine.data import get_spec

    spec = get_spec("shapes")
    model = advprop_model(spec.num_classes, spec.input_shape, seed=seed)
    card = make_card(model, "shapes", name=name, training={"method": "advprop"})
    return save_checkpoint(model, card, Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"]) / name)


@pytest.fixture
def advprop(tiny_checkpoints) -> Path:
    return save_advprop()


def listing():
    from engine.checkpoints import list_checkpoints

    return list_checkpoints(os.environ["ROBUSTSCOPE_CHECKPOINTS"])


def advprop_request(path, **kw) -> AdvPropRequest:
    from engine.analysis.kinds.advprop import advprop_request as request_for

    return request_for(listing(), str(path), **{**SETTINGS, **kw})


def cli_args(path, *extra) -> list:
    return ["advprop", "--checkpoint", path, "--n", "8", "--steps", "2", "--batch-size", "4", *extra]


def direct_table(path, n: int = 8, steps: int = 2):
    """``compare_branches`` as ``advprop`` called it before it was a stored analysis, seeded."""
    import engine
    from engine import data as edata
    from engine.attacks import make_attack
    from engine.generalisation.advprop import compare_branches, comparison_entries

    models = {e.label: engine.load(e.path, bn_branch=e.branch).model for e in comparison_entries(listing(), str(path))}
    images, labels = edata.take(edata.load_dataset("shapes", split="test"), n)
    torch.manual_seed(0)  # the analysis seeds PGD's random starts with 0
    return compare_branches(models, images, labels, make_attack("pgd", "shapes", steps=steps), batch_size=4)


# ------------------------------------------------------------------ requests
def test_request_names_the_peers_round_trips_and_refuses_bad_values(advprop, tiny_checkpoints):
    request = advprop_request(advprop)
    assert [ref.name for ref in request.peers] == ["tiny_standard", "tiny_robust"]
    assert request.model.branch == "main" and request.dataset == "shapes"
    back = AdvPropRequest.from_json(request.to_json())
    assert back == request and back.key() == request.key()
    assert ANALYSES["advprop"].request is AdvPropRequest and ANALYSES["advprop"].page == "models"
    assert "tiny_advprop (main and aux BN) vs tiny_standard, tiny_robust" in request.describe()
    good = request.to_dict()
    peer = good["peers"][0]
    for field, value in [("model", {**good["model"], "branch": "aux"}), ("peers", [peer, peer, peer]),
                         ("n", 0), ("steps", 0), ("eps", -0.1), ("severity", 6), ("severity", True),
                         ("batch_size", 0), ("dataset", ""), ("colour", "red")]:
        with pytest.raises(InvalidParameterError):
            AdvPropRequest.from_dict({**good, field: value})
    with pytest.raises(InvalidParameterError, match="not an AdvProp"):
        advprop_request(tiny_checkpoints["standard"])


def test_a_model_without_dual_bn_is_refused_before_a_job_is_queued(tiny_checkpoints):
    request = AdvPropRequest(model=ModelRef.of(tiny_checkpoints["standard"]), dataset="shapes", n=4)
    with pytest.raises(InvalidParameterError, match="not an AdvProp"):
        submit(request)
    assert JobStore().list() == []


# ------------------------------------------------------------------ the same numbers as the engine
def test_stored_table_equals_the_direct_engine_call(advprop):
    result = run_analysis(advprop_request(advprop))
    direct = direct_table(advprop)
    pd.testing.assert_frame_equal(result.value(), direct, check_exact=True)
    assert list(direct["model"]) == ["tiny_advprop (main BN)", "tiny_advprop (aux BN)", "tiny_standard", "tiny_robust"]
    body = ANALYSES["advprop"].report(result)
    assert body["rows"] == direct.to_dict(orient="records") and body["n"] == 8
    assert ANALYSES["advprop"].rows(result) == body["rows"]


def test_pgd_random_starts_are_seeded(advprop, monkeypatch):
    import engine.generalisation.advprop as module

    draws, compare = [], module.compare_branches

    def spy(*args, **kwargs):
        draws.append(torch.rand(1).item())  # what PGD's random start would draw first
        return compare(*args, **kwargs)

    monkeypatch.setattr(module, "compare_branches", spy)
    request = advprop_request(advprop, n=4)
    for seed in (1, 2):  # whatever the caller's RNG holds
        torch.manual_seed(seed)
        run_analysis(request, use_cache=False)
    assert len(draws) == 2 and draws[0] == draws[1]


def test_same_request_is_cached_and_new_weights_miss(advprop, tiny_checkpoints):
    first = run_analysis(advprop_request(advprop))
    again = run_analysis(AdvPropRequest.from_json(advprop_request(advprop).to_json()))
    assert first.cached is False and again.cached is True and again.key == first.key
    pd.testing.assert_frame_equal(again.value(), first.value(), check_exact=True)

    save_advprop(seed=5)  # the AdvProp checkpoint trained again under the same name
    other = run_analysis(advprop_request(advprop))
    assert other.cached is False and other.key != first.key

    from engine.checkpoints import make_card, read_card, save_checkpoint
    from engine.models import build_model

    robust = tiny_checkpoints["robust"]  # a peer trained again: same recipe, new weights
    card = read_card(robust.with_suffix(".json"))
    torch.manual_seed(9)
    model = build_model("small_cnn", card.num_classes, tuple(card.input_shape), card.mean, card.std, width=4, hidden=16)
    save_checkpoint(model.eval(), make_card(model, "shapes", name="tiny_robust", training=card.training.to_dict()),
                    robust.with_suffix(""))
    peer = run_analysis(advprop_request(advprop))
    assert peer.cached is False and len({peer.key, other.key, first.key}) == 3


def test_stopping_stores_nothing(advprop):
    assert_stopping_stores_nothing(advprop_request(advprop), polls=2)  # after the first model


# ------------------------------------------------------------------ the command
def test_cli_prints_the_table_and_json_and_answers_from_the_store(advprop, capsys):
    import engine

    rc, first, _ = cli(cli_args(advprop, "--json"), capsys)
    direct = direct_table(advprop)
    assert rc == 0 and first["cached"] is False
    before = {"checkpoint": str(engine.load(advprop).path), "dataset": "shapes", "n": 8,
              "rows": direct.to_dict(orient="records")}
    assert without(first, ("cached", "result")) == before
    rc, again, _ = cli(cli_args(advprop, "--json"), capsys)
    assert rc == 0 and again == {**first, "cached": True}
    from engine.cli import main

    assert main([str(a) for a in cli_args(advprop)]) == 0  # the text table, from the store
    assert capsys.readouterr().out == direct.to_string(index=False) + "\n"
    rc, _, err = cli(cli_args(advprop, "--n", "100000", "--json"), capsys)
    assert rc == 2 and "--n must be an integer in [1, 2000]" in err


def test_cli_background_then_jobs_wait_and_result(advprop, capsys):
    stored = background_roundtrip(cli_args(advprop), "advprop", capsys)
    assert stored["rows"] == direct_table(advprop).to_dict(orient="records")
