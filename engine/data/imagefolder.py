"""``imagefolder``: any ImageNet-style folder (one sub-folder of images per class).

``<folder>/<class name>/<image>.jpg``; class names are the sorted sub-folder names (torchvision's
``ImageFolder`` convention; hidden ones, starting with ".", left out), so a folder laid out like
ImageNet's validation set works as is. Every class folder must hold an image; other files are
skipped and counted, and folder links leading back into a folder already read are not followed
(:func:`list_images`, which :mod:`engine.data.imagenet` uses too). If
``<folder>`` itself has ``train/`` and ``val/`` (or ``test/``) sub-folders, the split picks one.
Images are resized (shorter side) and centre-cropped to ``image_size`` and normalised by the
model with ImageNet's mean and std.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

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


@dataclass(frozen=True)
class FolderListing:
    """The image files of a folder dataset's classes, in the order torchvision's ``ImageFolder``
    gives them (classes by sorted name, then the files of each class by sorted folder and name).

    Attributes:
        samples: ``(path, label)`` of every image file (a name ending in :data:`IMAGE_SUFFIXES`).
        skipped: how many other files were left out (not images by their name, broken links).
        loops: how many folder links were not followed because they lead back into a folder
            already read (a link to a parent folder would otherwise be walked forever).
        examples: a few of the left-out paths, for messages.
    """

    samples: tuple[tuple[str, int], ...]
    skipped: int = 0
    loops: int = 0
    examples: tuple[str, ...] = ()

    def note(self) -> str:
        """What was left out, in one sentence ("" when nothing was)."""
        parts = []
        if self.skipped:
            parts.append(f"{self.skipped} non-image file(s) skipped")
        if self.loops:
            parts.append(f"{self.loops} folder link(s) not followed (they lead back into a folder already read)")
        shown = f" (e.g. {', '.join(self.examples)})" if self.examples else ""
        return "; ".join(parts) + shown if parts else ""


@dataclass
class _Walked:
    """One folder read by :func:`_walk`: its image files, other files and unfollowed links."""

    path: str
    images: list[str]
    others: list[str]
    loops: list[str]


def _entries(folder: str) -> list[os.DirEntry]:
    """The entries of ``folder`` sorted by name; an unreadable folder raises DatasetUnavailableError."""
    try:
        with os.scandir(folder) as found:
            return sorted(found, key=lambda e: e.name)
    except OSError as exc:
        raise DatasetUnavailableError(f"cannot read the folder {folder}: {exc.strerror or exc}") from None


def _kind(entry: os.DirEntry) -> str:
    """"dir", "image" or "other" (a non-image file, a broken or looping link, a device ...)."""
    try:
        if entry.is_dir():
            return "dir"
        if entry.is_file():
            return "image" if entry.name.lower().endswith(IMAGE_SUFFIXES) else "other"
    except OSError:
        pass
    return "other"


def _walk(folder: str) -> Iterator[_Walked]:
    """Read ``folder`` and every folder below it, following folder links (as torchvision does)
    except those whose real path was already read or contains the folder being read: a link to
    a parent folder ends here instead of being walked forever."""
    seen = {os.path.realpath(folder)}
    stack = [folder]
    while stack:
        current = stack.pop()
        here = os.path.realpath(current)
        walked = _Walked(current, [], [], [])
        for entry in _entries(current):
            kind = _kind(entry)
            if kind == "dir":
                real = os.path.realpath(entry.path)
                if real in seen or os.path.commonpath([real, here]) == real:
                    walked.loops.append(entry.path)
                    continue
                seen.add(real)
                stack.append(entry.path)
            else:
                (walked.images if kind == "image" else walked.others).append(entry.path)
        yield walked


def _no_images(folder: str, others: list[str], loops: list[str]) -> DatasetUnavailableError:
    """The error for a class folder without image files, saying what it holds instead."""
    if others:
        held = f"only {len(others)} other file(s), e.g. {', '.join(os.path.basename(p) for p in others[:3])}"
    elif loops:
        held = "only link(s) back into folders already read"
    else:
        held = "nothing: it is empty"
    return DatasetUnavailableError(
        f"class folder {folder} holds no images ({held}); every sub-folder is a class: put images "
        f"({', '.join(IMAGE_SUFFIXES)}) in it, or move it out"
    )


def _require_images(folder: str) -> None:
    """Raise (naming ``folder`` and what it holds) unless an image file is somewhere under it."""
    others, loops = [], []
    for walked in _walk(folder):
        if walked.images:
            return
        others += walked.others
        loops += walked.loops
    raise _no_images(folder, others, loops)


def _class_samples(folder: str, label: int) -> FolderListing:
    """One class folder's images as ``(path, label)`` in torchvision's order, with what was left out."""
    walked = sorted(_walk(folder), key=lambda w: w.path)
    others = [p for w in walked for p in w.others]
    loops = [p for w in walked for p in w.loops]
    samples = tuple((p, label) for w in walked for p in w.images)
    if not samples:
        raise _no_images(folder, others, loops)
    return FolderListing(samples, len(others), len(loops), tuple((others + loops)[:3]))


def list_images(folder: str | Path, labels: Mapping[str, int]) -> FolderListing:
    """Every image file of the class folders ``folder/<name>`` (``labels``: name -> label).

    Other files are skipped and counted; folder links leading back into a folder already read
    are not followed (counted too).

    Raises:
        DatasetUnavailableError: a class folder without any image file (named, with what it
            holds instead), or a folder that cannot be read.
    """
    parts = [_class_samples(os.path.join(str(folder), name), labels[name]) for name in sorted(labels)]
    return FolderListing(
        samples=tuple(s for part in parts for s in part.samples),
        skipped=sum(part.skipped for part in parts),
        loops=sum(part.loops for part in parts),
        examples=tuple(e for part in parts for e in part.examples)[:3],
    )


def _class_names(folder: Path) -> tuple[str, ...]:
    """Sorted names of the sub-folders (hidden ones, starting with ".", left out); each must hold
    an image file somewhere below it."""
    if not folder.is_dir():
        raise DatasetUnavailableError(
            f"image folder {folder} does not exist; give a folder with one sub-folder of images per "
            "class (ImageNet layout: <folder>/<class>/<image>.jpg)"
        )
    names = tuple(e.name for e in _entries(str(folder)) if _kind(e) == "dir" and not e.name.startswith("."))
    if not names:
        raise DatasetUnavailableError(
            f"image folder {folder} has no class sub-folders with images "
            f"({', '.join(IMAGE_SUFFIXES)}); expected <folder>/<class>/<image>"
        )
    for name in names:
        _require_images(str(folder / name))
    return names


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
        DatasetUnavailableError: the folder is missing or has no class folders, or a class folder
            holds no image file (named).
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

    Returns:
        The dataset (``engine.data.folders.ImageFolderDataset``); its ``listing`` says how many
        non-image files were skipped and folder links not followed (``listing.note()``).

    Raises:
        DatasetUnavailableError: missing or empty folder, or a class folder without images (named).
        Reading an unreadable, damaged or oversize image later raises InvalidParameterError
        naming the file (``engine.images.read_image_file``).
    """
    from engine.data.folders import ImageFolderDataset

    spec = imagefolder_spec(root, image_size, split)
    folder = resolve_folder(root, split)
    listing = list_images(folder, {name: i for i, name in enumerate(spec.class_names)})
    return ImageFolderDataset(folder, spec, listing)


def imagefolder_available(root: str | Path | None = None) -> bool:
    """True when the folder (default ``<data root>/imagefolder``) has class folders with images."""
    try:
        _class_names(resolve_folder(root, "test"))
    except DatasetUnavailableError:
        return False
    return True
