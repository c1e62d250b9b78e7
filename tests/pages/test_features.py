"""Features page (AppTest): units vs random directions for models A and B."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

PAGE = str(Path(__file__).resolve().parents[2] / "pages" / "features.py")


@pytest.fixture
def checkpoints(request, tmp_path):
    """The lead's ``tiny_checkpoints`` when conftest has it, else two tiny ones built here."""
    try:
        return request.getfixturevalue("tiny_checkpoints")
    except pytest.FixtureLookupError:
        import torch

        from engine.checkpoints import save_checkpoint
        from engine.checkpoints import make_card
        from engine.data import get_spec
        from engine.models import build_model

        spec = get_spec("shapes")
        root = Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"])
        paths = {}
        for seed, kind in enumerate(("standard", "robust")):
            torch.manual_seed(seed)
            model = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=4)
            paths[kind] = save_checkpoint(model.eval(), make_card(model, "shapes", name=kind), root / kind)
        return paths


def test_page_without_models_shows_empty_state():
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception
    assert any("Choose model" in info.value for info in at.info)


def test_page_computes_only_on_show(checkpoints):
    """Opening the page computes nothing (no images, no Stop); **Show** computes, and the Stop
    button is gone once the run has ended."""
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 0
    assert any("press **Show**" in info.value for info in at.info)
    assert not [b for b in at.button if b.key == "fv_stop"]
    show = next(b for b in at.button if b.label == "Show")
    show.click().run()
    assert not at.exception, at.exception
    assert len(at.get("image")) == 16  # 4 rows x 2 models x (top-k grid + lucent image)
    assert not [b for b in at.button if b.label == "Stop"]  # the run ended: no Stop left on screen


def test_page_shows_units_and_directions_for_both_models(checkpoints):
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    next(b for b in at.button if b.label == "Show").click().run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Model A · unit" in text and "Model B · random direction (seed 0)" in text
    assert len(at.get("image")) == 16
    assert len(at.get("download_button")) == 3  # JSON + one PNG per model
    at.checkbox[0].check()  # teaching mode (inside the form: submit it)
    next(b for b in at.button if b.label == "Show").click().run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Row 1" in text and "Model A · unit" not in text and "random direction" not in text
    for box in at.checkbox[1:3]:
        box.check()
    reveal = next(b for b in at.button if b.label == "Reveal")
    reveal.click().run()
    assert not at.exception
    assert any("rows correctly" in s.value for s in at.success)
    assert len(at.get("image")) == 16  # the result stays across reruns without recomputing


def _texts(at: AppTest) -> str:
    return " ".join(str(e.value) for kind in ("markdown", "info", "caption", "warning") for e in at.get(kind))


def _show(at: AppTest) -> AppTest:
    next(b for b in at.button if b.label == "Show").click().run()
    assert not at.exception, at.exception
    return at


def test_other_settings_are_searched_again_and_the_url_names_the_view(checkpoints):
    at = _show(AppTest.from_file(PAGE, default_timeout=120).run())
    assert len(at.get("image")) == 16
    first = at.query_params["result"]
    at.number_input[0].set_value(1)  # fewer units, submitted with Show: computed again
    _show(at)
    assert len(at.get("image")) == 12  # 3 rows x 2 models x 2
    keys = at.query_params["result"].split(",")
    assert at.query_params["result"] != first and len(keys) == 4  # top-k and lucent, per model
    from engine.analysis import ResultStore

    assert [ResultStore().load(key).kind for key in keys] == ["featvis_topk", "featvis"] * 2
    at.run()  # a rerun shows the view the URL names, lucent images included, from the result store
    assert not at.exception
    assert len(at.get("image")) == 12


def test_foreground_show_stores_the_result_and_the_second_show_reads_it(checkpoints):
    from engine.analysis import ResultStore

    at = AppTest.from_file(PAGE, default_timeout=120).run()
    next(n for n in at.number_input if n.label.startswith("Lucent")).set_value(0)
    _show(at)
    keys = at.query_params["result"].split(",")
    assert sorted(e.key for e in ResultStore().list()) == sorted(keys)
    assert "Running here" not in _texts(at) and f"`{keys[0]}` (computed now" in _texts(at)  # the banner goes with the run
    images = [img.url for node in at.get("image") for img in node.proto.imgs]
    _show(at)
    assert f"`{keys[0]}` (stored earlier" in _texts(at) and f"`{keys[1]}` (stored earlier" in _texts(at)
    assert "Running here" not in _texts(at)
    assert [img.url for node in at.get("image") for img in node.proto.imgs] == images


@pytest.mark.parametrize("link, message", [
    ("0123456789abcdef0123456789abcdef", "No stored result"),
    ("../../etc", "result key"),
    ("damaged", "is damaged"),
])
def test_a_stale_or_damaged_permalink_says_so(checkpoints, link, message):
    if link == "damaged":
        from engine.analysis import ModelRef, ResultStore, run_analysis
        from engine.analysis.kinds.topk import TopKRequest

        stored = run_analysis(TopKRequest(model=ModelRef.of(checkpoints["standard"]), layer="net.block2",
                                          targets=(("unit", 0),), dataset="shapes", n=20, k=2))
        (ResultStore().path(stored.key) / "result.json").write_text("{")
        link = stored.key
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["result"] = link
    at.run()
    assert not at.exception, at.exception
    assert any(message in w.value for w in at.warning), [w.value for w in at.warning]
    assert len(at.get("image")) == 0 and any("press **Show**" in i.value for i in at.info)
