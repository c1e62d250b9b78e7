"""AppTest for the Representations (CKA) page."""
from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "representations.py")


def test_page_without_models_shows_empty_state():
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception
    assert any("Choose model" in i.value for i in at.info)


def test_page_computes_three_heatmaps(tiny_checkpoints):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception
    at.number_input[0].set_value(24)
    at.number_input[1].set_value(8)
    at.button[0].click().run()
    assert not at.exception
    assert "clean inputs · 24 images" in at.subheader[0].value
    assert not [b for b in at.button if b.key == "cka_stop"]  # the run ended: its Stop button is gone
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    assert len(at.get("download_button")) == 3


def test_stop_keeps_the_last_finished_result(tiny_checkpoints):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    at.number_input[0].set_value(24)
    at.number_input[1].set_value(8)
    at.button[0].click().run()
    assert not at.exception
    heading = at.subheader[0].value
    # clicking Stop (shown only while computing) reruns the page without a submit: computes nothing
    at.run()
    assert not at.exception
    assert at.subheader[0].value == heading
    assert len(at.get("plotly_chart")) == 2
    assert not [b for b in at.button if b.key == "cka_stop"]


def _extra_checkpoint(name: str, classes: int, shape: tuple, dataset: str) -> str:
    """A tiny seeded checkpoint beside the ``tiny_checkpoints`` ones; returns its path."""
    import os

    import torch

    from engine.checkpoints import make_card, save_checkpoint
    from engine.models import build_model

    torch.manual_seed(7)
    model = build_model("small_cnn", classes, shape, [0.5] * shape[0], [0.25] * shape[0], width=4, hidden=16)
    card = make_card(model, dataset, name=name, training={"method": "standard"})
    return str(save_checkpoint(model.eval(), card, Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"]) / name))


def _with_b(path: str) -> AppTest:
    """The page with A = the tiny standard model on ``shapes`` and B = ``path`` (set explicitly,
    after A, as a user would: with MNIST data present the default pair would be an MNIST one)."""
    import os

    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    at.selectbox(key="model_a").set_value(str(Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"]) / "tiny_standard.safetensors"))
    at.run()  # a new A brings its dataset and its pair's B; the user then picks B (and the dataset)
    at.selectbox(key="model_b").set_value(path)
    at.selectbox(key="dataset").set_value("shapes")
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_model_of_another_input_shape_is_refused(tiny_checkpoints):
    at = _with_b(_extra_checkpoint("mnist_sized", 10, (1, 28, 28), "mnist"))
    assert any("takes inputs of shape (1, 28, 28)" in w.value for w in at.warning), [w.value for w in at.warning] + [e.value for e in at.error]
    assert not [b for b in at.button if "Compute CKA" in b.label]  # the page stopped before the form


def test_a_model_with_other_classes_is_compared_with_a_warning(tiny_checkpoints):
    at = _with_b(_extra_checkpoint("five_classes", 5, (3, 32, 32), "shapes"))
    assert any("5 classes" in w.value and "does not use the labels" in w.value for w in at.warning)
    at.number_input[0].set_value(24)
    at.number_input[1].set_value(8)
    next(b for b in at.button if "Compute CKA" in b.label).click().run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 2
