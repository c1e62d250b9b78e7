"""Real image datasets: MNIST and Fashion-MNIST (through torchvision), CIFAR-10 and CIFAR-100
(binary formats).

Files live under the data root (``$ROBUSTSCOPE_DATA``, else ``./data``) in torchvision's layout:
``<root>/MNIST/raw/...``, ``<root>/FashionMNIST/raw/...``, ``<root>/cifar-10-batches-bin/...`` and
``<root>/cifar-100-binary/...`` (the folders the official archives unpack to).
Missing files are downloaded when ``download=True`` (torchvision shows the progress); when that
fails the error names the files and the variable, so an offline user knows what to copy where.

CIFAR-10 is read from its documented *binary* release, never from the Python pickles: each record
is 1 label byte followed by 3072 pixel bytes (the 1024 red, then green, then blue values of a
32x32 image, row-major). CIFAR-100's binary release (``train.bin``, ``test.bin``) has 1 coarse
label byte, 1 fine label byte, then the same 3072 pixel bytes; its label names are in
``coarse_label_names.txt`` and ``fine_label_names.txt``.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from engine.data.base import (
    DATA_ENV,
    DatasetSpec,
    TensorImageDataset,
    check_split,
    resolve_root,
)
from engine.errors import DatasetUnavailableError, InvalidParameterError

MNIST_SPEC = DatasetSpec(
    name="mnist",
    num_classes=10,
    class_names=tuple(str(d) for d in range(10)),
    input_shape=(1, 28, 28),
    mean=(0.1307,),
    std=(0.3081,),
    default_arch="small_cnn",
    description="MNIST handwritten digits, 60,000 train / 10,000 test 28x28 grey (LeCun et al. 1998)",
)
FASHION_MNIST_SPEC = DatasetSpec(
    name="fashion-mnist",
    num_classes=10,
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    input_shape=(1, 28, 28),
    mean=(0.2860,),
    std=(0.3530,),
    default_arch="small_cnn",
    description="Fashion-MNIST clothing, 60,000 train / 10,000 test 28x28 grey (Xiao et al. 2017)",
)
CIFAR10_SPEC = DatasetSpec(
    name="cifar10",
    num_classes=10,
    class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"),
    input_shape=(3, 32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    default_arch="cifar_resnet",
    description="CIFAR-10, 50,000 train / 10,000 test 32x32 colour (Krizhevsky 2009)",
)

# ----------------------------------------------------------------------------- MNIST family

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
#: torchvision's dataset class of each name (its name is also the data folder's)
_TORCHVISION_CLASSES: dict[str, str] = {
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
}


def download_and_extract_archive(url: str, download_root: str, md5: str | None = None, **kwargs) -> None:
    """torchvision's downloader (imported only when something is downloaded)."""
    from torchvision.datasets.utils import download_and_extract_archive as download

    download(url, download_root=download_root, md5=md5, **kwargs)


def _raw_folder(name: str, root: Path) -> Path:
    return root / _TORCHVISION_CLASSES[name] / "raw"


def idx_files(name: str, root: str | Path | None = None) -> list[Path]:
    """The four IDX files torchvision needs for ``name`` ("mnist" or "fashion-mnist")."""
    folder = _raw_folder(name, resolve_root(root))
    return [folder / f for split in ("train", "test") for f in _IDX_FILES[split]]


def _unavailable(name: str, files: list[Path], reason: str) -> DatasetUnavailableError:
    listing = "\n  ".join(str(f) for f in files)
    return DatasetUnavailableError(
        f"dataset {name!r} is not available: {reason}. Expected files:\n  {listing}\n"
        f"Put them there (or set {DATA_ENV} to a folder that has them) and try again; "
        f"with a network connection they are downloaded automatically."
    )


def _open_torchvision(name: str, split: str, root: Path, download: bool):
    from torchvision import datasets

    cls = getattr(datasets, _TORCHVISION_CLASSES[name])
    files = idx_files(name, root)
    if all(f.is_file() for f in files):
        return cls(str(root), train=split == "train", download=False)
    if not download:
        raise _unavailable(name, files, "its files are missing and download=False")
    try:
        return cls(str(root), train=split == "train", download=True)
    except (RuntimeError, OSError) as exc:
        raise _unavailable(name, files, f"its files are missing and the download failed ({exc})") from exc


def load_idx_dataset(name: str, split: str = "test", root: str | Path | None = None,
                     download: bool = True) -> TensorImageDataset:
    """Load MNIST or Fashion-MNIST as an in-memory dataset of (1, 28, 28) images in [0, 1].

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        split: ``"train"`` (60,000) or ``"test"`` (10,000).
        root: data root; None means :func:`engine.data.data_root`.
        download: try to download missing files (with torchvision's progress output).

    Raises:
        DatasetUnavailableError: files missing and not downloadable; names the files and
            ``ROBUSTSCOPE_DATA``.
    """
    check_split(split)
    ds = _open_torchvision(name, split, resolve_root(root), download)
    spec = MNIST_SPEC if name == "mnist" else FASHION_MNIST_SPEC
    return TensorImageDataset(ds.data[:, None].contiguous(), ds.targets, spec)


# ----------------------------------------------------------------------------- CIFAR-10

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_BATCHES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
_RECORD = 1 + 3 * 32 * 32


def cifar10_files(root: str | Path | None = None, split: str | None = None) -> list[Path]:
    """The CIFAR-10 binary batch files of ``split`` (both splits when None)."""
    folder = resolve_root(root) / CIFAR10_FOLDER
    splits = ("train", "test") if split is None else (check_split(split),)
    return [folder / f for s in splits for f in CIFAR10_BATCHES[s]]


def read_cifar10_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one CIFAR-10 binary batch file.

    Returns:
        ``(images uint8 (N, 3, 32, 32), labels long (N,))``.

    Raises:
        DatasetUnavailableError: the file is empty, truncated (size not a multiple of 3073 bytes)
            or holds a label outside 0..9.
    """
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD:
        raise DatasetUnavailableError(
            f"CIFAR-10 file {path} is corrupt: {raw.size} bytes is not a positive multiple of "
            f"{_RECORD} (1 label byte + 3072 pixel bytes per image). Delete it and download again."
        )
    records = raw.reshape(-1, _RECORD)
    labels = torch.from_numpy(records[:, 0].astype(np.int64))
    if int(labels.max()) >= 10:
        raise DatasetUnavailableError(
            f"CIFAR-10 file {path} is corrupt: label {int(labels.max())} outside 0..9"
        )
    images = torch.from_numpy(records[:, 1:].reshape(-1, 3, 32, 32).copy())
    return images, labels


def cifar10_class_names(root: str | Path | None = None) -> tuple[str, ...]:
    """Class names from ``batches.meta.txt`` when present and well-formed, else the standard ten."""
    meta = resolve_root(root) / CIFAR10_FOLDER / "batches.meta.txt"
    if not meta.is_file():
        return CIFAR10_SPEC.class_names
    names = tuple(line.strip() for line in meta.read_text(errors="replace").splitlines() if line.strip())
    return names if len(names) == 10 else CIFAR10_SPEC.class_names


def _download_cifar10(root: Path) -> None:
    download_and_extract_archive(CIFAR10_URL, download_root=str(root), md5=CIFAR10_MD5)


def load_cifar10(split: str = "test", root: str | Path | None = None,
                 download: bool = True) -> TensorImageDataset:
    """Load CIFAR-10 from its binary release as (3, 32, 32) images in [0, 1].

    Args:
        split: ``"train"`` (data_batch_1..5, 50,000) or ``"test"`` (test_batch, 10,000).
        root: data root holding ``cifar-10-batches-bin/``; None means ``data_root()``.
        download: fetch and unpack ``cifar-10-binary.tar.gz`` (md5-checked) if files are missing.

    Raises:
        DatasetUnavailableError: files missing and not downloadable, or a file is corrupt.
    """
    check_split(split)
    root = resolve_root(root)
    files = cifar10_files(root, split)
    if not all(f.is_file() for f in files):
        _fetch(root, files, download)
    images, labels = zip(*(read_cifar10_batch(f) for f in files))
    spec = CIFAR10_SPEC
    names = cifar10_class_names(root)
    if names != spec.class_names:
        spec = replace(spec, class_names=names)
    return TensorImageDataset(torch.cat(images), torch.cat(labels), spec)


def _fetch(root: Path, files: list[Path], download: bool) -> None:
    if not download:
        raise _unavailable("cifar10", files, "its files are missing and download=False")
    try:
        _download_cifar10(root)
    except (RuntimeError, OSError) as exc:
        raise _unavailable("cifar10", files, f"its files are missing and the download failed ({exc})") from exc
    if not all(f.is_file() for f in files):
        raise _unavailable("cifar10", files, "the downloaded archive did not contain them")


# ----------------------------------------------------------------------------- CIFAR-100

CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"
CIFAR100_MD5 = "03b5dce01913d631647c71ecec9e9cb8"
CIFAR100_FOLDER = "cifar-100-binary"
CIFAR100_FILES = {"train": "train.bin", "test": "test.bin"}
CIFAR100_FINE_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)
CIFAR100_COARSE_NAMES = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)
CIFAR100_SPEC = DatasetSpec(
    name="cifar100",
    num_classes=100,
    class_names=CIFAR100_FINE_NAMES,
    input_shape=(3, 32, 32),
    mean=(0.5071, 0.4865, 0.4409),
    std=(0.2673, 0.2564, 0.2762),
    default_arch="cifar_resnet",
    description="CIFAR-100, 50,000 train / 10,000 test 32x32 colour, 100 fine / 20 coarse classes (Krizhevsky 2009)",
)
CIFAR100_COARSE_SPEC = replace(
    CIFAR100_SPEC, num_classes=20, class_names=CIFAR100_COARSE_NAMES,
    description="CIFAR-100 with its 20 coarse labels (superclasses)",
)
_RECORD100 = 2 + 3 * 32 * 32
LABEL_TYPES = ("fine", "coarse")


class Cifar100Dataset(TensorImageDataset):
    """CIFAR-100 images with their fine labels (or coarse, see ``label_type``) and both label sets.

    Attributes:
        fine_labels, coarse_labels: (N,) long tensors, whatever ``labels`` yields.
        fine_names, coarse_names: the 100 and 20 label names.
    """

    def __init__(self, images, fine, coarse, spec, fine_names, coarse_names):
        super().__init__(images, coarse if spec.num_classes == 20 else fine, spec)
        self.fine_labels, self.coarse_labels = fine.long(), coarse.long()
        self.fine_names, self.coarse_names = tuple(fine_names), tuple(coarse_names)


def cifar100_files(root: str | Path | None = None, split: str | None = None) -> list[Path]:
    """The CIFAR-100 binary file of ``split`` (both splits when None)."""
    folder = resolve_root(root) / CIFAR100_FOLDER
    splits = ("train", "test") if split is None else (check_split(split),)
    return [folder / CIFAR100_FILES[s] for s in splits]


def read_cifar100_file(path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Read a CIFAR-100 binary file.

    Returns:
        ``(images uint8 (N, 3, 32, 32), fine labels long (N,), coarse labels long (N,))``.

    Raises:
        DatasetUnavailableError: empty or truncated file (size not a multiple of 3074 bytes), or a
            label out of range (fine 0..99, coarse 0..19).
    """
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % _RECORD100:
        raise DatasetUnavailableError(
            f"CIFAR-100 file {path} is corrupt: {raw.size} bytes is not a positive multiple of "
            f"{_RECORD100} (coarse label byte + fine label byte + 3072 pixel bytes per image). "
            "Delete it and download again."
        )
    records = raw.reshape(-1, _RECORD100)
    coarse = torch.from_numpy(records[:, 0].astype(np.int64))
    fine = torch.from_numpy(records[:, 1].astype(np.int64))
    if int(coarse.max()) >= 20 or int(fine.max()) >= 100:
        raise DatasetUnavailableError(
            f"CIFAR-100 file {path} is corrupt: labels out of range (coarse max {int(coarse.max())}, fine max {int(fine.max())})"
        )
    images = torch.from_numpy(records[:, 2:].reshape(-1, 3, 32, 32).copy())
    return images, fine, coarse


def _names_file(path: Path, default: tuple[str, ...]) -> tuple[str, ...]:
    if not path.is_file():
        return default
    names = tuple(line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip())
    return names if len(names) == len(default) else default


def cifar100_class_names(root: str | Path | None = None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(fine names, coarse names)`` from the release's text files when well-formed, else the standard ones."""
    folder = resolve_root(root) / CIFAR100_FOLDER
    return (_names_file(folder / "fine_label_names.txt", CIFAR100_FINE_NAMES),
            _names_file(folder / "coarse_label_names.txt", CIFAR100_COARSE_NAMES))


def _download_cifar100(root: Path) -> None:
    download_and_extract_archive(CIFAR100_URL, download_root=str(root), md5=CIFAR100_MD5)


def load_cifar100(split: str = "test", root: str | Path | None = None, download: bool = True,
                  label_type: str = "fine") -> Cifar100Dataset:
    """Load CIFAR-100 from its binary release as (3, 32, 32) images in [0, 1].

    Args:
        split: ``"train"`` (train.bin, 50,000) or ``"test"`` (test.bin, 10,000).
        root: data root holding ``cifar-100-binary/``; None means ``data_root()``.
        download: fetch and unpack ``cifar-100-binary.tar.gz`` (md5-checked) if files are missing.
        label_type: ``"fine"`` (100 classes, the default and what models are trained on) or
            ``"coarse"`` (the 20 superclasses); both label sets are attributes of the result.

    Raises:
        InvalidParameterError: unknown split or label type.
        DatasetUnavailableError: files missing and not downloadable, or a file is corrupt.
    """
    check_split(split)
    if label_type not in LABEL_TYPES:
        raise InvalidParameterError(f"label_type must be one of {', '.join(LABEL_TYPES)}, got {label_type!r}")
    root = resolve_root(root)
    files = cifar100_files(root, split)
    if not all(f.is_file() for f in files):
        if not download:
            raise _unavailable("cifar100", files, "its files are missing and download=False")
        try:
            _download_cifar100(root)
        except (RuntimeError, OSError) as exc:
            raise _unavailable("cifar100", files, f"its files are missing and the download failed ({exc})") from exc
        if not all(f.is_file() for f in files):
            raise _unavailable("cifar100", files, "the downloaded archive did not contain them")
    images, fine, coarse = read_cifar100_file(files[0])
    fine_names, coarse_names = cifar100_class_names(root)
    base = CIFAR100_SPEC if label_type == "fine" else CIFAR100_COARSE_SPEC
    names = fine_names if label_type == "fine" else coarse_names
    spec = base if names == base.class_names else replace(base, class_names=names)
    return Cifar100Dataset(images, fine, coarse, spec, fine_names, coarse_names)


def cifar100_available(root: str | Path | None = None) -> bool:
    """True when both CIFAR-100 binary files are on disk (no download attempted)."""
    return all(f.is_file() for f in cifar100_files(root))


# ----------------------------------------------------------------------------- registry hooks


def mnist_available(root: str | Path | None = None) -> bool:
    """True when all MNIST IDX files are on disk (no download attempted)."""
    return all(f.is_file() for f in idx_files("mnist", root))


def fashion_mnist_available(root: str | Path | None = None) -> bool:
    """True when all Fashion-MNIST IDX files are on disk (no download attempted)."""
    return all(f.is_file() for f in idx_files("fashion-mnist", root))


def cifar10_available(root: str | Path | None = None) -> bool:
    """True when all six CIFAR-10 binary batches are on disk (no download attempted)."""
    return all(f.is_file() for f in cifar10_files(root))


def load_mnist(split: str = "test", root=None, download: bool = True) -> TensorImageDataset:
    """MNIST; see :func:`load_idx_dataset`."""
    return load_idx_dataset("mnist", split, root, download)


def load_fashion_mnist(split: str = "test", root=None, download: bool = True) -> TensorImageDataset:
    """Fashion-MNIST; see :func:`load_idx_dataset`."""
    return load_idx_dataset("fashion-mnist", split, root, download)


LOADERS: dict[str, Callable[..., TensorImageDataset]] = {
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
}
