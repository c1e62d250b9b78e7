"""The folder datasets (``imagefolder`` and ImageNet's folder layout) on faulty folders: empty
classes, classes of non-image files, damaged images, folder links that loop, and a decompression
bomb. Each gives a clear error naming the folder or file, or is skipped and counted — never a
traceback from torchvision or Pillow, never an endless walk, never a 900-megapixel decode."""
from __future__ import annotations

import io
import os
import resource
import struct
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

from engine import data as edata
from engine.data import imagefolder_spec
from engine.errors import DatasetUnavailableError, InvalidParameterError
from engine.images import MAX_FILE_SIDE

WNIDS = ("n01440764", "n01443537")  # labels 0 and 1 of the 1000


def _png(colour=(200, 30, 30), size=(20, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def _bomb_png(side: int = 30_000) -> bytes:
    """A real decompression bomb: a 1-bit ``side`` × ``side`` black PNG, all of its rows present
    (900 megapixels for 30,000), about 110 KB on disk; compressed row by row (little memory)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes((side + 7) // 8)
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _claiming(size: tuple[int, int]) -> bytes:
    """A tiny real PNG whose header (CRC fixed) claims ``size``."""
    data = bytearray(_png(size=(1, 1)))
    data[16:24] = struct.pack(">II", *size)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def _classes(root: Path, names=("cat", "dog"), per_class: int = 2) -> Path:
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / name / f"{i}.png").write_bytes(_png(colour=(40 * k, 100, 200)))
    return root


def _imagenet(tmp_path: Path) -> Path:
    _classes(tmp_path / "imagenet" / "val", WNIDS)
    return tmp_path / "imagenet" / "val"


def _load_folder(root: Path):
    return edata.load_dataset("imagefolder", root=root, image_size=16)


def _load_imagenet(tmp_path: Path):
    return edata.load_dataset("imagenet", root=tmp_path, image_size=16, resize=16)


def _index_of(dataset, file_name: str) -> int:
    return next(i for i, (path, _) in enumerate(dataset.samples) if path.endswith(file_name))


# --------------------------------------------------------------------------------- good folders


def test_a_good_folder_still_loads_in_torchvisions_order(tmp_path):
    root = _classes(tmp_path / "pets")
    (root / "dog" / "deeper").mkdir()
    (root / "dog" / "deeper" / "x.png").write_bytes(_png())
    dataset = _load_folder(root)
    assert dataset.class_names == ("cat", "dog")
    names = [os.path.relpath(p, root) for p, _ in dataset.samples]
    assert names == ["cat/0.png", "cat/1.png", "dog/0.png", "dog/1.png", "dog/deeper/x.png"]
    assert [label for _, label in dataset.samples] == [0, 0, 1, 1, 1]
    image, label = dataset[2]
    assert image.shape == (3, 16, 16) and label == 1
    assert torch.allclose(image[:, 8, 8], torch.tensor([40, 100, 200]) / 255, atol=1 / 255)
    assert dataset.listing.skipped == 0 and dataset.listing.note() == ""


def test_imagenet_layout_still_loads(tmp_path):
    _imagenet(tmp_path)
    dataset = _load_imagenet(tmp_path)
    assert len(dataset) == 4 and sorted({label for _, label in dataset.samples}) == [0, 1]
    assert dataset[0][0].shape == (3, 16, 16)


# --------------------------------------------------------------------------------- empty classes


def test_empty_class_folder_is_named(tmp_path):
    root = _classes(tmp_path / "pets")
    (root / "bird").mkdir()
    with pytest.raises(DatasetUnavailableError, match=r"class folder \S*pets/bird holds no images \(nothing: it is empty\)"):
        _load_folder(root)
    assert not edata.dataset_available("imagefolder", root)


def test_empty_imagenet_class_folder_is_named(tmp_path):
    val = _imagenet(tmp_path)
    (val / "n15075141").mkdir()
    with pytest.raises(DatasetUnavailableError, match=r"class folder \S*val/n15075141 holds no images"):
        _load_imagenet(tmp_path)


def test_class_of_non_image_files_only_is_named_with_what_it_holds(tmp_path):
    root = _classes(tmp_path / "pets")
    (root / "notes").mkdir()
    (root / "notes" / "readme.txt").write_text("hello")
    (root / "notes" / "labels.csv").write_text("a,b")
    with pytest.raises(DatasetUnavailableError, match=r"pets/notes holds no images \(only 2 other file\(s\), e.g. labels.csv, readme.txt\)"):
        imagefolder_spec(root)


def test_imagenet_class_of_non_image_files_only_is_named(tmp_path):
    val = _imagenet(tmp_path)
    (val / WNIDS[1] / "0.png").unlink()
    (val / WNIDS[1] / "1.png").rename(val / WNIDS[1] / "1.txt")
    with pytest.raises(DatasetUnavailableError, match=rf"{WNIDS[1]} holds no images \(only 1 other file\(s\), e.g. 1.txt\)"):
        _load_imagenet(tmp_path)


def test_non_image_files_beside_images_are_skipped_and_counted(tmp_path):
    root = _classes(tmp_path / "pets")
    (root / "cat" / "Thumbs.db").write_bytes(b"\0" * 10)
    (root / "dog" / "notes.txt").write_text("x")
    dataset = _load_folder(root)
    assert len(dataset) == 4 and not any(p.endswith((".db", ".txt")) for p, _ in dataset.samples)
    assert dataset.listing.skipped == 2
    assert dataset.listing.note().startswith("2 non-image file(s) skipped (e.g. ")


def test_imagenet_non_image_files_are_skipped_and_counted(tmp_path):
    val = _imagenet(tmp_path)
    (val / WNIDS[0] / "README").write_text("x")
    dataset = _load_imagenet(tmp_path)
    assert len(dataset) == 4 and dataset.listing.skipped == 1


# --------------------------------------------------------------------------------- damaged images


@pytest.mark.parametrize("file_name, data", [
    ("cut.png", _png()[:40]),  # a truncated download
    ("garbage.JPEG", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4),  # a JPEG marker, then noise
    ("random.png", bytes(range(7, 250)) * 3),
    ("empty.jpg", b""),
])
def test_damaged_image_is_named_when_read(tmp_path, file_name, data):
    root = _classes(tmp_path / "pets")
    (root / "dog" / file_name).write_bytes(data)
    dataset = _load_folder(root)
    with pytest.raises(InvalidParameterError, match=rf"pets/dog/{file_name}"):
        dataset[_index_of(dataset, file_name)]


def test_damaged_imagenet_image_is_named_when_read(tmp_path):
    val = _imagenet(tmp_path)
    (val / WNIDS[0] / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    dataset = _load_imagenet(tmp_path)
    with pytest.raises(InvalidParameterError, match="ILSVRC2012_val_00000001.JPEG"):
        dataset[_index_of(dataset, "ILSVRC2012_val_00000001.JPEG")]


def test_decompression_bomb_is_refused_from_its_header_naming_the_file(tmp_path):
    root = _classes(tmp_path / "pets")
    bomb = _bomb_png()
    assert len(bomb) < 200_000  # 900 megapixels in about 110 KB
    (root / "cat" / "bomb.png").write_bytes(bomb)
    dataset = _load_folder(root)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InvalidParameterError, match=r"pets/cat/bomb.png .*limit"):
        dataset[_index_of(dataset, "bomb.png")]
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"reading the bomb grew the process by {grown_mb:.0f} MB"


def test_imagenet_decompression_bomb_is_refused(tmp_path):
    val = _imagenet(tmp_path)
    (val / WNIDS[1] / "bomb.png").write_bytes(_claiming((30_000, 30_000)))
    dataset = _load_imagenet(tmp_path)
    with pytest.raises(InvalidParameterError, match=r"bomb.png .*too many pixels"):
        dataset[_index_of(dataset, "bomb.png")]


def test_oversize_header_below_pillows_own_limit_is_refused_by_ours(tmp_path):
    root = _classes(tmp_path / "pets")
    (root / "dog" / "long.png").write_bytes(_claiming((MAX_FILE_SIDE + 1, 10)))
    dataset = _load_folder(root)
    with pytest.raises(InvalidParameterError, match=rf"long.png is {MAX_FILE_SIDE + 1}×10 pixels; the limit is {MAX_FILE_SIDE}"):
        dataset[_index_of(dataset, "long.png")]


# --------------------------------------------------------------------------------- folder links


@pytest.mark.timeout(60)
def test_link_to_a_parent_folder_is_not_followed(tmp_path):
    root = _classes(tmp_path / "pets")
    (root / "cat" / "sub").mkdir()
    (root / "cat" / "sub" / "2.png").write_bytes(_png())
    (root / "cat" / "sub" / "up").symlink_to(root / "cat", target_is_directory=True)
    (root / "cat" / "sub" / "up2").symlink_to("..", target_is_directory=True)  # two loops: 2^40 walks unchecked
    (root / "dog" / "root").symlink_to(root, target_is_directory=True)
    dataset = _load_folder(root)
    assert len(dataset) == 5  # each image once
    assert dataset.listing.loops == 3 and "3 folder link(s) not followed" in dataset.listing.note()


@pytest.mark.timeout(60)
def test_imagenet_link_loop_ends(tmp_path):
    val = _imagenet(tmp_path)
    (val / WNIDS[0] / "loop").symlink_to(val / WNIDS[0], target_is_directory=True)
    dataset = _load_imagenet(tmp_path)
    assert len(dataset) == 4 and dataset.listing.loops == 1


@pytest.mark.timeout(60)
def test_class_of_only_a_loop_is_named(tmp_path):
    root = _classes(tmp_path / "pets")
    (root / "bird").mkdir()
    (root / "bird" / "self").symlink_to(root / "bird", target_is_directory=True)
    with pytest.raises(DatasetUnavailableError, match=r"pets/bird holds no images \(only link\(s\) back into folders already read\)"):
        _load_folder(root)


def test_link_to_another_folder_is_followed_as_torchvision_does(tmp_path):
    root = _classes(tmp_path / "pets")
    extra = _classes(tmp_path / "more", ("cats",), per_class=3) / "cats"
    (root / "cat" / "extra").symlink_to(extra, target_is_directory=True)
    dataset = _load_folder(root)
    assert len(dataset) == 7 and sum(label == 0 for _, label in dataset.samples) == 5
