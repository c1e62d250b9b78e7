"""Features page (AppTest): units vs random directions for models A and B."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "features.py")


@pytest.fixture
def checkpoints(request, tmp_path):
    """The lead's ``tiny_checkpoints`` when conftest has it, else two tiny ones built here."""
    try:
        return request.getfixturevalue("tiny_checkpoints")
    except pytest.FixtureLookupError:
        import torch

        from engine.checkpoints import save_checkpoint
        from engine.checkpoints.card import make_card
        from engine.data import get_spec
        from engine.models import build_model

        spec = get_spec("shapes")
        root = Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"])
        paths = {}
        for seed, kind in enumerate(("standard", "robust")):
            torch.manual_seed(seed)
            model = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=4)
            paths[kind] = save_checkpoint(model.eval(), make_card(model, "shapes", name=kind), root / kind)
        return paths


def test_page_without_models_shows_empty_state():
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("Choose model" in info.value for info in at.info)


def test_page_shows_units_and_directions_for_both_models(checkpoints):
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Model A · unit" in text and "Model B · random direction (seed 0)" in text
    assert len(at.get("image")) == 16  # 4 rows x 2 models x (top-k grid + lucent image)
    assert len(at.get("download_button")) == 3  # JSON + one PNG per model
    at.checkbox[0].check()  # teaching mode (inside the form: submit it)
    at.button[0].click().run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Row 1" in text and "Model A · unit" not in text and "random direction" not in text
    for box in at.checkbox[1:3]:
        box.check()
    reveal = next(b for b in at.button if b.label == "Reveal")
    reveal.click().run()
    assert not at.exception
    assert any("rows correctly" in s.value for s in at.success)


def test_stop_interrupts_and_show_recomputes(checkpoints):
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    at.button(key="fv_stop").click().run()
    assert not at.exception
    assert any("Stopped" in info.value for info in at.info)
    assert len(at.get("image")) == 0
    at.button[0].click().run()  # "Show" (the form's submit button) computes again
    assert not at.exception
    assert len(at.get("image")) == 16
