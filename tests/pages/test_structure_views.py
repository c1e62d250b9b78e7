"""AppTest: block-structure table, CKA across epochs, and the AdvProp branch selector."""
from __future__ import annotations

import os
from pathlib import Path

from factories import advprop_model
from streamlit.testing.v1 import AppTest

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "pages" / "representations.py")


def _compute(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.number_input[0].set_value(24)
    at.number_input[1].set_value(8)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_block_structure_table_under_the_heatmaps(tiny_checkpoints):
    at = _compute(AppTest.from_file(PAGE, default_timeout=120))
    table = at.dataframe[0].value
    assert list(table["model"]) == ["A", "B"]
    assert table["block-structure score"].between(-1, 1).all()
    assert table["mean off-diagonal CKA"].between(-1, 1).all()


def test_across_epochs_view_draws_each_run(tiny_checkpoints):
    from engine.training import TrainConfig, train

    runs = Path(os.environ["ROBUSTSCOPE_RUNS"])
    config = TrainConfig(dataset="shapes", dataset_options={"n": 64}, arch="small_cnn",
                         arch_kwargs={"width": 4, "hidden": 8}, epochs=2, batch_size=32, optimizer="adamw",
                         lr=3e-3, eval_size=16, eval_steps=1, device="cpu", name="snapview", snapshot_every=1)
    train(config, run_dir=runs / "train" / "snapview", checkpoint_dir=runs / "ckpts")
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.run()
    assert not at.exception
    at.number_input(key="epochs_n").set_value(24)
    form_buttons = [b for b in at.button if "across epochs" in str(b.label)]
    form_buttons[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    assert any(d.label == "CSV" for d in at.get("download_button"))


def test_branch_selector_for_advprop_models(tiny_checkpoints):
    from engine.checkpoints import make_card, save_checkpoint
    from engine.data import get_spec

    spec = get_spec("shapes")
    model = advprop_model(spec.num_classes, spec.input_shape, seed=3)
    root = Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"])
    path = save_checkpoint(model, make_card(model, "shapes", name="tiny_advprop",
                                                   training={"method": "advprop"}), root / "tiny_advprop")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception
    assert not [r for r in at.sidebar.radio if r.key == "branch_a"], "no selector for a model without dual BN"
    at.sidebar.selectbox(key="model_a").set_value(str(path)).run()
    radio = at.sidebar.radio(key="branch_a")
    assert radio.value == "main"
    radio.set_value("aux").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("evaluated through its `aux` BatchNorm branch" in c.value for c in at.sidebar.caption)


def test_models_page_compares_advprop_branches_with_standard_and_robust(tiny_checkpoints):
    from engine.checkpoints import make_card, save_checkpoint
    from engine.data import get_spec

    spec = get_spec("shapes")
    model = advprop_model(spec.num_classes, spec.input_shape, seed=4)
    root = Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"])
    save_checkpoint(model, make_card(model, "shapes", name="tiny_advprop", training={"method": "advprop"}),
                    root / "tiny_advprop")
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=180)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    at.number_input(key="advprop_n").set_value(16)
    at.number_input(key="advprop_steps").set_value(1)
    next(b for b in at.button if "Compare branches" in str(b.label)).click().run()
    assert not at.exception, [e.value for e in at.exception]
    table = next(d.value for d in at.dataframe if "PGD acc" in d.value.columns)
    assert list(table["model"]) == ["tiny_advprop (main BN)", "tiny_advprop (aux BN)", "tiny_standard", "tiny_robust"]
    assert table[["clean acc", "PGD acc", "distorted acc"]].apply(lambda c: c.between(0, 1)).all().all()


def test_models_page_shows_pgd_and_autoattack_side_by_side(tiny_checkpoints):
    from engine.checkpoints import update_card

    update_card(tiny_checkpoints["robust"], {"metrics": {"clean_acc": 0.9, "robust_acc": 0.6, "autoattack_acc": 0.42,
                                                         "attack": {"attack": "pgd", "steps": 20, "eps": 0.03, "norm": "linf"}}})
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    listing = at.dataframe[0].value.set_index("name")
    assert listing.loc["tiny_robust", "AutoAttack"] == 0.42 and listing.loc["tiny_robust", "robust acc"] == 0.6
    shown = [(m.label, m.value) for m in at.metric]
    assert ("AutoAttack (card)", "42.00%") in shown and ("PGD acc (card)", "60.00%") in shown
