"""Model cards and import options that claim absurd sizes, and card JSON nested 100,000 deep: each
is refused with a CheckpointError naming the field or the card, through the functions the CLI
import, the upload form and the Models page use — never torch's storage-size overflow, never a
RecursionError, never an allocation the weights file does not justify."""
from __future__ import annotations

import json
import threading

import pytest
import torch

from engine import checkpoints as ckpt
from engine import uploads
from engine.checkpoints import ModelCard
from engine.checkpoints.card import MAX_SIZE_OPTIONS
from engine.cli import main
from engine.data import get_spec
from engine.errors import CheckpointError
from engine.models import build_model

SPEC = get_spec("shapes")
TINY = {"width": 4, "hidden": 8}
DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = build_model("small_cnn", SPEC.num_classes, SPEC.input_shape, SPEC.mean, SPEC.std, **TINY).eval()
    return ckpt.save_checkpoint(model, ckpt.make_card(model, "shapes", name="m"), tmp_path / "m")


def _card(saved, **arch_kwargs) -> dict:
    card = json.loads(saved.with_suffix(".json").read_text())
    card.pop("weights_sha256")
    card["arch_kwargs"].update(arch_kwargs)
    return card


# --------------------------------------------------------------------------------- size options


@pytest.mark.parametrize("key", sorted(MAX_SIZE_OPTIONS))
@pytest.mark.parametrize("excess", [1, 10**9, float("inf")])
def test_size_options_over_the_bound_are_named(saved, key, excess):
    card = _card(saved, **{key: MAX_SIZE_OPTIONS[key] + excess})
    with pytest.raises(CheckpointError, match=rf"field 'arch_kwargs\.{key}' is .*at most {MAX_SIZE_OPTIONS[key]:,}"):
        ModelCard.from_dict(card, "m.json")


def test_size_options_at_the_bound_are_accepted(saved):
    card = ModelCard.from_dict(_card(saved, width=MAX_SIZE_OPTIONS["width"], hidden=MAX_SIZE_OPTIONS["hidden"]), "m.json")
    assert card.arch_kwargs["width"] == MAX_SIZE_OPTIONS["width"]


def test_page_load_of_a_card_claiming_width_1e9_names_the_field(saved):
    saved.with_suffix(".json").write_text(json.dumps(_card(saved, width=10**9)))
    with pytest.raises(CheckpointError, match=r"m\.json: field 'arch_kwargs\.width' is 1000000000"):
        ckpt.load(saved)
    info = next(i for i in ckpt.list_checkpoints(saved.parent) if i.name == "m")
    assert info.card is None and "arch_kwargs.width" in info.error


def test_upload_with_a_card_claiming_width_1e9_names_the_field(saved, tmp_path):
    card = json.dumps(_card(saved, width=10**9)).encode()
    with pytest.raises(CheckpointError, match=r"model card for up\.safetensors: field 'arch_kwargs\.width'"):
        uploads.install_upload("up.safetensors", saved.read_bytes(), card, dest_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_upload_without_a_card_and_a_huge_width_names_the_option(saved, tmp_path):
    with pytest.raises(CheckpointError, match=r"cannot build small_cnn for up\.safetensors: option 'width' is 1000000000"):
        uploads.install_upload("up.safetensors", saved.read_bytes(), arch="small_cnn", dataset="shapes",
                               arch_kwargs={"width": 10**9}, dest_dir=tmp_path / "out")


def test_cli_import_with_a_huge_width_is_an_error_not_a_traceback(saved, tmp_path, capsys):
    args = ["import", str(saved), "--arch", "small_cnn", "--dataset", "shapes", "--out-dir", str(tmp_path / "out")]
    assert main(args + ["--arch-kwargs", json.dumps({"width": 10**9, "hidden": 8})]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot build small_cnn") and "option 'width' is 1000000000" in err
    assert main(args + ["--arch-kwargs", json.dumps(TINY)]) == 0  # the same import with its real options


def test_import_of_a_model_the_file_cannot_fill_is_refused_before_building_it(saved):
    # width 3000 is within the card's bounds, but would allocate ~2 GB for a file of a few KB
    with pytest.raises(CheckpointError, match=r"holds [\d,]+ values but \S*m\.safetensors has only [\d,]+; refusing"):
        ckpt.import_checkpoint(saved, "small_cnn", "shapes", arch_kwargs={"width": 3000, "hidden": 8})


def test_a_model_the_file_fills_still_imports(saved):
    loaded = ckpt.import_checkpoint(saved, "small_cnn", "shapes", arch_kwargs=TINY)
    assert loaded.model(torch.rand(1, *SPEC.input_shape)).shape == (1, SPEC.num_classes)


# --------------------------------------------------------------------------------- nesting


def test_card_text_nested_100000_deep_is_refused():
    with pytest.raises(CheckpointError, match="model card deep.json is nested too deeply"):
        ModelCard.from_json(DEEP, "deep.json")


def test_page_load_of_a_card_nested_100000_deep(saved):
    saved.with_suffix(".json").write_bytes(DEEP)
    with pytest.raises(CheckpointError, match=r"m\.json is nested too deeply"):
        ckpt.load(saved)
    info = next(i for i in ckpt.list_checkpoints(saved.parent) if i.name == "m")
    assert "nested too deeply" in info.error


def test_upload_of_a_card_nested_100000_deep_from_a_page_thread(saved, tmp_path):
    """The upload form runs in one of Streamlit's script threads: the guard must hold there too."""
    caught = []

    def upload():
        try:
            uploads.install_upload("up.safetensors", saved.read_bytes(), DEEP, dest_dir=tmp_path / "out")
        except BaseException as exc:  # noqa: BLE001 - whatever escapes is what the test looks at
            caught.append(exc)

    thread = threading.Thread(target=upload)
    thread.start()
    thread.join(60)
    assert len(caught) == 1 and isinstance(caught[0], CheckpointError), caught
    assert str(caught[0]).startswith("model card for up.safetensors is nested too deeply")
