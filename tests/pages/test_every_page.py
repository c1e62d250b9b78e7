"""Every page, on every shipped dataset's default pair, opened and each of its buttons pressed.

The shipped zoo (``checkpoints/``) is listed read-only; analyses are sent to the background (no
worker runs here, so they only queue) and training is only queued, so the walk checks that every
page and every main action renders — no exception, no traceback text — not the numbers.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import page

REPO = Path(__file__).resolve().parents[2]
ZOO = REPO / "checkpoints"
#: the shipped datasets and their default pair (from the zoo), when the dataset's files are here
PAIRS = {"shapes": ("shapes_standard", "shapes_pgd"), "mnist": ("mnist_standard", "mnist_pgd"),
         "fashion-mnist": ("fashion_standard", "fashion_pgd_linf_0p1")}
PAGE_NAMES = ("models", "attack_lab", "representations", "saliency", "features", "generalisation", "training",
              "results")

pytestmark = pytest.mark.usefixtures("no_autostart")


def _has_data(dataset: str) -> bool:
    from engine import data as edata

    return dataset == "shapes" or edata.dataset_available(dataset)


def _texts(at: AppTest) -> str:
    kinds = ("markdown", "info", "caption", "warning", "error", "exception", "code", "text")
    return " ".join(str(getattr(e, "value", "")) for kind in kinds for e in at.get(kind))


def _clean(at: AppTest, where: str) -> None:
    assert not at.exception, (where, [e.value for e in at.exception])
    assert "Traceback (most recent call last)" not in _texts(at), where


def _opened(name: str, dataset: str) -> AppTest:
    """The page with the dataset's shipped pair chosen (as the sidebar's default does)."""
    a, b = PAIRS[dataset]
    at = AppTest.from_file(page(name), default_timeout=180)
    at.run()
    keys = {box.key for box in at.selectbox}
    if "model_a" not in keys:  # a page without the models sidebar (Training, Results)
        return at
    for key, value in (("model_a", ZOO / f"{a}.safetensors"), ("model_b", ZOO / f"{b}.safetensors")):
        at.selectbox(key=key).set_value(str(value))
    at.selectbox(key="dataset").set_value(dataset)
    at.run()
    return at


def _main_buttons(at: AppTest) -> list[str]:
    """The keys (or labels) of the page's enabled buttons, form submit buttons included."""
    return [button.key or button.label for button in at.button if not button.disabled]


def _to_background(at: AppTest) -> None:
    for radio in at.radio:
        if radio.key and radio.key.endswith("_mode") and "background" in radio.options:
            radio.set_value("background")


@pytest.mark.parametrize("dataset", list(PAIRS))
@pytest.mark.parametrize("name", PAGE_NAMES)
def test_every_page_and_its_main_buttons(name, dataset, monkeypatch):
    if not _has_data(dataset):
        pytest.skip(f"{dataset} files are not here (set ROBUSTSCOPE_DATA)")
    monkeypatch.setenv("ROBUSTSCOPE_CHECKPOINTS", str(ZOO))
    at = _opened(name, dataset)
    _clean(at, f"{name} on {dataset}")
    if "dataset" in {box.key for box in at.selectbox}:
        assert at.selectbox(key="dataset").value == dataset
    for which in _main_buttons(at):
        at = _opened(name, dataset)
        _to_background(at)
        button = next(b for b in at.button if (b.key or b.label) == which)
        button.click().run()
        _clean(at, f"{name} on {dataset}: {which}")
    assert os.environ["ROBUSTSCOPE_CHECKPOINTS"] == str(ZOO)
