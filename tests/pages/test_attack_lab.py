"""Attack Lab page, run headlessly with Streamlit's AppTest on two tiny checkpoints."""
import io
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from apptest_helpers import images_in as _images, run_ok as _run

REPO = Path(__file__).resolve().parents[2]
PAGE = str(REPO / "pages" / "attack_lab.py")




def _downloads(at: AppTest) -> set:
    return {b.label for b in at.get("download_button")}


def test_without_checkpoints_the_page_explains_what_to_do():
    at = _run(AppTest.from_file(PAGE, default_timeout=120))
    assert any("No checkpoint yet" in i.value for i in at.info)
    assert not _images(at) and not at.get("download_button")


def test_craft_shows_images_probabilities_for_both_models_and_downloads(tiny_checkpoints):
    at = _run(AppTest.from_file(PAGE, default_timeout=120))
    assert not _images(at)
    assert at.selectbox(key="atk_name").value == "pgd"
    # per-dataset default ε for shapes (ℓ∞ 8/255)
    assert at.number_input(key="atk_pgd_eps_shapes_linf").value == pytest.approx(8 / 255, abs=1e-4)
    at.number_input(key="atk_index").set_value(3)
    at.number_input(key="atk_pgd_eps_shapes_linf").set_value(0.1)
    at.button(key="atk_craft").click()
    _run(at)

    assert len(_images(at)) == 3  # original, adversarial, amplified perturbation
    state = at.session_state["atk_state"]
    result = state["result"]
    assert result.adv.shape == (1, 3, 32, 32)
    assert float(result.linf_norm[0]) <= 0.1 + 1e-5
    assert float(result.adv.min()) >= 0 and float(result.adv.max()) <= 1

    table = at.dataframe[0].value
    assert table["model"].nunique() == 2
    assert set(table["image"]) == {"clean", "adversarial"}
    assert len(table) == 2 * 2 * 3  # models x images x top-3
    for _, part in table.groupby(["model", "image"]):
        assert part["probability"].is_monotonic_decreasing and part["probability"].sum() <= 1 + 1e-6
    # the attacked model's probabilities agree with the attack's own logits
    adv_probs = state["probs"]["A"]["adversarial"]
    logits = result.logits_adv[0].numpy().astype(np.float64)
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(adv_probs, expected, atol=1e-5)

    # the verdict names both models, and "fooled" matches the changed prediction
    verdict = " ".join(e.value for e in at.info if "fooled" in e.value or "held" in e.value)  # a neutral box
    assert not [e for e in list(at.error) + list(at.success) if "fooled" in e.value or "held" in e.value]
    for slot in ("A", "B"):
        p = state["probs"][slot]
        fooled = int(p["clean"].argmax()) != int(p["adversarial"].argmax())
        assert f"{slot}: " in verdict
        assert (f"({'fooled' if fooled else 'held'})" in verdict.split(f"{slot}: ", 1)[1].split(";")[0])
    assert _downloads(at) >= {"Adversarial image (PNG)", "Tensors (NPZ)", "Results (CSV)"}


def test_every_attack_crafts_and_craft_against_b(tiny_checkpoints):
    at = _run(AppTest.from_file(PAGE, default_timeout=120))
    at.radio(key="atk_against").set_value("B")
    for name in ("fgsm", "deepfool", "lbfgs"):
        at.selectbox(key="atk_name").set_value(name)
        _run(at)
        if name == "lbfgs":  # always targeted: a target picker appears
            at.selectbox(key="atk_target").set_value(2)
        at.button(key="atk_craft").click()
        _run(at)
        state = at.session_state["atk_state"]
        assert state["source"] == "B" and state["result"].config["attack"] == name
        assert len(_images(at)) == 3
        if name == "lbfgs":
            assert int(state["result"].targets[0]) == 2


def test_sweep_and_transfer(tiny_checkpoints):
    at = _run(AppTest.from_file(PAGE, default_timeout=120))
    at.selectbox(key="atk_name").set_value("fgsm")
    _run(at)
    at.text_input(key="atk_sweep_eps_fgsm_shapes_linf").set_value("0, 0.05, 0.2")
    at.select_slider(key="atk_sweep_n").set_value(16)
    at.button(key="atk_sweep_run").click()
    _run(at)
    frame = at.session_state["atk_sweep"]
    assert "atk_sweep_stop" not in {b.key for b in at.button}  # the sweep ended: its Stop button is gone
    assert list(frame["eps"].unique()) == pytest.approx([0, 0.05, 0.2]) and frame["model"].nunique() == 2
    assert frame["robust_acc"].between(0, 1).all()
    for _, part in frame.groupby("model"):  # FGSM at ε = 0 leaves clean accuracy; it only falls from there
        assert part["robust_acc"].iloc[0] >= part["robust_acc"].iloc[1:].max() - 1e-9
    assert "Sweep (CSV)" in _downloads(at)

    at.select_slider(key="atk_transfer_n").set_value(16)
    at.button(key="atk_transfer_run").click()
    _run(at)
    res = at.session_state["atk_transfer"]
    assert "atk_transfer_stop" not in {b.key for b in at.button}
    assert res.names == ["A", "B"] and res.n == 16
    assert np.asarray(res.accuracy).shape == (2, 2)
    assert "Transfer (CSV)" in _downloads(at)


def test_bad_sweep_input_is_reported(tiny_checkpoints):
    at = _run(AppTest.from_file(PAGE, default_timeout=120))
    at.text_input(key="atk_sweep_eps_pgd_shapes_linf").set_value("0.1, oops")
    at.select_slider(key="atk_sweep_n").set_value(16)
    at.button(key="atk_sweep_run").click()
    _run(at)
    assert any("oops" in e.value for e in at.error)
    assert "atk_sweep" not in at.session_state


def test_upload_mode_without_a_file_asks_for_one(tiny_checkpoints):
    at = _run(AppTest.from_file(PAGE, default_timeout=120))
    at.radio(key="atk_source").set_value("Upload (PNG/JPEG)")
    _run(at)
    assert any("Upload an image" in i.value for i in at.info)
    assert len(at.get("file_uploader")) == 1
    assert "atk_craft" not in {b.key for b in at.button}
    assert not _images(at)


def test_upload_is_decoded_to_the_model_input():
    """The page's upload path relies on decode_image; a PNG of another size becomes (1, 3, 32, 32)."""
    from PIL import Image

    from engine.images import decode_image

    buf = io.BytesIO()
    Image.fromarray(np.full((50, 70, 3), 200, dtype=np.uint8)).save(buf, format="PNG")
    x = decode_image(buf.getvalue(), (3, 32, 32))
    assert tuple(x.shape) == (1, 3, 32, 32) and float(x.max()) == pytest.approx(200 / 255)


def test_attack_parameters_are_bounded_in_the_widgets(tiny_checkpoints):
    """ε at most 1 under ℓ∞ and sqrt(C·H·W) under ℓ₂; steps and restarts at the engine's caps."""
    import math

    from engine.attacks.base import MAX_RESTARTS, MAX_STEPS

    at = _run(AppTest.from_file(PAGE, default_timeout=120))
    assert at.number_input(key="atk_pgd_eps_shapes_linf").max == 1.0
    assert at.number_input(key="atk_pgd_steps_shapes_linf").max == MAX_STEPS
    assert at.number_input(key="atk_pgd_restarts_shapes_linf").max == MAX_RESTARTS
    at.selectbox(key="atk_pgd_norm").set_value("l2")
    _run(at)
    assert at.number_input(key="atk_pgd_eps_shapes_l2").max == pytest.approx(math.sqrt(3 * 32 * 32))



def test_a_clean_image_a_model_already_gets_wrong_is_flagged_before_any_attack(tiny_checkpoints):
    from engine import data as edata
    from engine.checkpoints import load
    from engine.models.state import predict_labels

    images, labels = edata.take(edata.load_dataset("shapes", split="test"), 12)
    models = {"A": load(tiny_checkpoints["standard"]).model, "B": load(tiny_checkpoints["robust"]).model}
    at = _run(AppTest.from_file(PAGE, default_timeout=120))
    for index in range(12):
        at.number_input(key="atk_index").set_value(index).run()
        assert not at.exception
        flagged = {w.value.split(":")[0] for w in at.warning if "already misclassifies this clean image" in w.value}
        wrong = {slot for slot, model in models.items()
                 if int(predict_labels(model, images[index:index + 1])[0]) != int(labels[index])}
        assert flagged == wrong, index
        assert not at.get("plotly_chart")                                  # nothing was attacked
