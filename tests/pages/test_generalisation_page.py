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


def _page(n: int) -> AppTest:
    at = AppTest.from_file(str(REPO / "pages" / "generalisation.py"), default_timeout=120)
    at.session_state["gen_n"] = n
    at.session_state["gen_dist"] = ["edges"]
    at.session_state["gen_sev"] = [1]
    at.session_state["gen_layers"] = ["net.block1"]
    at.session_state["gen_topk"] = 4
    return at


def test_a_link_for_other_settings_stays_until_the_current_ones_are_asked_for(tiny_checkpoints, monkeypatch):
    """A permalink opened with other sidebar settings shows the linked (stored) OOD result and
    says so; the button computes the settings shown instead and the URL follows."""
    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")
    at = _page(16)
    at.run()
    assert not at.exception, at.exception
    key = at.query_params["result"]
    other = _page(32)
    other.query_params["result"] = key
    other.run()
    assert not other.exception, other.exception
    assert any("Showing the stored result of the link" in i.value for i in other.info)
    assert other.query_params["result"] == key
    other.button(key="ood_leave_link").click().run()
    assert not other.exception, other.exception
    assert other.query_params["result"] != key
    assert not any("Showing the stored result of the link" in i.value for i in other.info)


def test_unit_statistics_are_a_stored_analysis(tiny_checkpoints, monkeypatch):
    """The unit table is stored: a new session with the same settings reads it back (the compute
    function is made to fail to prove nothing is recomputed)."""
    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")
    at = _page(16)
    at.run()
    assert not at.exception, at.exception
    assert any(d.label == "Download unit statistics (CSV)" for d in at.get("download_button"))
    import engine.generalisation.units as units

    def refuse(*_a, **_k):
        raise AssertionError("recomputed instead of read from the result store")

    monkeypatch.setattr(units, "compare_units", refuse)
    monkeypatch.setattr("engine.generalisation.compare_units", refuse)
    again = _page(16)
    again.run()
    assert not again.exception, again.exception
    assert any(d.label == "Download unit statistics (CSV)" for d in again.get("download_button"))
