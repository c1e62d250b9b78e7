"""The folder datasets, as subclasses of torchvision's ``ImageFolder`` (imported only when a folder
is read, so that the dataset registry and specs load without torchvision)."""
from __future__ import annotations

from pathlib import Path

from torchvision import datasets, transforms

from engine.data.base import DatasetSpec
from engine.data.imagefolder import read_rgb
from engine.data.imagenet import wnids


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
        spec: :data:`SPEC` with ``input_shape`` set to the crop size.
        present: the wnids found (a subset of the 1000 keeps its standard labels).
    """

    def __init__(self, folder: Path, spec: DatasetSpec, transform, present: list[str]):
        self.spec = spec
        self.present = tuple(present)
        super().__init__(str(folder), transform=transform, loader=read_rgb)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        """Every present wnid mapped to its index among the 1000 (not among the present ones)."""
        index = {w: i for i, w in enumerate(wnids())}
        return list(self.present), {w: index[w] for w in self.present}

    @property
    def class_names(self) -> tuple[str, ...]:
        """The readable name of each of the 1000 labels."""
        return self.spec.class_names
