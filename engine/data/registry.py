"""The dataset registry: name -> spec, loader and availability check, plus ``take``.

Plain dicts keyed by the same names fill the dashboard's select boxes and parametrise the
tests; the names are also in ``engine.catalogue`` (``DATASETS``, ``LOADABLE_DATASETS``) for code
that needs no torch. A new dataset is one entry in each dict and one name in the catalogue; the
registry checks that they agree when it is imported.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import Dataset

from engine.catalogue import DATASETS as DATASET_NAMES, LOADABLE_DATASETS, require_names
import engine.data.imagefolder as imagefolder
import engine.data.imagenet as imagenet
import engine.data.shapes as shapes
import engine.data.vision as vision
from engine.data.base import DatasetSpec, TensorImageDataset, check_no_options
from engine.errors import InvalidParameterError

DATASETS: dict[str, DatasetSpec] = {
    "shapes": shapes.SPEC,
    "mnist": vision.MNIST_SPEC,
    "fashion-mnist": vision.FASHION_MNIST_SPEC,
    "cifar10": vision.CIFAR10_SPEC,
    "cifar100": vision.CIFAR100_SPEC,
    "imagenet": imagenet.SPEC,
}

LOADERS: dict[str, Callable[..., Dataset]] = {
    "shapes": lambda split, root, download, **options: shapes.load_shapes(split, **options),
    "mnist": vision.load_mnist,
    "fashion-mnist": vision.load_fashion_mnist,
    "cifar10": vision.load_cifar10,
    "cifar100": vision.load_cifar100,
    "imagenet": imagenet.load_imagenet,
    "imagefolder": imagefolder.load_imagefolder,
}

AVAILABLE: dict[str, Callable[[str | Path | None], bool]] = {
    "shapes": lambda root: True,
    "mnist": vision.mnist_available,
    "fashion-mnist": vision.fashion_mnist_available,
    "cifar10": vision.cifar10_available,
    "cifar100": vision.cifar100_available,
    "imagenet": imagenet.imagenet_available,
    "imagefolder": imagefolder.imagefolder_available,
}

# Keyword options each loader takes (anything else is a user error, reported by name).
OPTIONS: dict[str, tuple[str, ...]] = {
    "shapes": ("n", "variant", "texture_rate", "texture_contrast", "seed", "image_size"),
    "mnist": (),
    "fashion-mnist": (),
    "cifar10": (),
    "cifar100": ("label_type",),
    "imagenet": ("image_size", "resize", "interpolation"),
    "imagefolder": ("image_size",),
}

require_names(DATASETS, DATASET_NAMES, "engine.data.DATASETS vs engine.catalogue.DATASETS")
for _registry, _name in ((LOADERS, "LOADERS"), (AVAILABLE, "AVAILABLE"), (OPTIONS, "OPTIONS")):
    require_names(_registry, LOADABLE_DATASETS, f"engine.data.registry.{_name} vs engine.catalogue.LOADABLE_DATASETS")
del _registry, _name


def _check_name(name: str) -> str:
    if name not in LOADERS:
        raise InvalidParameterError(
            f"unknown dataset {name!r}; choose one of {', '.join(LOADERS)}"
        )
    return name


def get_spec(name: str) -> DatasetSpec:
    """Return the :class:`DatasetSpec` registered as ``name``.

    ``"imagefolder"`` has no fixed spec (it depends on the folder): use
    :func:`engine.data.imagefolder_spec`. Unknown names raise InvalidParameterError listing them.
    """
    if name == "imagefolder":
        raise InvalidParameterError(
            "the 'imagefolder' spec depends on the folder; use imagefolder_spec(root, image_size)"
        )
    if name not in DATASETS:
        raise InvalidParameterError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


#: Datasets that are never downloaded (their files must be put in place by hand).
NOT_DOWNLOADABLE = ("imagenet", "imagefolder")


def dataset_available(name: str, root: str | Path | None = None) -> bool:
    """True when ``name`` can be loaded without a download (files on disk; ``shapes`` always).

    Cheap: it only checks that files exist. ``root`` defaults to ``data_root()`` (for
    ``imagefolder``: the folder itself, default ``<data root>/imagefolder``).
    """
    return AVAILABLE[_check_name(name)](root)


def load_dataset(name: str, split: str = "test", root: str | Path | None = None,
                 download: bool = True, **options) -> Dataset:
    """Load a dataset split yielding ``(image (C, H, W) float32 in [0, 1], int label)``.

    Args:
        name: a key of ``DATASETS`` or ``"imagefolder"``.
        split: ``"train"`` or ``"test"``.
        root: data root (default ``$ROBUSTSCOPE_DATA``, else ``./data``); for ``imagefolder`` the
            image folder itself.
        download: download missing files when possible (torchvision sets; shows progress).
        **options: per dataset, see ``OPTIONS``: ``shapes`` takes ``n``, ``variant``,
            ``texture_rate``, ``texture_contrast``, ``seed``, ``image_size`` (see :func:`engine.data.shapes.load_shapes`);
            ``imagefolder`` takes ``image_size``; ``cifar100`` takes ``label_type`` ("fine"/"coarse");
            ``imagenet`` takes ``image_size``, ``resize``, ``interpolation`` (see
            :func:`engine.data.imagenet.load_imagenet`; :func:`engine.data.imagenet.loader_options`
            reads them from a model card). ImageNet is never downloaded.

    Returns:
        A ``torch.utils.data.Dataset`` with a ``spec`` attribute.

    Raises:
        InvalidParameterError: unknown name, split or option.
        DatasetUnavailableError: files missing and the download failed (names the files and
            ``ROBUSTSCOPE_DATA``).
    """
    _check_name(name)
    check_no_options(name, options, OPTIONS[name])
    return LOADERS[name](split=split, root=root, download=download, **options)


def take_indices(size: int, n: int, seed: int | None = None) -> torch.Tensor:
    """The indices :func:`take` reads: ``0..n-1``, or ``n`` distinct seeded random ones."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= size:
        raise InvalidParameterError(f"n must be an integer in [1, {size}] (the dataset's size), got {n!r}")
    if seed is None:
        return torch.arange(n)
    return torch.randperm(size, generator=torch.Generator().manual_seed(int(seed)))[:n]


class Sample(Dataset):
    """The examples :func:`take` would return, read lazily (one batch at a time).

    Args:
        dataset: any dataset yielding ``(image, label)``; n, seed: as in :func:`take`.

    ``sample[i]`` is ``dataset[indices[i]]``; ``sample.batch(positions)`` returns
    ``(images (B, C, H, W), labels (B,))``; ``sample.indices`` are the indices into ``dataset``.
    """

    def __init__(self, dataset: Dataset, n: int, seed: int | None = None):
        self.dataset = dataset
        self.indices = take_indices(len(dataset), n, seed)
        self.spec = getattr(dataset, "spec", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[int(self.indices[i])]

    def batch(self, positions) -> tuple[torch.Tensor, torch.Tensor]:
        chosen = self.indices[torch.as_tensor(positions, dtype=torch.long)]
        if isinstance(self.dataset, TensorImageDataset):
            return self.dataset.batch(chosen)
        items = [self.dataset[int(i)] for i in chosen]
        images = torch.stack([torch.as_tensor(image, dtype=torch.float32) for image, _ in items])
        return images, torch.tensor([int(label) for _, label in items], dtype=torch.long)


def dataset_size(data) -> int:
    """Number of images in ``data``: an (images, labels) pair, an images tensor, or a Dataset."""
    if isinstance(data, torch.Tensor):
        return data.shape[0]
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        return data[0].shape[0]
    try:
        return len(data)
    except TypeError:
        raise InvalidParameterError(
            "data must be an images tensor, an (images, labels) pair or a sized Dataset"
        ) from None


def slice_batch(data, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (B, C, H, W) and labels (B,) or None for items [start, stop) of ``data``."""
    if isinstance(data, torch.Tensor):
        return data[start:stop], None
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        labels = data[1]
        return data[0][start:stop], (None if labels is None else torch.as_tensor(labels)[start:stop])
    if callable(getattr(data, "batch", None)):          # engine.data.TensorImageDataset
        return data.batch(torch.arange(start, stop))
    items = [data[i] for i in range(start, stop)]
    images = torch.stack([torch.as_tensor(item[0]) for item in items])
    labels = torch.as_tensor([int(item[1]) for item in items])
    return images, labels


def iter_batches(data, batch_size: int):
    """``(images (B, C, H, W), labels (B,) or None)`` of ``data`` (as :func:`slice_batch` reads it)
    in order, ``batch_size`` at a time: one batch in memory, however many images."""
    total = dataset_size(data)
    for start in range(0, total, batch_size):
        yield slice_batch(data, start, min(start + batch_size, total))


def take(dataset: Dataset, n: int, seed: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``n`` examples as tensors: the first ``n``, or a seeded random subset.

    Args:
        dataset: any dataset yielding ``(image, label)``.
        n: how many, 1 <= n <= len(dataset).
        seed: None for the first ``n`` in order; an integer for ``n`` distinct random indices
            (the same seed gives the same subset).

    Returns:
        ``(images (n, C, H, W) float32 in [0, 1], labels (n,) long)``.
    """
    indices = take_indices(len(dataset), n, seed)
    if isinstance(dataset, TensorImageDataset):
        return dataset.batch(indices)
    items = [dataset[int(i)] for i in indices]
    images = torch.stack([torch.as_tensor(image, dtype=torch.float32) for image, _ in items])
    return images, torch.tensor([int(label) for _, label in items], dtype=torch.long)
