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
