"""Real image datasets: MNIST and Fashion-MNIST (through torchvision) and CIFAR-10 (binary format).

Files live under the data root (``$ROBUSTSCOPE_DATA``, else ``./data``) in torchvision's layout:
``<root>/MNIST/raw/...``, ``<root>/FashionMNIST/raw/...`` and ``<root>/cifar-10-batches-bin/...``.
Missing files are downloaded when ``download=True`` (torchvision shows the progress); when that
fails the error names the files and the variable, so an offline user knows what to copy where.

CIFAR-10 is read from its documented *binary* release, never from the Python pickles: each record
is 1 label byte followed by 3072 pixel bytes (the 1024 red, then green, then blue values of a
32x32 image, row-major).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torchvision import datasets
from torchvision.datasets.utils import download_and_extract_archive

from engine.data.base import (
    DATA_ENV,
    DatasetSpec,
    TensorImageDataset,
    check_split,
    resolve_root,
)
from engine.errors import DatasetUnavailableError

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
_TORCHVISION_CLASSES: dict[str, type[datasets.MNIST]] = {
    "mnist": datasets.MNIST,
    "fashion-mnist": datasets.FashionMNIST,
}


def _raw_folder(name: str, root: Path) -> Path:
    return root / _TORCHVISION_CLASSES[name].__name__ / "raw"


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


def _open_torchvision(name: str, split: str, root: Path, download: bool) -> datasets.MNIST:
    cls = _TORCHVISION_CLASSES[name]
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
}
