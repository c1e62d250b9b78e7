"""AppTest: the Representations page's measure select box on the shapes pair — every measure's maps,
each within map with its block-structure score, asymmetric maps shown both ways and labelled."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from engine.similarity.measures import MEASURES

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "representations.py")


def _titles(chart) -> list[str]:
    """The subplot titles of a plotly chart element (its figure's annotations)."""
    figure = json.loads(chart.proto.spec)
    return [a["text"] for a in figure["layout"].get("annotations", [])]


def _computed(measure: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="cka_measure").set_value(measure).run()
    assert not at.exception, [e.value for e in at.exception]
    at.number_input(key="cka_n").set_value(24)
    at.number_input[1].set_value(8)
    next(b for b in at.button if str(b.label).startswith("Compute")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.parametrize("measure", [m for m in MEASURES if m != "cka"])
def test_each_measure_shows_its_maps_with_their_block_scores(tiny_checkpoints, measure):
    at = _computed(measure)
    found = MEASURES[measure]
    assert "clean inputs · 24 images" in at.subheader[0].value
    assert any(found.title in c.value for c in at.caption)
    heatmap = at.get("plotly_chart")[0]
    titles = _titles(heatmap)
    assert [t.split(" · ")[0] for t in titles[:2]] == ["A × A", "B × B"]
    assert all("block score" in t for t in titles[:2]), titles
    table = at.dataframe[0].value
    assert list(table["model"]) == ["A", "B"] and table["block-structure score"].between(-1, 1).all()
    scores = [float(t.split("block score ")[1]) for t in titles[:2]]
    assert scores == pytest.approx(list(table["block-structure score"]), abs=0.005)
    if found.symmetric:
        assert titles[2:] == ["A × B"]
    else:
        assert titles[2:] == [f"A × B ({found.direction})", f"B × A ({found.direction})"]
    colour = json.loads(heatmap.proto.spec)["layout"]["coloraxis"]
    assert (colour["cmin"], colour["cmax"]) == pytest.approx(found.value_range)
    assert colour.get("reversescale", False) == found.distance


def test_mknn_asks_for_k_and_cka_for_its_kernel(tiny_checkpoints):
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert [s.label for s in at.selectbox if s.label == "Kernel"] == ["Kernel"]
    at.selectbox(key="cka_measure").set_value("mknn").run()
    assert not [s for s in at.selectbox if s.label == "Kernel"]
    at.number_input(key="cka_k").set_value(3)
    at.number_input(key="cka_n").set_value(24)
    at.number_input[1].set_value(8)
    next(b for b in at.button if str(b.label).startswith("Compute")).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("**mutual kNN** · k=3" in c.value for c in at.caption)
    assert len(at.get("plotly_chart")) == 2
