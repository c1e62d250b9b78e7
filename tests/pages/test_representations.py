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
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    assert len(at.get("download_button")) == 3
