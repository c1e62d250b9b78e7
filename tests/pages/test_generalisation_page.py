"""Generalisation page: renders the OOD table, shape bias, unit histograms and the verdict."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]


def test_generalisation_page_on_tiny_shapes_pair(tiny_checkpoints):
    at = AppTest.from_file(str(REPO / "pages" / "generalisation.py"), default_timeout=120)
    at.session_state["gen_n"] = 16
    at.session_state["gen_dist"] = ["edges", "patch_shuffle"]
    at.session_state["gen_sev"] = [1]
    at.session_state["gen_layers"] = ["net.block1"]
    at.session_state["gen_topk"] = 4
    at.run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "tiny_robust" in text and "measured claims of Agarwal & Chen 2020" in text
    frames = [d.value for d in at.dataframe]
    assert any("edges" in str(f.index.tolist()) for f in frames)
    assert any("shape_bias" in f.columns for f in frames)
    assert len(at.get("download_button")) == 3
    at.run()  # a rerun reuses the cached results
    assert not at.exception, at.exception
    assert any("measured claims" in m.value for m in at.markdown)
