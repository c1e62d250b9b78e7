"""The Models page's upload form: the pickle opt-in exists only when the operator enables it."""
from pathlib import Path

from streamlit.testing.v1 import AppTest

from apptest_helpers import run_ok
from engine.uploads import ALLOW_PICKLE_ENV

REPO = Path(__file__).resolve().parents[2]


def _models_page() -> AppTest:
    return run_ok(AppTest.from_file(str(REPO / "app.py"), default_timeout=120))


def _captions(at) -> str:
    return "\n".join(str(c.value) for c in at.caption)


def test_pickle_checkbox_is_absent_without_the_operator_switch(monkeypatch):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    at = _models_page()
    assert at.title[0].value == "Models"
    assert "up_pickle" not in [c.key for c in at.checkbox]
    text = _captions(at)
    assert "are refused" in text and f"{ALLOW_PICKLE_ENV}=1" in text
    assert "2 GiB" in text  # the size limit is stated


def test_pickle_checkbox_appears_when_the_operator_allows_it(monkeypatch):
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    at = _models_page()
    box = at.checkbox(key="up_pickle")
    assert box.value is False
    box.check().run()
    assert not at.exception
    assert any("runs code from the file" in str(w.value) for w in at.warning)


def test_upload_form_offers_the_new_datasets_and_a_normalisation_field(monkeypatch):
    monkeypatch.delenv(ALLOW_PICKLE_ENV, raising=False)
    at = _models_page()
    options = at.selectbox(key="up_ds").options
    assert "cifar100" in options and "imagenet" in options
    assert at.text_input(key="up_norm").value == ""
    assert "timm" in at.selectbox(key="up_fmt").options


def test_leaderboard_figures_are_shown_beside_not_as_our_metrics(monkeypatch, tmp_path):
    import os

    from engine.checkpoints import make_card, save_checkpoint
    from engine.models import build_model

    model = build_model("small_cnn", 4, (3, 32, 32), [0.5] * 3, [0.25] * 3, width=4, hidden=8)
    board = {"clean_acc": 0.8969, "autoattack_acc": 0.5953, "eps_text": "8/255", "norm": "linf",
             "from": "RobustBench model_info/cifar10/Linf/Carmon2019Unlabeled.json"}
    card = make_card(model, "shapes", name="zoo_model", training={"method": "pgd", "norm": "linf", "eps": 8 / 255},
                     source={"format": "robustbench", "leaderboard": board})
    save_checkpoint(model, card, Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"]) / "zoo_model")
    at = _models_page()
    text = _captions(at)
    assert "Reported by the leaderboard" in text and "89.69%" in text and "59.53%" in text
    assert "model_info/cifar10/Linf/Carmon2019Unlabeled.json" in text
