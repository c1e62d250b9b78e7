"""The folder datasets, as subclasses of torchvision's ``ImageFolder`` (imported only when a folder
is read, so that the dataset registry and specs load without torchvision).

The lowest of the folder modules: :mod:`engine.data.imagefolder` and :mod:`engine.data.imagenet`
build these datasets (importing this module inside their loaders); it imports neither of them.
Their files are listed beforehand (``engine.data.imagefolder.list_images``: no endless walks
through folder links, a class without images named) and handed in as a ``listing``; every image is
read through :func:`engine.images.read_image_file`, the checks uploads get (size from the header
before decoding, damaged files named).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from PIL import Image
from torchvision import datasets, transforms

from engine.data.base import DatasetSpec
from engine.images import read_image_file


def read_rgb(path: str) -> Image.Image:
    """Open an image file as RGB; an unreadable, damaged or oversize file raises
    InvalidParameterError naming it (``engine.images.read_image_file``)."""
    return read_image_file(path)


class ListedImageFolder(datasets.ImageFolder):
    """torchvision's ImageFolder over the samples of a listing made beforehand (``listing``: an
    ``engine.data.imagefolder.FolderListing``) instead of its own walk, which follows folder links
    without end and fails with a bare FileNotFoundError on an empty class."""

    def __init__(self, folder: Path, transform, listing: Any):
        self.listing = listing
        super().__init__(str(folder), transform=transform, loader=read_rgb)

    def make_dataset(self, directory, class_to_idx, extensions=None, is_valid_file=None, allow_empty=False):
        """The listing's ``(path, label)`` samples (torchvision's arguments are not used)."""
        return list(self.listing.samples)


class ImageFolderDataset(ListedImageFolder):
    """torchvision's ImageFolder yielding ``(image (3, S, S) in [0, 1], label)`` with a ``spec``."""

    def __init__(self, folder: Path, spec: DatasetSpec, listing: Any):
        size = spec.input_shape[-1]
        transform = transforms.Compose(
            [transforms.Resize(size), transforms.CenterCrop(size), transforms.ToTensor()]
        )
        self.spec = spec
        super().__init__(folder, transform, listing)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Classes are the spec's class names (sub-folders holding images), in sorted order."""
        names = list(self.spec.class_names)
        return names, {name: i for i, name in enumerate(names)}

    @property
    def class_names(self) -> tuple[str, ...]:
        """The readable name of each label."""
        return self.spec.class_names


class ImageNetDataset(ListedImageFolder):
    """ImageNet images as ``(image (3, S, S) in [0, 1], label in 0..999)`` with a ``spec``.

    Attributes:
        spec: ``engine.data.imagenet.SPEC`` with ``input_shape`` set to the crop size.
        present: the wnids found (a subset of the 1000 keeps its standard labels).
        labels: every wnid's label, its index among the 1000 (``engine.data.imagenet`` passes it in).
        listing: the image files of the present wnids (``engine.data.imagefolder.FolderListing``).
    """

    def __init__(self, folder: Path, spec: DatasetSpec, transform, present: list[str], labels: Mapping[str, int],
                 listing: Any):
        self.spec = spec
        self.present = tuple(present)
        self.labels = dict(labels)
        super().__init__(folder, transform, listing)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Every present wnid mapped to its index among the 1000 (not among the present ones)."""
        return list(self.present), {w: self.labels[w] for w in self.present}

    @property
    def class_names(self) -> tuple[str, ...]:
        """The readable name of each of the 1000 labels."""
        return self.spec.class_names
