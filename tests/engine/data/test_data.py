"""engine.data: the registry, take(), CIFAR-10 binary files, MNIST, imagefolder, offline errors."""
from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset

import engine.data.vision as vision
from engine.data import (
    DATASETS,
    DatasetSpec,
    data_root,
    dataset_available,
    get_spec,
    imagefolder_spec,
    load_dataset,
    take,
)
from engine.errors import DatasetUnavailableError, InvalidParameterError

CONTRACT_ARCHS = {"small_cnn", "cifar_resnet", "resnet18", "resnet50"}


# ----------------------------------------------------------------------------- registry


def test_registry_has_the_contract_names():
    assert set(DATASETS) == {"shapes", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagenet"}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_spec_fields(name):
    spec = get_spec(name)
    assert isinstance(spec, DatasetSpec) and spec.name == name
    assert spec.num_classes == len(spec.class_names) == len(set(spec.class_names)) >= 2
    assert all(isinstance(c, str) and c for c in spec.class_names)
    channels, height, width = spec.input_shape
    assert channels in (1, 3) and height == width >= 16
    assert len(spec.mean) == len(spec.std) == channels
    assert all(0 < m < 1 for m in spec.mean) and all(0 < s < 1 for s in spec.std)
    assert spec.default_arch in CONTRACT_ARCHS and spec.description
    with pytest.raises(Exception):  # frozen
        spec.num_classes = 3  # type: ignore[misc]


def test_known_spec_values():
    assert get_spec("mnist").input_shape == (1, 28, 28)
    assert get_spec("cifar10").class_names[0] == "airplane" and get_spec("cifar10").default_arch == "cifar_resnet"
    assert get_spec("fashion-mnist").class_names[-1] == "Ankle boot"


def test_unknown_names_raise_listing_the_choices():
    with pytest.raises(InvalidParameterError, match="mnist.*cifar10|cifar10.*mnist"):
        get_spec("tiny-imagenet")
    with pytest.raises(InvalidParameterError, match="imagefolder_spec"):
        get_spec("imagefolder")
    with pytest.raises(InvalidParameterError, match="unknown dataset 'svhn'"):
        load_dataset("svhn")
    with pytest.raises(InvalidParameterError, match="unknown dataset"):
        dataset_available("svhn")


def test_bad_split_and_options():
    with pytest.raises(InvalidParameterError, match="split"):
        load_dataset("shapes", "validation")
    with pytest.raises(InvalidParameterError, match="does not take option.*variant"):
        load_dataset("mnist", variant="silhouette")
    with pytest.raises(InvalidParameterError, match="colour"):
        load_dataset("shapes", n=4, colour=True)


def test_data_root_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ROBUSTSCOPE_DATA", raising=False)
    assert data_root() == Path("data")
    monkeypatch.setenv("ROBUSTSCOPE_DATA", str(tmp_path))
    assert data_root() == tmp_path


def test_availability_on_an_empty_root(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTSCOPE_DATA", str(tmp_path))
    assert dataset_available("shapes")
    for name in ("mnist", "fashion-mnist", "cifar10", "imagefolder"):
        assert not dataset_available(name)
        assert not dataset_available(name, tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing created, nothing downloaded


# ----------------------------------------------------------------------------- take


class _ListDataset(Dataset):
    """A plain dataset (not tensor-backed): image i is filled with i/100, label i % 3."""

    def __len__(self):
        return 40

    def __getitem__(self, i):
        return torch.full((1, 4, 4), i / 100), i % 3


def test_take_first_n_and_seeded_subset():
    ds = load_dataset("shapes", n=60, seed=1)
    images, labels = take(ds, 10)
    assert images.shape == (10, 3, 32, 32) and labels.dtype == torch.long
    assert torch.equal(images[4], ds[4][0]) and labels.tolist() == ds.labels[:10].tolist()
    a, la = take(ds, 20, seed=3)
    b, lb = take(ds, 20, seed=3)
    c, _ = take(ds, 20, seed=4)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, c)
    # a subset of distinct dataset items, with matching labels
    index = {ds[i][0].numpy().tobytes(): i for i in range(len(ds))}
    picked = [index[x.numpy().tobytes()] for x in a]
    assert len(set(picked)) == 20 and sorted(picked) != list(range(20))
    assert la.tolist() == [int(ds.labels[i]) for i in picked]


def test_take_on_a_plain_dataset_uses_the_same_indices():
    ds = _ListDataset()
    images, labels = take(ds, 5, seed=9)
    expected = torch.randperm(40, generator=torch.Generator().manual_seed(9))[:5]
    assert torch.allclose(images[:, 0, 0, 0], expected.float() / 100)
    assert labels.tolist() == (expected % 3).tolist()
    assert take(ds, 3)[1].tolist() == [0, 1, 2]


@pytest.mark.parametrize("n", [0, 41, -1, 2.5])
def test_take_rejects_bad_n(n):
    with pytest.raises(InvalidParameterError, match="n must be"):
        take(_ListDataset(), n)


# ----------------------------------------------------------------------------- CIFAR-10 binary


def _write_cifar(root: Path, counts: dict[str, int], seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write CIFAR-10 binary batches (1 label byte + R, G, B 32x32 planes per record)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    written = {}
    for filename, count in counts.items():
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        pixels = rng.integers(0, 256, (count, 3, 32, 32), dtype=np.uint8)
        records = np.concatenate([labels[:, None], pixels.reshape(count, -1)], axis=1)
        (folder / filename).write_bytes(records.tobytes())
        written[filename] = (pixels, labels)
    return written


CIFAR_COUNTS = {f"data_batch_{i}.bin": i + 1 for i in range(1, 6)} | {"test_batch.bin": 4}


def test_cifar10_binary_round_trip(tmp_path):
    written = _write_cifar(tmp_path, CIFAR_COUNTS)
    assert dataset_available("cifar10", tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path, download=False)
    pixels, labels = written["test_batch.bin"]
    images, got = take(test, 4)
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert torch.equal((images * 255).round().to(torch.uint8), torch.from_numpy(pixels))
    assert got.tolist() == labels.tolist()
    # plane order: byte 1 + c*1024 + row*32 + col is channel c (R, G, B) at (row, col)
    raw = (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").read_bytes()
    assert round(float(test[1][0][2, 5, 7]) * 255) == raw[3073 + 1 + 2 * 1024 + 5 * 32 + 7]
    train = load_dataset("cifar10", "train", root=tmp_path, download=False)
    assert len(train) == sum(range(2, 7))
    all_labels = np.concatenate([written[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    assert train.labels.tolist() == all_labels.tolist()
    assert train.spec.class_names == get_spec("cifar10").class_names


def test_cifar10_class_names_from_meta(tmp_path):
    _write_cifar(tmp_path, {"test_batch.bin": 2})
    names = [f"c{i}" for i in range(10)]
    (tmp_path / "cifar-10-batches-bin" / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    ds = load_dataset("cifar10", root=tmp_path, download=False)
    assert ds.spec.class_names == tuple(names)


def test_cifar10_corrupt_file(tmp_path):
    _write_cifar(tmp_path, {"test_batch.bin": 2})
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DatasetUnavailableError, match=r"corrupt.*6141 bytes.*3073"):
        load_dataset("cifar10", root=tmp_path, download=False)
    record = bytearray(3073)
    record[0] = 12  # label out of range
    path.write_bytes(bytes(record))
    with pytest.raises(DatasetUnavailableError, match="label 12"):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_cifar10_failed_download_names_files_and_variable(tmp_path, monkeypatch):
    calls = []

    def offline(url, download_root, md5=None, **kwargs):
        calls.append((url, download_root, md5))
        raise URLError("no network")

    monkeypatch.setattr(vision, "download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset("cifar10", "train", root=tmp_path)
    message = str(info.value)
    assert "ROBUSTSCOPE_DATA" in message and "no network" in message
    for i in range(1, 6):
        assert str(tmp_path / "cifar-10-batches-bin" / f"data_batch_{i}.bin") in message
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", str(tmp_path),
                      "c32a1d4ab5d03f1284b67883e8d87530")]


# ----------------------------------------------------------------------------- MNIST family


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_idx_failed_download_names_files_and_variable(name, folder, tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(url, *args, **kwargs):
        raise URLError(f"no network for {url}")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(DatasetUnavailableError) as info:
        load_dataset(name, root=tmp_path)
    message = str(info.value)
    assert "ROBUSTSCOPE_DATA" in message and "download failed" in message
    for filename in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert str(tmp_path / folder / "raw" / filename) in message
    assert not dataset_available(name, tmp_path)


def test_idx_missing_without_download(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="download=False"):
        load_dataset("mnist", root=tmp_path, download=False)
    assert list(tmp_path.iterdir()) == []


def test_mnist_real_offline_copy(real_data_root, monkeypatch):
    monkeypatch.setenv("ROBUSTSCOPE_DATA", str(real_data_root))
    assert dataset_available("mnist") and dataset_available("fashion-mnist")
    ds = load_dataset("mnist", "test", download=False)
    assert len(ds) == 10000 and ds.spec == get_spec("mnist")
    image, label = ds[0]
    assert label == 7 and image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert 0.0 == image.min() and image.max() == 1.0
    images, _ = take(ds, 2000, seed=0)
    assert images.mean().item() == pytest.approx(0.13, abs=0.01)
    fashion = load_dataset("fashion-mnist", "test", download=False)
    assert torch.bincount(fashion.labels).tolist() == [1000] * 10


# ----------------------------------------------------------------------------- imagefolder


def _write_folder(root: Path) -> Path:
    colours = {"cat": (255, 0, 0), "dog": (0, 128, 255)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 30), colour).save(root / name / f"{i}.png")
    (root / "cat" / "readme.txt").write_text("not an image")  # skipped and counted
    (root / ".cache").mkdir()  # hidden: not a class
    return root


def test_imagefolder_spec_and_loading(tmp_path):
    root = _write_folder(tmp_path / "pets")
    spec = imagefolder_spec(root, image_size=24)
    assert spec.class_names == ("cat", "dog") and spec.num_classes == 2
    assert spec.input_shape == (3, 24, 24) and spec.mean == (0.485, 0.456, 0.406)
    ds = load_dataset("imagefolder", root=root, image_size=24)
    assert len(ds) == 4 and ds.spec == spec
    assert ds.listing.skipped == 1 and "1 non-image file(s) skipped" in ds.listing.note()
    images, labels = take(ds, 4)
    assert images.shape == (4, 3, 24, 24) and labels.tolist() == [0, 0, 1, 1]
    assert torch.allclose(images[3], torch.tensor([0.0, 128 / 255, 1.0])[:, None, None].expand(3, 24, 24))
    assert dataset_available("imagefolder", root)


def test_imagefolder_split_subfolders(tmp_path):
    _write_folder(tmp_path / "set" / "train")
    _write_folder(tmp_path / "set" / "val")
    (tmp_path / "set" / "val" / "dog" / "0.png").unlink()
    assert len(load_dataset("imagefolder", "test", root=tmp_path / "set", image_size=16)) == 3
    assert len(load_dataset("imagefolder", "train", root=tmp_path / "set", image_size=16)) == 4


def test_imagefolder_errors(tmp_path):
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        load_dataset("imagefolder", root=tmp_path / "missing")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DatasetUnavailableError, match="class folder .*cls holds no images"):
        imagefolder_spec(tmp_path / "empty")
    with pytest.raises(DatasetUnavailableError, match="no class sub-folders with images"):
        imagefolder_spec(tmp_path / "empty" / "cls")
    root = _write_folder(tmp_path / "bad")
    (root / "cat" / "broken.png").write_bytes(b"not a png at all")
    ds = load_dataset("imagefolder", root=root, image_size=16)
    broken = [i for i, (path, _) in enumerate(ds.samples) if path.endswith("broken.png")][0]
    with pytest.raises(InvalidParameterError, match="broken.png"):
        ds[broken]
    with pytest.raises(InvalidParameterError, match="image_size"):
        imagefolder_spec(root, image_size=4)


def test_tensor_dataset_keeps_float_images_in_unit_range():
    from engine.data import TensorImageDataset

    spec = get_spec("shapes")
    floats = torch.rand(5, 3, 4, 4, dtype=torch.float64)
    ds = TensorImageDataset(floats, torch.arange(5), spec)
    image, label = ds[2]
    assert image.dtype == torch.float32 and torch.allclose(image, floats[2].float()) and label == 2
    image.zero_()  # items are copies: the stored images do not change
    assert torch.allclose(ds[2][0], floats[2].float())
    x, y = ds.batch(torch.tensor([4, 0]))
    assert torch.allclose(x, floats[[4, 0]].float()) and y.tolist() == [4, 0]
    uint8 = TensorImageDataset((floats * 255).round().to(torch.uint8), torch.arange(5), spec)
    assert torch.allclose(uint8[1][0], floats[1].float(), atol=1 / 255)
    for bad, needle in ((floats * 2, r"\[0, 1\]"), (floats[0], "shape"), (floats.long(), "uint8 or float")):
        with pytest.raises(InvalidParameterError, match=needle):
            TensorImageDataset(bad, torch.arange(len(bad)), spec)
