"""ImageNet-1k (ILSVRC 2012) from its usual folder layout; never downloaded.

Layout: ``<data root>/imagenet/val/<wnid>/<image>`` (and ``train/<wnid>/...`` for the training
split), the validation images sorted into one folder per WordNet id, as torchvision's
``ImageFolder`` and RobustBench expect. Label ``i`` is the ``i``-th of the 1000 wnids in sorted
order (``imagenet_classes.json`` beside this module), whichever of them are present, so a subset of
the classes keeps the labels every ImageNet model was trained with. Every class folder present must
hold an image; other files are skipped and counted, and folder links are followed only where they do
not lead back into a folder already read (``engine.data.imagefolder.list_images``).

Preprocessing follows the model's card when it records one (RobustBench's ``Res256Crop224``,
``Crop288``, ``BicubicRes256Crop224``, ``Res224``); otherwise resize the shorter side to 256 and
centre-crop 224 (bilinear), the standard ImageNet evaluation.
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

from engine.data.base import IMAGENET_MEAN, IMAGENET_STD, DATA_ENV, DatasetSpec, check_split, resolve_root
from engine.data.imagefolder import list_images
from engine.errors import DatasetUnavailableError, InvalidParameterError

FOLDER = "imagenet"
SPLIT_FOLDERS = {"train": "train", "test": "val"}
CLASSES_FILE = Path(__file__).with_name("imagenet_classes.json")
DEFAULT_RESIZE = 256
DEFAULT_CROP = 224
INTERPOLATIONS = ("bilinear", "bicubic")


@functools.lru_cache(maxsize=1)
def class_table() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(wnids, names)``: the 1000 classes in label order."""
    raw = json.loads(CLASSES_FILE.read_text(encoding="utf-8"))
    pairs = raw["classes"]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


def wnids() -> tuple[str, ...]:
    """The 1000 WordNet ids in label order."""
    return class_table()[0]


SPEC = DatasetSpec(
    name="imagenet",
    num_classes=1000,
    class_names=class_table()[1],
    input_shape=(3, DEFAULT_CROP, DEFAULT_CROP),
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    default_arch="resnet50",
    description=("ImageNet-1k (ILSVRC 2012), 1000 classes; validation set of 50,000 images read from "
                 "<data root>/imagenet/val/<wnid>/ (never downloaded), resized to 256 and centre-cropped to 224"),
)


def split_folder(root: str | Path | None = None, split: str = "test") -> Path:
    """``<root>/imagenet/val`` for "test", ``<root>/imagenet/train`` for "train"."""
    return resolve_root(root) / FOLDER / SPLIT_FOLDERS[check_split(split)]


def _layout_help(folder: Path) -> str:
    return (
        f"Expected the layout {folder}/<wnid>/<image>.JPEG, e.g. {folder}/n01440764/ILSVRC2012_val_00000293.JPEG: "
        "the ILSVRC 2012 validation images sorted into one folder per class (WordNet id). ImageNet cannot be "
        "downloaded automatically (its terms require registering at image-net.org); put the files there, or set "
        f"{DATA_ENV} to the folder that holds imagenet/."
    )


def _present_classes(folder: Path) -> list[str]:
    """The wnid folders present; unknown folder names are refused (a wrong layout, not ImageNet)."""
    if not folder.is_dir():
        raise DatasetUnavailableError(f"ImageNet is not available: {folder} does not exist. {_layout_help(folder)}")
    known = set(wnids())
    present, unknown = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir():
                (present if entry.name in known else unknown).append(entry.name)
    if unknown and not present:
        raise DatasetUnavailableError(
            f"{folder} holds folders that are not ImageNet WordNet ids ({', '.join(sorted(unknown)[:5])}). {_layout_help(folder)}"
        )
    if not present:
        raise DatasetUnavailableError(f"ImageNet is not available: {folder} has no class folders. {_layout_help(folder)}")
    return sorted(present)


def imagenet_available(root: str | Path | None = None) -> bool:
    """True when ``<root>/imagenet/val`` holds at least one WordNet-id folder (cheap: no images read)."""
    folder = split_folder(root, "test")
    if not folder.is_dir():
        return False
    known = set(wnids())
    with os.scandir(folder) as entries:
        return any(entry.name in known and entry.is_dir() for entry in entries)


def _check_interpolation(value: str) -> str:
    if value not in INTERPOLATIONS:
        raise InvalidParameterError(f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {value!r}")
    return value


def _check_side(value, what: str, low: int = 16, high: int = 1024) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterError(f"{what} must be an integer in [{low}, {high}], got {value!r}")
    return value


def preprocessing(image_size: int = DEFAULT_CROP, resize: int | None | str = "auto",
                  interpolation: str = "bilinear"):
    """The transform to (3, image_size, image_size) in [0, 1]: resize the shorter side, centre-crop.

    Args:
        image_size: side of the centre crop.
        resize: shorter side before the crop; "auto": ``round(image_size / 0.875)`` (256 for 224);
            "square": resize the whole image to ``image_size`` x ``image_size`` (RobustBench's
            ``Res224``); None: no resize (RobustBench's ``Crop288``).
        interpolation: "bilinear" or "bicubic".
    """
    from torchvision import transforms

    size = _check_side(image_size, "image_size")
    mode = transforms.InterpolationMode(_check_interpolation(interpolation))
    steps = []
    if resize == "auto":
        resize = int(round(size / 0.875))
    if resize == "square":
        steps.append(transforms.Resize([size, size], interpolation=mode))
    elif resize is not None:
        steps.append(transforms.Resize(_check_side(resize, "resize", high=2048), interpolation=mode))
    steps += [transforms.CenterCrop(size), transforms.ToTensor()]
    return transforms.Compose(steps)


def load_imagenet(split: str = "test", root: str | Path | None = None, download: bool = True,
                  image_size: int = DEFAULT_CROP, resize: int | None | str = "auto",
                  interpolation: str = "bilinear"):
    """Load ImageNet's validation ("test") or training split from ``<root>/imagenet/{val,train}``.

    Args:
        split: "test" (the validation set, ``val/``) or "train".
        root: data root (default ``$ROBUSTSCOPE_DATA``, else ``./data``).
        download: ignored; ImageNet is never downloaded (a missing folder raises, naming the layout).
        image_size, resize, interpolation: see :func:`preprocessing` (defaults: 256 then 224, bilinear);
            :func:`loader_options` reads them from a model card.

    Returns:
        The dataset (``engine.data.folders.ImageNetDataset``); its ``listing`` says how many
        non-image files were skipped and folder links not followed (``listing.note()``).

    Raises:
        DatasetUnavailableError: the folder is missing, empty or not in the ImageNet layout (the
            expected layout is named), or a class folder holds no image (named). An unreadable,
            damaged or oversize image raises InvalidParameterError naming it when read.
    """
    from engine.data.folders import ImageNetDataset

    folder = split_folder(root, split)
    present = _present_classes(folder)
    transform = preprocessing(image_size, resize, interpolation)
    spec = replace(SPEC, input_shape=(3, image_size, image_size)) if image_size != DEFAULT_CROP else SPEC
    labels = {w: i for i, w in enumerate(wnids())}
    listing = list_images(folder, {w: labels[w] for w in present})
    return ImageNetDataset(folder, spec, transform, present, labels, listing)


def loader_options(card: Mapping[str, Any] | None) -> dict:
    """``load_dataset("imagenet", **options)`` options matching a model card.

    A RobustBench import records RobustBench's preprocessing under
    ``source.robustbench.preprocessing`` (resize, crop, interpolation); otherwise the card's
    ``input_shape`` gives the crop, with the usual 0.875 ratio for the resize.
    """
    card = card or {}
    source = card.get("source") if isinstance(card, Mapping) else getattr(card, "source", None)
    pre = ((source or {}).get("robustbench") or {}).get("preprocessing") if isinstance(source, Mapping) else None
    shape = card.get("input_shape") if isinstance(card, Mapping) else getattr(card, "input_shape", None)
    options: dict[str, Any] = {}
    if isinstance(pre, Mapping):
        resize, crop = pre.get("resize"), pre.get("crop")
        if isinstance(resize, (list, tuple)):  # "Res224": the whole image resized to a square
            options.update(image_size=int(resize[0]), resize="square")
        else:
            options.update(image_size=int(crop or DEFAULT_CROP), resize=int(resize) if resize else None)
        if pre.get("interpolation") in INTERPOLATIONS:
            options["interpolation"] = pre["interpolation"]
        return options
    if shape and len(shape) == 3 and int(shape[-1]) != DEFAULT_CROP:
        options["image_size"] = int(shape[-1])
    return options
