"""Building blocks shared by every dataset: the spec, the data root and an in-memory dataset.

Kept separate from :mod:`engine.data.registry` so that each dataset module can define its own
spec without importing the registry (which imports them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import torch
from torch.utils.data import Dataset

from engine.errors import InvalidParameterError

DATA_ENV = "ROBUSTSCOPE_DATA"
SPLITS = ("train", "test")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about a dataset.

    Attributes:
        name: registry name, e.g. ``"mnist"``.
        num_classes: number of labels; labels are ``0 .. num_classes - 1``.
        class_names: one readable name per label.
        input_shape: ``(C, H, W)`` of one image.
        mean, std: per-channel statistics of the images in [0, 1] (what a model normalises with).
        default_arch: the architecture name (``engine.models.ARCHITECTURES``) suited to it.
        description: one line for people (source, size, citation).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_arch: str
    description: str


def data_root() -> Path:
    """Return the folder datasets live in: ``$ROBUSTSCOPE_DATA`` if set, else ``./data``."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else Path("data")


def resolve_root(root: str | os.PathLike | None) -> Path:
    """Return ``root`` as a Path, or :func:`data_root` when it is None."""
    return data_root() if root is None else Path(root)


def check_split(split: str) -> str:
    """Return ``split`` if it is ``"train"`` or ``"test"``, else raise InvalidParameterError."""
    if split not in SPLITS:
        raise InvalidParameterError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    return split


def check_no_options(name: str, options: dict, allowed: Iterable[str] = ()) -> None:
    """Raise InvalidParameterError if ``options`` holds a key that dataset ``name`` does not take."""
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) or "no options"
        raise InvalidParameterError(
            f"dataset {name!r} does not take option(s) {', '.join(unknown)} (it takes: {takes})"
        )


class TensorImageDataset(Dataset):
    """An in-memory image dataset yielding ``(image (C, H, W) float32 in [0, 1], int label)``.

    Images are usually stored as uint8 (what the files hold), so a 60,000-image MNIST split costs
    47 MB; they are divided by 255 on access, exactly like ``torchvision.transforms.ToTensor``.
    Float images already in [0, 1] (e.g. perturbed copies made in memory) are stored as float32
    and returned unchanged.

    Args:
        images: uint8 tensor (N, C, H, W), or a float tensor (N, C, H, W) with values in [0, 1].
        labels: integer tensor (N,).
        spec: the dataset's :class:`DatasetSpec`.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, spec: DatasetSpec):
        if not isinstance(images, torch.Tensor) or images.dim() != 4 or not (
            images.dtype == torch.uint8 or images.is_floating_point()
        ):
            raise InvalidParameterError("images must be a uint8 or float tensor of shape (N, C, H, W)")
        if images.is_floating_point():
            images = _unit_floats(images)
        if labels.shape != images.shape[:1]:
            raise InvalidParameterError(
                f"{len(labels)} labels for {len(images)} images; they must match one to one"
            )
        self.images = images
        self.labels = labels.long()
        self.spec = spec

    @property
    def class_names(self) -> tuple[str, ...]:
        """The readable name of each label."""
        return self.spec.class_names

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._as_float(self.images[index]), int(self.labels[index])

    def batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(images (n, C, H, W) float32 in [0, 1], labels (n,) long)`` for ``indices``."""
        return self._as_float(self.images[indices]), self.labels[indices].clone()

    @staticmethod
    def _as_float(images: torch.Tensor) -> torch.Tensor:
        """A float32 copy in [0, 1]: uint8 divided by 255, float images as they are."""
        if images.dtype == torch.uint8:
            return images.float().div_(255.0)
        return images.to(torch.float32, copy=True)


def _unit_floats(images: torch.Tensor) -> torch.Tensor:
    """Check float images are finite and in [0, 1]; return them as float32 on the CPU."""
    images = images.detach().to("cpu", torch.float32)
    if images.numel() and (not torch.isfinite(images).all() or images.min() < 0 or images.max() > 1):
        raise InvalidParameterError("float images must be finite and in [0, 1]")
    return images
