"""app.py and the Models page, run headlessly with Streamlit's AppTest."""
import json
from pathlib import Path

import pandas as pd
import pytest

from streamlit.testing.v1 import AppTest

from engine.checkpoints import list_checkpoints


REPO = Path(__file__).resolve().parents[2]


def _run(path="app.py"):
    at = AppTest.from_file(str(REPO / path), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _text(at) -> str:
    parts = [m.value for m in at.markdown] + [m.value for m in at.info] + [m.value for m in at.title]
    return "\n".join(str(p) for p in parts)


def test_empty_state_without_checkpoints_tells_how_to_get_one():
    at = _run()
    assert at.title[0].value == "Models"
    assert "No checkpoint yet" in _text(at)
    assert "python -m engine import" in _text(at)


def test_offline_dataset_fallback_is_explained(monkeypatch, tmp_path):
    monkeypatch.setenv("ROBUSTSCOPE_DATA", str(tmp_path / "nodata"))
    at = _run()
    assert at.sidebar.selectbox(key="dataset").value == "shapes"
    assert "MNIST files were not found" in " ".join(i.value for i in at.sidebar.info)


def test_models_page_preselects_standard_and_robust_and_evaluates(tiny_checkpoints):
    at = _run()
    assert at.sidebar.selectbox(key="model_a").value == str(tiny_checkpoints["standard"])
    assert at.sidebar.selectbox(key="model_b").value == str(tiny_checkpoints["robust"])
    assert "tiny_standard" in _text(at) and "tiny_robust" in _text(at)
    listing = at.dataframe[0].value.set_index("name")
    assert listing.loc["tiny_robust", "ε"] == pytest.approx(8 / 255) and listing.loc["tiny_robust", "norm"] == "linf"
    assert pd.isna(listing.loc["tiny_standard", "ε"]) and pd.isna(listing.loc["tiny_standard", "norm"])
    at.number_input(key="eval_n").set_value(20)
    at.button(key="eval_go").click().run()
    assert not at.exception
    table = at.dataframe[-1].value
    assert list(table["model"]) == ["A", "B"] and list(table["images"]) == [20, 20]
    assert ((table["clean acc"] >= 0) & (table["clean acc"] <= 1)).all()


def test_sidebar_choice_survives_reruns_and_page_switches(tiny_checkpoints):
    at = _run()
    for _ in range(2):
        at.run()
        assert at.sidebar.selectbox(key="model_a").value == str(tiny_checkpoints["standard"])
    at.switch_page(str(REPO / "pages" / "saliency.py")).run()
    assert not at.exception
    assert at.sidebar.selectbox(key="model_a").value == str(tiny_checkpoints["standard"])
    assert at.sidebar.selectbox(key="model_b").value == str(tiny_checkpoints["robust"])


def test_wrong_dataset_for_the_models_warns_instead_of_crashing(tiny_checkpoints, real_data_root, monkeypatch):
    monkeypatch.setenv("ROBUSTSCOPE_DATA", str(real_data_root))
    at = _run()
    at.sidebar.selectbox(key="dataset").set_value("mnist").run()
    at.number_input(key="eval_n").set_value(10)
    at.button(key="eval_go").click().run()
    assert not at.exception
    assert any("(3, 32, 32)" in w.value for w in at.warning), ([w.value for w in at.warning], [e.value for e in at.error], at.sidebar.selectbox(key="dataset").value)


def test_upload_with_card_installs_checkpoint(tiny_checkpoints):
    from engine.uploads import install_upload

    src = Path(tiny_checkpoints["standard"])
    path = install_upload("mine.safetensors", src.read_bytes(), src.with_suffix(".json").read_bytes(), name="my upload")
    names = [i.name for i in list_checkpoints()]
    assert path.parent.name == "uploads" and "my-upload" in names
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["name"] == "my-upload" and card["arch"] == "small_cnn"


def test_the_dataset_and_model_b_follow_a_new_model_a(tiny_checkpoints):
    import torch

    from engine.checkpoints import make_card, save_checkpoint
    from engine.data import get_spec
    from engine.models import build_model

    spec = get_spec("mnist")
    made = {}
    for name, training in (("m_standard", {"method": "standard"}), ("m_robust", {"method": "pgd", "norm": "linf", "eps": 0.3})):
        torch.manual_seed(0)
        model = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=4, hidden=16)
        folder = Path(tiny_checkpoints["standard"]).parent
        made[name] = str(save_checkpoint(model.eval(), make_card(model, "mnist", name=name, training=training),
                                         folder / name))
    at = _run()
    at.sidebar.selectbox(key="model_a").set_value(str(tiny_checkpoints["standard"])).run()
    assert at.sidebar.selectbox(key="dataset").value == "shapes"
    assert at.sidebar.selectbox(key="model_b").value == str(tiny_checkpoints["robust"])
    at.sidebar.selectbox(key="model_a").set_value(made["m_standard"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.selectbox(key="dataset").value == "mnist"
    assert at.sidebar.selectbox(key="model_b").value == made["m_robust"]
    at.sidebar.selectbox(key="dataset").set_value("shapes").run()  # the user's own choice of dataset stays
    assert at.sidebar.selectbox(key="dataset").value == "shapes"
    assert at.sidebar.selectbox(key="model_a").value == made["m_standard"]


def test_image_counts_are_capped_at_the_splits_size_before_anything_runs(tiny_checkpoints, monkeypatch):
    import pages.common

    monkeypatch.setattr(pages.common, "split_size", lambda dataset, split="test": 20)
    at = _run()
    box = at.number_input(key="eval_n")
    assert box.max == 20 and box.value == 20 and "split holds 20 images" in box.help
    at = AppTest.from_file(str(REPO / "pages" / "representations.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.number_input(key="cka_n").max == 20
    at = AppTest.from_file(str(REPO / "pages" / "saliency.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "curve_n" not in [s.key for s in at.select_slider]               # one count left: said, not offered
    assert any(c.value == "Images: 16 (the shapes test split holds 20)" for c in at.caption)
