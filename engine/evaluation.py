"""Clean accuracy of a classifier over tensors or a dataset, batched, with progress and cancel."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from engine.errors import InvalidParameterError
from engine.models.state import frozen_eval, model_device
from engine.runtime import Progress



@dataclass(frozen=True)
class AccuracyResult:
    """Top-1 accuracy (in [0, 1]) over ``total`` images, with the wall-clock ``seconds`` it took."""

    accuracy: float
    correct: int
    total: int
    seconds: float
    stopped: bool = False


def iter_batches(
    data: torch.Tensor | Dataset,
    labels: torch.Tensor | None,
    n: int | None,
    batch_size: int,
) -> tuple[Iterator[tuple[torch.Tensor, torch.Tensor]], int]:
    """Yield ``(images (B,C,H,W), labels (B,))`` batches of the first ``n`` items and their count."""
    if batch_size < 1:
        raise InvalidParameterError(f"batch size must be at least 1, got {batch_size}")
    if isinstance(data, torch.Tensor):
        if labels is None or len(labels) != len(data):
            raise InvalidParameterError("images and labels must be given together, of equal length")
        total = len(data) if n is None else min(n, len(data))
        chunks = (
            (data[i : min(i + batch_size, total)], labels[i : min(i + batch_size, total)])
            for i in range(0, total, batch_size)
        )
        return chunks, total
    total = len(data) if n is None else min(n, len(data))
    loader = DataLoader(Subset(data, range(total)), batch_size=batch_size, shuffle=False)
    return ((x, torch.as_tensor(y)) for x, y in loader), total


def eval_mode(model: nn.Module):
    """Eval mode inside the block, every module's ``training`` flag restored after."""
    return frozen_eval(model, freeze=False)


@torch.no_grad()
def accuracy(
    model: nn.Module,
    data: torch.Tensor | Dataset,
    labels: torch.Tensor | None = None,
    n: int | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> AccuracyResult:
    """Top-1 clean accuracy of ``model`` on images in [0, 1].

    Args:
        model: a classifier taking (B, C, H, W) images in [0, 1]; its mode is restored afterwards.
        data: an image tensor (N, C, H, W) with ``labels`` (N,), or a dataset of (image, label).
        n: evaluate the first ``n`` items only (``None``: all). Must be >= 1 when given.
        device: where to run (default: the model's device).
        progress: called as ``progress(done, total)`` after every batch.
        should_stop: polled between batches; when it returns True the partial result is returned
            with ``stopped=True``.
    """
    if n is not None and n < 1:
        raise InvalidParameterError(f"number of images must be at least 1, got {n}")
    device = torch.device(device) if device is not None else model_device(model)
    batches, total = iter_batches(data, labels, n, batch_size)
    start, correct, done, stopped = time.perf_counter(), 0, 0, False
    with frozen_eval(model, freeze=False):
        for x, y in batches:
            if should_stop is not None and should_stop():
                stopped = True
                break
            logits = model(x.to(device))  # (B, K)
            correct += int((logits.argmax(1).cpu() == y).sum())
            done += len(y)
            if progress is not None:
                progress(done, total)
    acc = correct / done if done else 0.0
    return AccuracyResult(acc, correct, done, time.perf_counter() - start, stopped)
