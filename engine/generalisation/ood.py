"""Accuracy of several models under distortions and severities, in one batched pass.

Each batch is distorted once and shown to every model, so all models see exactly the same
distorted images (seeded per batch). The result is a tidy table with one row per
(model, distortion, severity): see :class:`OODResult`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping, NamedTuple, Sequence

import pandas as pd
import torch
from torch import nn

from engine.data import dataset_size, iter_batches
from engine.data import distortions as dist
from engine.errors import InvalidParameterError
from engine.models.state import predict_labels
from engine.runtime import Progress, ShouldStop


#: Table columns of :attr:`OODResult.table`.
COLUMNS = ("model", "distortion", "severity", "keeps", "accuracy", "correct", "total")

#: Name of the undistorted reference rows (severity 0).
CLEAN = "clean"


class ImageSet(NamedTuple):
    """A fixed labelled image set evaluated as is (severity 0), e.g. ``shapes`` silhouettes.

    Attributes:
        images: (N, C, H, W) float in [0, 1].
        labels: (N,) long, the label accuracy is measured against.
        keeps: which cue the set keeps: ``"shape"``, ``"texture"`` or ``"both"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    keeps: str


@dataclass(frozen=True)
class OODResult:
    """Outcome of :func:`evaluate_ood`.

    Attributes:
        table: DataFrame with columns :data:`COLUMNS`; ``severity`` 0 marks clean images and fixed
            image sets; ``accuracy`` in [0, 1].
        stopped: True when ``should_stop`` ended the run early (the table holds finished cells).
        seconds: wall-clock time.
    """

    table: pd.DataFrame
    stopped: bool
    seconds: float


class _Task(NamedTuple):
    distortion: str
    severity: int
    keeps: str
    data: object  # an (images, labels) pair or a Dataset (engine.data.Sample): read batch by batch


def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Top-1 predictions (N,) long on the CPU for images (N, C, H, W) in [0, 1] (the model in eval
    mode on its own device, its mode restored: ``engine.models.state.predict_labels``)."""
    _check_batch_size(batch_size)
    return predict_labels(model, images, batch_size)


def _check_batch_size(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidParameterError(f"batch_size must be a positive integer, got {batch_size!r}")


def _data(images, labels) -> object:
    """The data to read batch by batch: ``(images, labels)``, or ``images`` itself when it is a
    Dataset (``labels`` None)."""
    if labels is None and not isinstance(images, torch.Tensor):
        if dataset_size(images) == 0:
            raise InvalidParameterError("the image sample is empty")
        return images
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or len(images) == 0:
        raise InvalidParameterError("images must be a non-empty tensor (N, C, H, W) in [0, 1]")
    if not isinstance(labels, torch.Tensor) or labels.shape != (len(images),):
        raise InvalidParameterError("labels must be a tensor (N,) matching the images")
    return images, labels


def _tasks(data, distortions, severities, image_sets, include_clean) -> list[_Task]:
    """Every (distortion, severity) cell to evaluate, in table order."""
    names = list(dist.DISTORTIONS) if distortions is None else list(distortions)
    for name in names:
        dist.get_distortion(name)
    levels = [dist.check_severity(s) for s in severities]
    tasks = [_Task(CLEAN, 0, "both", data)] if include_clean else []
    tasks += [_Task(n, s, dist.DISTORTIONS[n].keeps, data) for n in names for s in levels]
    for set_name, image_set in (image_sets or {}).items():
        tasks.append(_Task(set_name, 0, image_set.keeps, _data(image_set.images, image_set.labels)))
    if not tasks:
        raise InvalidParameterError("nothing to evaluate: choose distortions or keep the clean rows")
    return tasks


def _batches(task: _Task, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(distorted images, labels) per batch; batch b uses seed ``seed + b``."""
    for b, (x, y) in enumerate(iter_batches(task.data, batch_size)):
        if task.severity > 0:
            x = dist.apply(task.distortion, x, task.severity, seed=seed + b)
        yield x, y


def evaluate_ood(
    models: Mapping[str, nn.Module],
    images,
    labels: torch.Tensor | None = None,
    distortions: Sequence[str] | None = None,
    severities: Iterable[int] = dist.SEVERITIES,
    image_sets: Mapping[str, ImageSet] | None = None,
    include_clean: bool = True,
    batch_size: int = 128,
    seed: int = 0,
    progress: Progress | None = None,
    should_stop: ShouldStop | None = None,
) -> OODResult:
    """Accuracy of every model on clean images, under each distortion x severity, and on sets.

    Agarwal & Chen 2020: robust models gain on texture-less images (rows with ``keeps ==
    "shape"``) and are on par or worse where texture survives.

    Args:
        models: name -> classifier taking (B, C, H, W) images in [0, 1]; each runs on its own
            device in eval mode, and its mode is restored.
        images: (N, C, H, W) float in [0, 1] with ``labels`` (N,) long; or, with ``labels`` None, an
            Dataset such as ``engine.data.Sample``, read one batch at a time (memory independent of N).
        distortions: names from ``engine.data.distortions.DISTORTIONS`` (default: all).
        severities: subset of 1..5.
        image_sets: extra fixed sets (name -> :class:`ImageSet`), evaluated as severity 0.
        include_clean: add the undistorted ``"clean"`` rows.
        batch_size: images per forward pass.
        seed: base seed of the random distortions (batch b uses ``seed + b``).
        progress: ``progress(done, total)`` after each batch, counted over all cells.
        should_stop: polled before each batch; True stops and returns the finished cells.

    Returns:
        :class:`OODResult` (tidy table, stopped flag, seconds).

    Raises:
        InvalidParameterError: unknown distortion, severity outside 1..5, bad shapes, no models.
    """
    if not models:
        raise InvalidParameterError("give at least one model to evaluate")
    data = _data(images, labels)
    _check_batch_size(batch_size)
    tasks = _tasks(data, distortions, list(severities), image_sets, include_clean)
    total = sum(-(-dataset_size(t.data) // batch_size) for t in tasks)
    start, done, rows, stopped = time.perf_counter(), 0, [], False
    for task in tasks:
        correct = dict.fromkeys(models, 0)
        for x, y in _batches(task, batch_size, seed):
            if should_stop is not None and should_stop():
                stopped = True
                break
            for name, model in models.items():
                correct[name] += int((predict(model, x, batch_size) == y).sum())
            done += 1
            if progress is not None:
                progress(done, total)
        if stopped:
            break
        size = dataset_size(task.data)
        rows += [(name, task.distortion, task.severity, task.keeps, c / size, c, size)
                 for name, c in correct.items()]
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return OODResult(table, stopped, time.perf_counter() - start)


def shapes_image_sets(n: int, seed: int = 0, image_size: int = 32) -> dict[str, ImageSet]:
    """The ``shapes`` dataset's texture-less / shape-less / conflicting variants as image sets.

    Returns:
        ``{"shapes:silhouette": shape only, "shapes:texture": texture only (labelled with the
        texture's class), "shapes:cue-conflict": shape of one class, texture of another,
        labelled with the shape}`` with ``n`` images each.
    """
    from engine.data.shapes import make_shapes

    keeps = {"silhouette": "shape", "texture": "texture", "cue-conflict": "shape"}
    sets = {}
    for variant, cue in keeps.items():
        batch = make_shapes(n, seed=seed, variant=variant, image_size=image_size)
        sets[f"shapes:{variant}"] = ImageSet(batch.images, batch.labels, cue)
    return sets
