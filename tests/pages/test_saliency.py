"""Saliency page, run headlessly with Streamlit's AppTest on two tiny checkpoints."""
import json
import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import images_in as _images, run_ok as _run

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "pages" / "saliency.py")




def test_without_checkpoints_the_page_explains_what_to_do():
    at = _run(AppTest.from_file(PAGE, default_timeout=60))
    assert any("No checkpoint yet" in i.value for i in at.info)
    assert not _images(at)


def test_grid_curves_and_epsilon_view(tiny_checkpoints):
    at = _run(AppTest.from_file(PAGE, default_timeout=90))
    text = " ".join(m.value for m in at.markdown)
    assert "A: tiny_standard" in text and "B: tiny_robust" in text
    # 3 default methods x (input + A + B) tiles
    assert len(_images(at)) == 9
    assert {b.label for b in at.get("download_button")} >= {"Download grid (PNG)", "Download maps (NPZ)"}

    # add guided backprop (small_cnn uses nn.ReLU modules: no refusal), show heatmaps only
    at.multiselect(key="sal_methods").select("guided_backprop")
    at.toggle(key="sal_overlay").set_value(False)
    _run(at)
    assert len(_images(at)) == 12 and not at.warning

    # keep/remove curves on 16 images
    at.select_slider(key="curve_n").set_value(16)
    at.button(key="curve_run").click()
    _run(at)
    frame = at.session_state["curve_frame"]
    assert "curve_stop" not in {b.key for b in at.button}  # the run ended: its Stop button is gone
    assert set(frame["mode"]) == {"keep", "remove"} and frame["model"].nunique() == 2
    for (_, mode), part in frame.groupby(["model", "mode"]):
        end = part.loc[part["fraction"] == (1.0 if mode == "keep" else 0.0), "accuracy"].item()
        assert end == pytest.approx(part["clean_accuracy"].iloc[0])  # keep 100 % / remove 0 % = clean
    assert any(b.label == "Download curves (CSV)" for b in at.get("download_button"))

    # ε vs interpretability across both checkpoints (standard ε = 0, robust ε = 8/255)
    assert at.selectbox(key="eps_dataset").value == "shapes"
    assert len(at.multiselect(key="eps_ckpts_shapes").value) == 2
    at.select_slider(key="eps_n").set_value(16)
    at.button(key="eps_run").click()
    _run(at)
    eps = at.session_state["eps_frame"]
    assert list(eps["epsilon"]) == pytest.approx([0.0, 8 / 255])
    assert eps["alignment"].between(0, 1).all() and (eps["n"] == 16).all()
    assert any(b.label == "Download (CSV)" for b in at.get("download_button"))


def test_random_image_button_changes_the_index(tiny_checkpoints):
    at = _run(AppTest.from_file(PAGE, default_timeout=90))
    at.number_input(key="sal_index").set_value(5)
    _run(at)
    assert at.number_input(key="sal_index").value == 5
    at.button(key="sal_random").click()
    _run(at)
    assert 0 <= at.number_input(key="sal_index").value < 256


def test_retrained_kar_roar_curves(tiny_checkpoints):
    at = _run(AppTest.from_file(PAGE, default_timeout=120))
    at.select_slider(key="curve_n").set_value(16)
    at.multiselect(key="curve_modes").set_value(["remove"])
    at.multiselect(key="curve_fractions").set_value([0.0, 1.0])
    at.checkbox(key="curve_retrain").check()
    _run(at)
    at.number_input(key="curve_retrain_epochs").set_value(1)
    at.select_slider(key="curve_retrain_n").set_value(64)
    _run(at)
    hint = " ".join(c.value for c in at.caption)
    assert "4 trainings from scratch" in hint and "64 training images" in hint  # 2 models x 1 curve x 2 fractions

    at.button(key="curve_run").click()
    _run(at)
    frame = at.session_state["curve_frame"]
    assert len(frame) == 8 and frame["model"].nunique() == 2  # with and without retraining
    retrained = frame[frame["retrained"]]
    assert len(retrained) == 4 and (retrained["retrain_epochs"] == 1).all() and (retrained["retrain_n"] == 64).all()
    assert frame.loc[~frame["retrained"], "retrain_n"].isna().all()
    assert frame["accuracy"].between(0, 1).all()
    assert "retrained" in frame.to_csv(index=False).splitlines()[0]
    assert any(b.label == "Download curves (CSV)" for b in at.get("download_button"))
    names = {trace["name"] for trace in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]}
    assert names == {f"{model} · remove{kind}" for kind in ("", " · ROAR (retrained)")
                     for model in ("A: tiny_standard (standard)", "B: tiny_robust (pgd ℓ∞ ε=0.0314)")}
    published = sorted(p.name for p in Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"]).rglob("*") if p.is_file())
    assert published == ["tiny_robust.json", "tiny_robust.safetensors", "tiny_standard.json", "tiny_standard.safetensors"]


def test_epsilon_view_lists_checkpoints_of_the_chosen_dataset(tiny_checkpoints):
    at = _run(AppTest.from_file(PAGE, default_timeout=90))
    assert set(at.selectbox(key="eps_dataset").options) == {"shapes", "mnist", "fashion-mnist"}
    at.selectbox(key="eps_dataset").set_value("fashion-mnist")
    _run(at)
    assert any("No `fashion-mnist` checkpoints" in i.value for i in at.info)
    assert not [m for m in at.multiselect if m.key and m.key.startswith("eps_ckpts")]


def _texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "info", "caption", "warning") for e in at.get(kind))


def _urls(at: AppTest) -> list:
    return [img.url for node in _images(at) for img in node.proto.imgs]


def test_the_grid_is_stored_and_the_next_run_reads_it(tiny_checkpoints):
    from engine.analysis import ResultStore

    at = _run(AppTest.from_file(PAGE, default_timeout=90))
    key = at.query_params["result"]
    assert [e.key for e in ResultStore().list()] == [key] and f"Result `{key}` (computed now" in _texts(at)
    shown = _urls(at)
    _run(at)
    assert f"Result `{key}` (stored earlier" in _texts(at) and _urls(at) == shown
    at.number_input(key="sal_index").set_value(4)  # other settings: computed, the URL follows
    _run(at)
    assert at.query_params["result"] != key and len(ResultStore().list()) == 2
    assert "Stored maps" not in _texts(at) and _urls(at) != shown


def test_a_permalink_of_other_settings_shows_the_stored_grid_until_asked(tiny_checkpoints):
    from engine.analysis import ModelRef, run_analysis
    from engine.analysis.kinds.saliency import SaliencyGridRequest

    stored = run_analysis(SaliencyGridRequest(
        models=(ModelRef.of(tiny_checkpoints["standard"]), ModelRef.of(tiny_checkpoints["robust"])),
        dataset="shapes", index=7, methods=("saliency",)))
    at = AppTest.from_file(PAGE, default_timeout=90)
    at.query_params["result"] = stored.key
    _run(at)
    assert "Stored maps" in _texts(at) and "shapes #7" in _texts(at)
    assert len(_images(at)) == 3 and at.query_params["result"] == stored.key  # 1 method x (input + A + B)
    assert "A: tiny_standard" in _texts(at)  # the sidebar's models: named as A and B
    at.button(key="sal_live").click()
    _run(at)
    assert "Stored maps" not in _texts(at) and len(_images(at)) == 9  # the picker's settings
    assert at.query_params["result"] != stored.key


@pytest.mark.parametrize("link, message", [
    ("0123456789abcdef0123456789abcdef", "No stored result"),
    ("not-a-key", "result key"),
    ("damaged", "is damaged"),
])
def test_a_stale_or_damaged_permalink_says_so(tiny_checkpoints, link, message):
    from engine.analysis import ModelRef, ResultStore, run_analysis
    from engine.analysis.kinds.saliency import SaliencyGridRequest

    if link == "damaged":
        stored = run_analysis(SaliencyGridRequest(models=(ModelRef.of(tiny_checkpoints["standard"]),),
                                                  dataset="shapes", index=1))
        (ResultStore().path(stored.key) / "result.json").write_text("{")
        link = stored.key
    at = AppTest.from_file(PAGE, default_timeout=90)
    at.query_params["result"] = link
    _run(at)
    assert any(message in w.value for w in at.warning), [w.value for w in at.warning]
    assert len(_images(at)) == 9  # the page goes on with the picker's maps
