"""Fuzz: any model card JSON gives a loaded model or a clear RobustScopeError — never another
exception, never runaway memory, never a write to the checkpoints folder."""
from __future__ import annotations

import json
import resource

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import checkpoints as ckpt
from engine.checkpoints import ModelCard
from engine.errors import CheckpointError, RobustScopeError
from engine.models import build_model

FIELDS = ("arch", "arch_kwargs", "num_classes", "input_shape", "mean", "std", "dual_bn", "class_names",
          "training", "metrics", "name", "weights_sha256", "format", "format_version", "dataset", "source")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**12), max_value=10**12)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)
plausible = {
    "num_classes": st.integers(min_value=-5, max_value=10**10),
    "input_shape": st.lists(st.integers(min_value=-2, max_value=10**6), max_size=4),
    "arch_kwargs": st.dictionaries(st.sampled_from(["width", "hidden", "depth", "bogus"]),
                                   st.integers(min_value=-10, max_value=10**9), max_size=3),
    "mean": st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=4),
    "arch": st.sampled_from(["small_cnn", "cifar_resnet", "nope", ""]),
}


def _base() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = build_model("small_cnn", 3, (1, 16, 16), [0.5], [0.25], width=4, hidden=8).eval()
    return model, ckpt.make_card(model, "tiny", name="f").to_dict()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    model, card = _base()
    path = ckpt.save_checkpoint(model, card, folder / "f")
    return folder, path


def _state(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_card_loads_or_fails_cleanly(saved, data):
    folder, path = saved
    _, card = _base()
    card.pop("weights_sha256", None)
    for field in data.draw(st.lists(st.sampled_from(FIELDS), max_size=4, unique=True)):
        strategy = plausible.get(field, json_values)
        card[field] = data.draw(strategy if data.draw(st.booleans()) else json_values)
    if data.draw(st.booleans()):
        card.pop(data.draw(st.sampled_from(FIELDS)), None)
    before_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    path.with_suffix(".json").write_text(json.dumps(card))
    before = _state(folder)
    try:
        loaded = ckpt.load(path)
    except RobustScopeError as exc:
        assert str(exc)
    else:
        assert isinstance(loaded.card, ModelCard)
        assert loaded.model(torch.rand(1, *loaded.card.input_shape)).shape == (1, loaded.card.num_classes)
    assert _state(folder) == before, "loading must never write"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before_rss) / 1024
    assert grown_mb < 300, f"one card made the process grow by {grown_mb:.0f} MB"


@settings(max_examples=200, deadline=None)
@given(text=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_card_bytes_parse_or_raise_checkpoint_error(text):
    try:
        card = ModelCard.from_json(text, "fuzz.json")
    except CheckpointError:
        return
    assert card.to_dict()["format_version"] == 2
