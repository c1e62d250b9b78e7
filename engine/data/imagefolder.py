"""``imagefolder``: any ImageNet-style folder (one sub-folder of images per class).

``<folder>/<class name>/<image>.jpg``; class names are the sorted sub-folder names (torchvision's
``ImageFolder`` convention), so a folder laid out like ImageNet's validation set works as is. If
``<folder>`` itself has ``train/`` and ``val/`` (or ``test/``) sub-folders, the split picks one.
Images are resized (shorter side) and centre-cropped to ``image_size`` and normalised by the
model with ImageNet's mean and std.
"""
from __future__ import annotations

from pathlib import Path

from engine.data.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DatasetSpec,
    check_split,
    resolve_root,
)
from engine.errors import DatasetUnavailableError, InvalidParameterError

DEFAULT_FOLDER = "imagefolder"  # under the data root when no folder is given
_SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}


#: the file suffixes torchvision's ImageFolder reads (``torchvision.datasets.folder.IMG_EXTENSIONS``;
#: a test checks they agree), here so that listing folders imports no torchvision
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

def resolve_folder(root: str | Path | None, split: str = "test") -> Path:
    """The class folder for ``split``: ``root/train``, ``root/test``/``root/val`` if present, else ``root``.

    ``root`` None means ``<data root>/imagefolder``.
    """
    check_split(split)
    base = resolve_root(None) / DEFAULT_FOLDER if root is None else Path(root)
    for sub in _SPLIT_FOLDERS[split]:
        if (base / sub).is_dir():
            return base / sub
    return base


def _class_names(folder: Path) -> tuple[str, ...]:
    """Sorted names of sub-folders holding at least one image file."""
    if not folder.is_dir():
        raise DatasetUnavailableError(
            f"image folder {folder} does not exist; give a folder with one sub-folder of images per "
            "class (ImageNet layout: <folder>/<class>/<image>.jpg)"
        )
    names = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir() and _has_images(d)))
    if not names:
        raise DatasetUnavailableError(
            f"image folder {folder} has no class sub-folders with images "
            f"({', '.join(IMAGE_SUFFIXES)}); expected <folder>/<class>/<image>"
        )
    return names


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*") if p.is_file())


def _check_size(image_size: int) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 16 <= image_size <= 1024:
        raise InvalidParameterError(f"image_size must be an integer in [16, 1024], got {image_size!r}")
    return image_size


def imagefolder_spec(root: str | Path | None, image_size: int = 224, split: str = "test") -> DatasetSpec:
    """Build the :class:`DatasetSpec` of an ImageNet-style folder.

    Args:
        root: the folder (``<root>/<class>/<image>``, or with ``train/``/``val/`` inside).
        image_size: side of the square centre crop; input_shape is ``(3, image_size, image_size)``.
        split: which split folder to read class names from when ``root`` has split folders.

    Raises:
        DatasetUnavailableError: the folder is missing or has no class folders with images.
    """
    folder = resolve_folder(root, split)
    names = _class_names(folder)
    size = _check_size(image_size)
    return DatasetSpec(
        name="imagefolder",
        num_classes=len(names),
        class_names=names,
        input_shape=(3, size, size),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        default_arch="resnet18",
        description=f"Images from {folder} ({len(names)} classes), resized and centre-cropped to {size}",
    )


def load_imagefolder(split: str = "test", root: str | Path | None = None, download: bool = True,
                     image_size: int = 224):
    """Load an ImageNet-style folder as a dataset (nothing is downloaded).

    Args:
        split: ``"test"`` reads ``root/test`` or ``root/val`` if present, ``"train"`` reads
            ``root/train`` if present; otherwise ``root`` itself.
        root: the folder; None means ``<data root>/imagefolder``.
        download: ignored (there is nothing to download).
        image_size: side of the square centre crop (16..1024).

    Raises:
        DatasetUnavailableError: missing or empty folder. Reading an unreadable image later
        raises InvalidParameterError naming the file.
    """
    from engine.data.folders import ImageFolderDataset

    spec = imagefolder_spec(root, image_size, split)
    return ImageFolderDataset(resolve_folder(root, split), spec)


def imagefolder_available(root: str | Path | None = None) -> bool:
    """True when the folder (default ``<data root>/imagefolder``) has class folders with images."""
    try:
        _class_names(resolve_folder(root, "test"))
    except DatasetUnavailableError:
        return False
    return True
