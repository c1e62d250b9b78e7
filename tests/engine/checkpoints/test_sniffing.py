"""What a checkpoint file is comes from its bytes, in the order HTML -> safetensors -> zip -> legacy
pickle -> unknown, each refused or read with its own message; messages name the file as the user
uploaded it, never the temporary file it was checked in; arbitrary unpickling stays behind the
explicit opt-in."""
from __future__ import annotations

import argparse
import errno
import random
import tempfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from engine import checkpoints as ckpt
from engine import uploads
from engine.checkpoints import safe_io
from engine.data import get_spec
from engine.errors import CheckpointError, StorageError, UnsafeCheckpointError
from engine.models import build_model

HTML = (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head>"
        b"<body>Google Drive can't scan this file for viruses.</body></html>")
SPEC = get_spec("shapes")
_TEMPORARY_DIRECTORY = tempfile.TemporaryDirectory
TINY = {"width": 4, "hidden": 8}


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("small_cnn", SPEC.num_classes, SPEC.input_shape, SPEC.mean, SPEC.std, **TINY)
    return {k: v.clone() for k, v in model.net.state_dict().items()}


def _random_bytes(n: int = 1024, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def _files(tmp_path: Path) -> dict[str, Path]:
    """One file of every kind, named as people name them (the safetensors one as ``.pt``, too)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    state = _state()
    files = {"html": tmp_path / "html.pt", "unknown": tmp_path / "random.pt", "safetensors": tmp_path / "st.safetensors",
             "safetensors_as_pt": tmp_path / "st_as.pt", "zip": tmp_path / "zip.pt", "pickle": tmp_path / "legacy.pt"}
    files["html"].write_bytes(HTML)
    files["unknown"].write_bytes(_random_bytes())
    save_file(state, str(files["safetensors"]))
    save_file(state, str(files["safetensors_as_pt"]))
    torch.save(state, files["zip"])
    torch.save(state, files["pickle"], _use_new_zipfile_serialization=False)
    return files


class _RecordedTemp:
    """``tempfile.TemporaryDirectory`` that remembers the folders it made (to look for them in messages)."""

    made: list[str] = []

    def __init__(self, *args, **kwargs):
        self._inner = _TEMPORARY_DIRECTORY(*args, **kwargs)
        _RecordedTemp.made.append(self._inner.name)

    def __enter__(self):
        return self._inner.__enter__()

    def __exit__(self, *exc):
        return self._inner.__exit__(*exc)


@pytest.fixture
def temp_dirs(monkeypatch):
    _RecordedTemp.made = []
    monkeypatch.setattr(uploads.tempfile, "TemporaryDirectory", _RecordedTemp)
    return _RecordedTemp.made


def _upload_error(temp_dirs, name: str, data: bytes, **kwargs) -> str:
    """The message of the error uploading ``data`` as ``name`` raises, checked to name the file
    and never the temporary folder it was written to."""
    kwargs = {"arch": "small_cnn", "dataset": "shapes", **kwargs}
    with pytest.raises(CheckpointError) as err:
        uploads.install_upload(name, data, **kwargs)
    message = str(err.value)
    assert temp_dirs, "the upload made no temporary folder"
    assert name in message and not any(folder in message for folder in temp_dirs), message
    return message


# --------------------------------------------------------------------------------- verdicts


def test_every_kind_gets_its_verdict(tmp_path):
    files = _files(tmp_path)
    verdicts = {kind: safe_io.sniff_file(path) for kind, path in files.items()}
    assert verdicts == {"html": "html", "unknown": "unknown", "safetensors": "safetensors",
                        "safetensors_as_pt": "safetensors", "zip": "zip", "pickle": "pickle"}


@pytest.mark.parametrize("head", [
    HTML,
    b"\xef\xbb\xbf\n  <!doctype HTML><html>",  # a byte-order mark and blank lines first
    b"<html><body>Quota exceeded</body></html>",
    b"\n<head><meta charset='utf-8'></head>",
])
def test_html_pages_are_recognised_first(head):
    assert safe_io.sniff(head) == "html"


def test_html_is_tried_before_the_other_kinds():
    assert safe_io.sniff(b"PK<html>") == "zip"  # a zip's magic is not HTML
    assert safe_io.sniff(b"   <html>PK") == "html"


@pytest.mark.parametrize("head", [b"", b"\x80", b"\x80\x09junk", b"PNG", bytes(64)])
def test_other_bytes_are_unknown(head):
    assert safe_io.sniff(head) == "unknown"


# --------------------------------------------------------------------------------- uploads


def test_html_upload_says_it_is_a_web_page(tmp_path, temp_dirs):
    message = _upload_error(temp_dirs, "model.pt", HTML, dest_dir=tmp_path)
    assert message.startswith("model.pt is an HTML page, probably a download quota or confirmation page — "
                              "download the file again")
    assert "pickled" not in message


def test_random_kilobyte_upload_is_not_called_a_pickle(tmp_path, temp_dirs):
    message = _upload_error(temp_dirs, "model.pt", _random_bytes(), dest_dir=tmp_path)
    assert message.startswith("model.pt is not a PyTorch or safetensors file")
    assert "pickled" not in message and "--allow-pickle" not in message
    assert not list(tmp_path.iterdir()), "nothing is saved"


def test_html_with_a_model_card_is_called_a_web_page(tmp_path, temp_dirs):
    card = ckpt.make_card(build_model("small_cnn", 6, (3, 32, 32), SPEC.mean, SPEC.std, width=4, hidden=8), "shapes")
    message = _upload_error(temp_dirs, "model.safetensors", HTML, card=card.to_json().encode(), dest_dir=tmp_path)
    assert "model.safetensors is an HTML page" in message


def test_cut_zip_upload_is_named_as_a_cut_download(tmp_path, temp_dirs):
    data = _files(tmp_path / "src")["zip"].read_bytes()
    message = _upload_error(temp_dirs, "model.pt", data[: len(data) // 2], dest_dir=tmp_path / "out")
    assert "model.pt starts like a PyTorch (zip) file but its end is missing" in message


def test_card_upload_that_does_not_fit_names_the_upload_not_the_temp_file(tmp_path, temp_dirs):
    model = build_model("small_cnn", 6, (3, 32, 32), SPEC.mean, SPEC.std, width=4, hidden=8)
    saved = ckpt.save_checkpoint(model, ckpt.make_card(model, "shapes", name="m"), tmp_path / "m")
    other = ckpt.make_card(build_model("small_cnn", 6, (3, 32, 32), SPEC.mean, SPEC.std, width=8, hidden=8), "shapes")
    message = _upload_error(temp_dirs, "mine.safetensors", saved.read_bytes(), card=other.to_json().encode(),
                            dest_dir=tmp_path / "out")
    assert "do not match the architecture" in message


def test_a_full_temporary_disk_is_a_storage_error(tmp_path, monkeypatch):
    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(StorageError, match="cannot write the upload to a temporary folder to check it: the disk is full"):
        uploads.install_upload("model.pt", HTML, arch="small_cnn", dataset="shapes", dest_dir=tmp_path)


@pytest.mark.parametrize("kind", ["safetensors", "safetensors_as_pt", "zip", "pickle"])
def test_real_weights_of_every_kind_upload(tmp_path, kind):
    path = _files(tmp_path / "src")[kind]
    saved = uploads.install_upload(path.name, path.read_bytes(), arch="small_cnn", dataset="shapes",
                                   arch_kwargs=TINY, dest_dir=tmp_path / "out")
    loaded = ckpt.load(saved)
    assert torch.equal(loaded.model.net.state_dict()["fc.weight"], _state()["fc.weight"])
    assert loaded.card.source["file"] == path.name  # the name uploaded, not a temporary path


# --------------------------------------------------------------------------------- pickles


def _pickled_objects(path: Path, zip_format: bool) -> Path:
    torch.save({"state_dict": _state(), "args": argparse.Namespace(lr=0.1)}, path,
               _use_new_zipfile_serialization=zip_format)
    return path


@pytest.mark.parametrize("zip_format", [False, True])
def test_only_real_pickles_get_the_allow_pickle_message(tmp_path, temp_dirs, zip_format):
    data = _pickled_objects(tmp_path / "obj.pt", zip_format).read_bytes()
    assert safe_io.sniff(data[:1024]) == ("zip" if zip_format else "pickle")
    with pytest.raises(UnsafeCheckpointError) as err:
        uploads.install_upload("trained.pth", data, arch="small_cnn", dataset="shapes", dest_dir=tmp_path / "out")
    message = str(err.value)
    assert message.startswith("trained.pth cannot be loaded safely: it contains pickled Python objects")
    assert "--allow-pickle" in message and "argparse.Namespace" in message
    assert not any(folder in message for folder in temp_dirs)


def test_the_explicit_opt_in_still_reads_a_pickle(tmp_path):
    data = _pickled_objects(tmp_path / "obj.pt", zip_format=False).read_bytes()
    saved = uploads.install_upload("trained.pth", data, arch="small_cnn", dataset="shapes", arch_kwargs=TINY,
                                   dest_dir=tmp_path / "out", allow_pickle=True)
    assert ckpt.load(saved).card.source["file"] == "trained.pth"


def test_random_bytes_are_never_unpickled(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(safe_io, "_parse_torch_unsafe", lambda *a: calls.append(a))
    path = tmp_path / "model.pt"
    path.write_bytes(_random_bytes(seed=2))
    with pytest.raises(CheckpointError, match="not a PyTorch or safetensors file"):
        safe_io.parse_weights(path, allow_pickle=True)
    assert calls == []


# --------------------------------------------------------------------------------- other readers


def test_direct_readers_give_the_same_verdicts(tmp_path):
    files = _files(tmp_path)
    with pytest.raises(CheckpointError, match="html.pt is an HTML page"):
        ckpt.read_weights(files["html"])
    with pytest.raises(CheckpointError, match="random.pt is not a PyTorch or safetensors file"):
        safe_io.parse_torch(files["unknown"])
    with pytest.raises(CheckpointError, match="is a safetensors file, not a PyTorch file"):
        safe_io.parse_torch(files["safetensors"])
    page = tmp_path / "page.safetensors"
    page.write_bytes(HTML)
    with pytest.raises(CheckpointError, match="page.safetensors is an HTML page"):
        safe_io.check_safetensors_header(page)
    assert set(safe_io.parse_weights(files["safetensors_as_pt"])) == set(_state())


def test_html_saved_as_our_checkpoint_is_named_when_loaded(tmp_path):
    model = build_model("small_cnn", 6, (3, 32, 32), SPEC.mean, SPEC.std, width=4, hidden=8)
    path = ckpt.save_checkpoint(model, ckpt.make_card(model, "shapes", name="m"), tmp_path / "m")
    path.write_bytes(HTML)
    with pytest.raises(CheckpointError, match=r"m.safetensors is an HTML page"):
        ckpt.load(path)
