"""The folder datasets, as subclasses of torchvision's ``ImageFolder`` (imported only when a folder
is read, so that the dataset registry and specs load without torchvision).

The lowest of the folder modules: :mod:`engine.data.imagefolder` and :mod:`engine.data.imagenet`
build these datasets (importing this module inside their loaders); it imports neither of them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from PIL import Image, UnidentifiedImageError
from torchvision import datasets, transforms

from engine.data.base import DatasetSpec
from engine.errors import InvalidParameterError


def read_rgb(path: str) -> Image.Image:
    """Open an image file as RGB; an unreadable file raises InvalidParameterError naming it."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise InvalidParameterError(f"cannot read image {path}: {exc}") from exc


class ImageFolderDataset(datasets.ImageFolder):
    """torchvision's ImageFolder yielding ``(image (3, S, S) in [0, 1], label)`` with a ``spec``."""

    def __init__(self, folder: Path, spec: DatasetSpec):
        size = spec.input_shape[-1]
        transform = transforms.Compose(
            [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()]
        )
        self.spec = spec
        super().__init__(str(folder), transform=transform, loader=read_rgb)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Classes are the spec's class names (sub-folders holding images), in sorted order."""
        names = list(self.spec.class_names)
        return names, {name: i for i, name in enumerate(names)}

    @property
    def class_names(self) -> tuple[str, ...]:
        """The readable name of each label."""
        return self.spec.class_names


class ImageNetDataset(datasets.ImageFolder):
    """ImageNet images as ``(image (3, S, S) in [0, 1], label in 0..999)`` with a ``spec``.

    Attributes:
        spec: ``engine.data.imagenet.SPEC`` with ``input_shape`` set to the crop size.
        present: the wnids found (a subset of the 1000 keeps its standard labels).
        labels: every wnid's label, its index among the 1000 (``engine.data.imagenet`` passes it in).
    """

    def __init__(self, folder: Path, spec: DatasetSpec, transform, present: list[str], labels: Mapping[str, int]):
        self.spec = spec
        self.present = tuple(present)
        self.labels = dict(labels)
        super().__init__(str(folder), transform=transform, loader=read_rgb)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Every present wnid mapped to its index among the 1000 (not among the present ones)."""
        return list(self.present), {w: self.labels[w] for w in self.present}

    @property
    def class_names(self) -> tuple[str, ...]:
        """The readable name of each of the 1000 labels."""
        return self.spec.class_names
