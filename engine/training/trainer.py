"""The training loop shared by every method: data, optimiser, schedule, AMP, DDP, evaluation,
checkpoints and resume. Methods differ only in their loss (``engine.training.methods``).
"""
from __future__ import annotations

import logging
import math
import os
import re
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from engine.catalogue import TRAINING_METHODS, require_names
from engine.errors import CheckpointError, InvalidParameterError, RobustScopeError, storage
from engine.training.config import TrainConfig
from engine.training.methods import METHOD_LOSSES, Step
from engine.training.state import (
    RunState,
    commit_state,
    epoch_dir,
    load_optimizer,
    read_json,
    read_state,
    save_optimizer,
    write_json_atomic,
)

log = logging.getLogger("engine.training")
require_names(METHOD_LOSSES, TRAINING_METHODS,
              "engine.training.methods.METHOD_LOSSES vs engine.catalogue.TRAINING_METHODS", ordered=False)


@dataclass
class ProgressEvent:
    """One progress report.

    Attributes:
        kind: ``"batch"`` (during an epoch) or ``"epoch"`` (after its evaluation and checkpoint).
        epoch: the current epoch, 1-based; ``epochs``: the total.
        batch, batches: batches done in this epoch and per epoch.
        metrics: running ``train_loss``/``train_acc`` (batch) or the epoch's full record (epoch).
        elapsed_s: seconds since this process started training; ``eta_s``: estimated seconds left.
    """

    kind: str
    epoch: int
    epochs: int
    batch: int
    batches: int
    metrics: dict
    elapsed_s: float
    eta_s: float | None


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        status: ``"done"`` or ``"cancelled"``.
        epochs_completed: epochs in the saved state; ``history``: one dict per epoch
            (epoch, lr, train_loss, train_acc, clean_acc, robust_acc, seconds).
        checkpoint / best_checkpoint: published checkpoint paths (``.safetensors``), or ``None``
            when no epoch completed (or on non-zero DDP ranks).
        run_dir: the run folder holding the resumable state.
    """

    status: str
    epochs_completed: int
    history: list
    checkpoint: Path | None
    best_checkpoint: Path | None
    run_dir: Path
    seconds: float
    resumed_from: int = 0
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- folders
def runs_root() -> Path:
    """The runs folder: ``$ROBUSTSCOPE_RUNS``, else ``./runs`` (``engine.paths.runs_dir``)."""
    from engine.paths import runs_dir

    return runs_dir()


def checkpoints_root() -> Path:
    """Where finished models are published (``engine.checkpoints.checkpoints_root``: the model picker's folder)."""
    from engine.checkpoints import checkpoints_root as root

    return Path(root())


# --------------------------------------------------------------------------- schedule
def lr_at(config: TrainConfig, epoch_progress: float) -> float:
    """Learning rate at fractional epoch ``epoch_progress`` in [0, epochs] (warm-up, then schedule)."""
    if config.warmup_epochs > 0 and epoch_progress < config.warmup_epochs:
        return config.lr * (epoch_progress + 1e-3) / config.warmup_epochs
    frac = min(max(epoch_progress / config.epochs, 0.0), 1.0)
    if config.schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * frac))
    if config.schedule == "piecewise":
        return config.lr * (0.1 ** ((frac >= 0.5) + (frac >= 0.75)))
    return config.lr


def make_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over ``model``'s parameters."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


# --------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    """Process group facts: ``rank``, ``world`` size, ``local_rank``; ``active`` under torchrun."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """Join the process group when started by ``torchrun`` (WORLD_SIZE > 1): gloo on CPU, NCCL on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not torch.distributed.is_available():
        return Dist()
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return Dist(rank=torch.distributed.get_rank(), world=torch.distributed.get_world_size(),
                local_rank=int(os.environ.get("LOCAL_RANK", "0")), active=True)


def check_world(config) -> None:
    """A job asking for ``workers`` > 1 processes must run in that many (Ray Train or torchrun set
    ``WORLD_SIZE``): a single process would silently train alone with the wrong batch split."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if config.workers > 1 and world != config.workers:
        raise InvalidParameterError(
            f"this training config asks for {config.workers} data-parallel workers but runs in {world} process(es): "
            "run it on a Ray cluster (`python -m engine worker --ray ADDRESS`) or under "
            f"`torchrun --nproc_per_node {config.workers} -m engine train --config ...`")


def _all_sum(dist: Dist, values: list[float], device: torch.device) -> list[float]:
    if not dist.active:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t)
    return t.tolist()


def _any_rank(dist: Dist, flag: bool, device: torch.device) -> bool:
    """True on every rank when rank 0 says ``flag`` (broadcast, so all ranks stop together)."""
    if not dist.active:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    torch.distributed.broadcast(t, src=0)
    return bool(t.item())


def _barrier(dist: Dist) -> None:
    if dist.active:
        torch.distributed.barrier()


# --------------------------------------------------------------------------- data
@dataclass
class Data:
    """The training set, the fixed held-out evaluation subset and the dataset's spec."""

    train: object
    eval_x: torch.Tensor
    eval_y: torch.Tensor
    spec: object
    n_train: int


def load_data(config: TrainConfig, datasets: tuple | None = None) -> Data:
    """Load the training split and a fixed (seed 0) held-out test subset of ``eval_size`` images.

    Args:
        config: the recipe (``dataset``, ``dataset_options``, ``train_size``, ``eval_size``).
        datasets: optional in-memory ``(train_set, test_set)`` used instead of loading
            ``config.dataset`` (e.g. :class:`engine.data.TensorImageDataset`); ``test_set`` may be
            ``None`` (no per-epoch evaluation). ``config.dataset`` still names the spec/card.
    """
    from engine.data import get_spec, load_dataset, take

    if datasets is None:
        train_set = load_dataset(config.dataset, split="train", **config.dataset_options)
        test_set = load_dataset(config.dataset, split="test", **config.dataset_options)
    else:
        train_set, test_set = _check_datasets(datasets)
    spec = getattr(train_set, "spec", None) or get_spec(config.dataset)
    n_train = len(train_set) if config.train_size is None else min(config.train_size, len(train_set))
    n_eval = 0 if test_set is None else min(config.eval_size, len(test_set))
    if n_eval > 0:
        eval_x, eval_y = take(test_set, n_eval, seed=0)
    else:
        eval_x, eval_y = torch.empty(0), torch.empty(0, dtype=torch.long)
    return Data(train_set, eval_x, eval_y.long(), spec, n_train)


def _check_datasets(datasets) -> tuple:
    """Validate ``(train_set, test_set or None)`` given to :func:`train` in memory."""
    if not isinstance(datasets, (tuple, list)) or len(datasets) != 2:
        raise InvalidParameterError("datasets must be a pair (train_set, test_set or None)")
    train_set, test_set = datasets
    if train_set is None or len(train_set) < 2:
        raise InvalidParameterError("the in-memory training set needs at least 2 images")
    return train_set, test_set


def _fetch(dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, C, H, W) and labels (B,) for ``indices`` (fast path for in-memory datasets)."""
    if hasattr(dataset, "batch"):
        return dataset.batch(indices)
    items = [dataset[int(i)] for i in indices]
    return torch.stack([im for im, _ in items]), torch.tensor([int(lb) for _, lb in items])


def epoch_batches(data: Data, config: TrainConfig, epoch: int, dist: Dist) -> list[torch.Tensor]:
    """This rank's index batches for ``epoch``: a seeded shuffle, sharded evenly over ranks.

    Every rank gets the same number of batches (the remainder is dropped), and batches smaller
    than 2 are dropped (BatchNorm needs two samples).
    """
    g = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    perm = torch.randperm(data.n_train, generator=g)
    per_rank = data.n_train // dist.world
    mine = perm[dist.rank::dist.world][:per_rank]
    bs = max(1, config.batch_size // dist.world)
    return [b for b in mine.split(bs) if len(b) >= 2]


# --------------------------------------------------------------------------- model & card
def build(config: TrainConfig, spec, device: torch.device) -> nn.Module:
    """The seeded model for the recipe (dual BN for AdvProp), on ``device``, in train mode."""
    from engine.models import build_model

    torch.manual_seed(config.seed)
    model = build_model(config.arch or spec.default_arch, spec.num_classes, tuple(spec.input_shape),
                        tuple(spec.mean), tuple(spec.std), dual_bn=config.method == "advprop",
                        **config.arch_kwargs)
    return model.to(device).train()


def selection_metric(config: TrainConfig) -> str:
    """The history key that picks the best epoch: robust accuracy for adversarial methods."""
    return "robust_acc" if config.method in ("pgd", "trades", "fast") else "clean_acc"


def eval_attack(config: TrainConfig) -> dict:
    """The exact attack of the per-epoch robust evaluation, as the card records it (the one
    ``AttackRecord`` layout every writer uses; the images are the card's ``eval_subset``)."""
    from engine.checkpoints import AttackRecord

    return AttackRecord("pgd", {"norm": config.norm, "eps": config.eps, "steps": config.eval_steps,
                                "alpha": 2.5 * config.eps / config.eval_steps, "restarts": 1,
                                "random_start": True}).to_dict()


#: how the training attacks craft (recorded in the card beside the recipe)
ATTACK_MODE = "eval-mode BN while crafting"


def make_training_card(model: nn.Module, config: TrainConfig, spec, history: list, status: str,
                       selected: str | None = None):
    """The model card: architecture, data, the recipe (the config, stored once: the card's typed
    recipe fields are read from it), the run's state, the last epoch's metrics and the history."""
    from engine.checkpoints import make_card

    last = history[-1] if history else {}
    recipe = {"config": config.to_dict(), "epochs_completed": len(history), "status": status,
              "attack_mode": ATTACK_MODE}
    if selected is not None:
        recipe["selected"] = selected
    metrics = {
        "clean_acc": last.get("clean_acc"), "robust_acc": last.get("robust_acc"),
        "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
        "attack": eval_attack(config), "eval_subset": {"split": "test", "n": config.eval_size, "seed": 0},
        "history": history,
    }
    return make_card(model, config.dataset, name=config.output_name, training=recipe, metrics=metrics)


def save_model(model: nn.Module, card: dict, path: Path) -> Path:
    """Save through ``engine.checkpoints.save_checkpoint`` (atomic weights + card). A write the
    disk refused raises its ``OSError`` (safetensors reports one as a ``SafetensorError`` naming
    the OS error: it is turned back into that ``OSError``), which callers inside
    ``engine.errors.storage`` turn into one sentence."""
    from engine.checkpoints import save_checkpoint

    try:
        return Path(save_checkpoint(model, card, path))
    except (OSError, RobustScopeError):
        raise
    except Exception as exc:  # noqa: BLE001 - only a refused write is translated; anything else passes
        refused = _os_error(exc, path)
        if refused is None:
            raise
        raise refused from exc


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _os_error(exc: BaseException, path) -> OSError | None:
    """The ``OSError`` a library's error message names (``"... (os error 28)"``), else None."""
    found = _OS_ERROR.search(str(exc))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code), str(path))


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a saved engine checkpoint's weights into ``model`` (same architecture)."""
    from engine.checkpoints import load

    loaded = load(path, device="cpu")
    model.load_state_dict(loaded.model.state_dict())


# --------------------------------------------------------------------------- evaluation
def evaluate(model: nn.Module, data: Data, config: TrainConfig, device: torch.device,
             batch_size: int = 256) -> dict:
    """Clean and PGD accuracy of ``model`` on the fixed held-out subset (eval mode, main BN).

    Returns:
        ``{"clean_acc": float, "robust_acc": float}`` in [0, 1] (``None`` when ``eval_size`` is 0).
    """
    from engine.training.adversary import craft

    if len(data.eval_y) == 0:
        return {"clean_acc": None, "robust_acc": None}
    was_training = model.training
    model.eval()
    clean = robust = 0
    try:
        for start in range(0, len(data.eval_y), batch_size):
            x = data.eval_x[start:start + batch_size].to(device)
            y = data.eval_y[start:start + batch_size].to(device)
            with torch.no_grad():
                clean += int((model(x).argmax(1) == y).sum())
            if config.eps > 0:
                x_adv = craft(model, x, y, norm=config.norm, eps=config.eps, steps=config.eval_steps,
                              alpha=2.5 * config.eps / config.eval_steps,
                              amp=config.amp and device.type == "cuda")
                with torch.no_grad():
                    robust += int((model(x_adv).argmax(1) == y).sum())
    finally:
        model.train(was_training)
    n = len(data.eval_y)
    return {"clean_acc": clean / n, "robust_acc": robust / n if config.eps > 0 else None}


# --------------------------------------------------------------------------- AMP
def _amp(config: TrainConfig, device: torch.device):
    """(autocast factory, GradScaler): bf16 autocast on CUDA when supported, else fp16 + scaler."""
    if not (config.amp and device.type == "cuda"):
        return nullcontext, torch.amp.GradScaler("cuda", enabled=False)
    if torch.cuda.is_bf16_supported():
        return partial(torch.autocast, "cuda", dtype=torch.bfloat16), torch.amp.GradScaler("cuda", enabled=False)
    return partial(torch.autocast, "cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


# --------------------------------------------------------------------------- the loop
class _Clock:
    """Elapsed time and ETA from the average batch time of this process."""

    def __init__(self, total_batches: int):
        self.start = time.monotonic()
        self.total = total_batches
        self.done = 0

    def tick(self) -> None:
        self.done += 1

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def eta(self) -> float | None:
        if self.done == 0:
            return None
        return self.elapsed() / self.done * max(self.total - self.done, 0)


def _resume(run_dir: Path, config: TrainConfig, model: nn.Module, optimizer, scaler) -> RunState:
    """Load the last completed epoch's weights + optimiser state, if the run folder has one."""
    state = read_state(run_dir)
    if state is None or state.last is None:
        return RunState(config=config.to_dict())
    if state.config and state.config != config.to_dict():
        changed = sorted(k for k in config.to_dict() if state.config.get(k) != config.to_dict()[k])
        raise CheckpointError(
            f"run folder {run_dir} was started with a different config (fields {changed}); "
            "use another run folder or the same config"
        )
    folder = Path(run_dir) / state.last
    load_weights(model, folder / "model")
    load_optimizer(folder, optimizer, scaler)
    log.info("resumed from %s (epoch %d)", folder, state.epoch)
    return state


def _train_epoch(step: Step, optimizer, scaler, data: Data, config: TrainConfig, epoch: int,
                 dist: Dist, device: torch.device, clock: _Clock, progress, should_stop) -> dict | None:
    """One epoch; returns ``{"train_loss", "train_acc", "lr"}`` or ``None`` when stopped."""
    loss_fn = METHOD_LOSSES[config.method]
    batches = epoch_batches(data, config, epoch, dist)
    torch.manual_seed(config.seed * 7919 + epoch * 31 + dist.rank)  # attack random starts
    loss_sum = correct = count = 0.0
    lr = config.lr
    step.model.train()
    for i, idx in enumerate(batches):
        if _any_rank(dist, bool(should_stop and should_stop()), device):
            return None
        lr = lr_at(config, epoch + i / len(batches))
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = _fetch(data.train, idx)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss, logits = loss_fn(step, x, y)
        optimizer.zero_grad(set_to_none=True)  # also clears gradients the attack may have left
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += float(loss.detach()) * len(y)
        correct += float((logits.detach().argmax(1) == y).sum())
        count += len(y)
        clock.tick()
        if progress is not None and dist.main:
            progress(ProgressEvent("batch", epoch + 1, config.epochs, i + 1, len(batches),
                                   {"train_loss": loss_sum / count, "train_acc": correct / count, "lr": lr},
                                   clock.elapsed(), clock.eta()))
    loss_sum, correct, count = _all_sum(dist, [loss_sum, correct, count], device)
    return {"train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1), "lr": lr}


def _save_epoch(run_dir: Path, raw: nn.Module, optimizer, scaler, config: TrainConfig, data: Data,
                state: RunState, record: dict) -> RunState:
    """Write ``epoch-NNNN/`` (checkpoint + optimiser), then swap the pointer to it.

    Raises:
        StorageError: the disk refused a write (full, read-only): one sentence. The half-written
            epoch folder is removed; the pointer and the earlier epochs are untouched.
    """
    folder = epoch_dir(run_dir, record["epoch"])
    with storage(f"cannot save epoch {record['epoch']} of the training run in {run_dir}"):
        try:
            new = _write_epoch(folder, run_dir, raw, optimizer, scaler, config, data, state, record)
        except BaseException:
            if folder.name not in (state.last, state.best):  # never a folder the pointer names
                shutil.rmtree(folder, ignore_errors=True)
            raise
    return new


def _write_epoch(folder: Path, run_dir: Path, raw: nn.Module, optimizer, scaler, config: TrainConfig, data: Data,
                 state: RunState, record: dict) -> RunState:
    """Write the epoch folder and commit the pointer to it (:func:`_save_epoch` without its error handling)."""
    epoch = record["epoch"]
    history = state.history + [record]
    folder.mkdir(parents=True, exist_ok=True)
    save_model(raw, make_training_card(raw, config, data.spec, history, "training"), folder / "model")
    save_optimizer(folder, optimizer, scaler)
    key = selection_metric(config)
    value = record.get(key)
    better = state.best is None or (value is not None and (state.best_metric is None or value >= state.best_metric))
    new = RunState(epoch=epoch, last=folder.name, best=folder.name if better else state.best,
                   best_metric=value if better else state.best_metric, history=history,
                   config=config.to_dict())
    commit_state(run_dir, new, config.snapshot_every)
    return new


PUBLISHED_FILE = "published.json"


def _publish_stem(run_dir: Path, out_dir: Path, name: str) -> Path:
    """Where this run publishes: chosen once (a free name, never another run's checkpoint) and
    remembered in ``run_dir/published.json``, so a resumed run replaces only its own files."""
    from engine.fileio import free_stem

    record = Path(run_dir) / PUBLISHED_FILE
    saved = read_json(record)
    if isinstance(saved, dict) and saved.get("folder") == str(out_dir.resolve()) and saved.get("stem"):
        return out_dir / str(saved["stem"])
    suffixes = [f"{variant}{ext}" for variant in ("", "-best") for ext in (".safetensors", ".json")]
    stem = free_stem(out_dir, name, suffixes)
    write_json_atomic(record, {"folder": str(out_dir.resolve()), "stem": stem.name})
    return stem


def publish(run_dir: Path, state: RunState, config: TrainConfig, spec, device_model: nn.Module,
            status: str, out_dir: Path | None = None) -> tuple[Path | None, Path | None]:
    """Copy the run's last and best checkpoints into the checkpoints folder (the model picker).

    Files: ``<name>.safetensors/.json`` (last) and ``<name>-best.safetensors/.json`` (best), each
    card named after its own file. ``<name>`` is the config's output name, or ``<name>-2``,
    ``-3`` ... when another run already published under it: a run never overwrites another's
    checkpoint (see :func:`_publish_stem`).

    Raises:
        StorageError: the checkpoints folder refused a write (read-only, full disk): one
            sentence that says the epochs are still kept in ``run_dir``.
    """
    if state.last is None:
        return None, None
    out_dir = Path(out_dir) if out_dir is not None else checkpoints_root()
    with storage(f"cannot publish the trained model in {out_dir} (its epochs are kept in {run_dir})"):
        return _publish_files(run_dir, state, config, spec, device_model, status, out_dir)


def _publish_files(run_dir: Path, state: RunState, config: TrainConfig, spec, device_model: nn.Module,
                   status: str, out_dir: Path) -> tuple[Path, Path]:
    """Write the published files (:func:`publish` without its error handling)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = _publish_stem(Path(run_dir), out_dir, config.output_name)
    paths = []
    for folder_name, suffix in ((state.last, ""), (state.best, "-best")):
        history = [h for h in state.history if h["epoch"] <= int(folder_name.split("-")[1])]
        load_weights(device_model, Path(run_dir) / folder_name / "model")
        selected = "last" if suffix == "" else f"best {selection_metric(config)}"
        card = make_training_card(device_model, config, spec, history, status, selected=selected)
        target = out_dir / f"{stem.name}{suffix}"
        paths.append(save_model(device_model, card.replace(name=target.name), target))
    load_weights(device_model, Path(run_dir) / state.last / "model")
    return paths[0], paths[1]


def publish_saved(config: TrainConfig, run_dir: str | os.PathLike, status: str = "failed",
                  checkpoint_dir: str | os.PathLike | None = None) -> tuple[Path | None, Path | None]:
    """Publish the last and best finished epochs kept in ``run_dir`` without training (e.g. a
    background job given up on after its worker died too often), as :func:`publish` does at the
    end of a run; the cards record ``status``. Returns ``(None, None)`` when no epoch finished."""
    from engine.checkpoints import load

    state = read_state(Path(run_dir))
    if state is None or state.last is None:
        return None, None
    model = load(Path(run_dir) / state.last / "model", device="cpu").model
    return publish(Path(run_dir), state, config, None, model, status, checkpoint_dir)


def train(config: TrainConfig, run_dir: str | os.PathLike | None = None,
          progress: Callable[[ProgressEvent], None] | None = None,
          should_stop: Callable[[], bool] | None = None, resume: bool = True,
          checkpoint_dir: str | os.PathLike | None = None, datasets: tuple | None = None) -> TrainResult:
    """Train a model with ``config``; resumable, cancellable, DDP-aware.

    Args:
        config: the recipe (validated here).
        run_dir: the folder of resumable state; default ``$ROBUSTSCOPE_RUNS/train/<output_name>``.
        progress: called on rank 0 with a :class:`ProgressEvent` after every batch and epoch.
        should_stop: polled before every batch; ``True`` stops at that batch boundary, keeping
            (and publishing) the last completed epoch's checkpoint.
        resume: continue from the run folder's last completed epoch when it has one.
        checkpoint_dir: where the finished model is published (default ``$ROBUSTSCOPE_CHECKPOINTS``).
        datasets: optional in-memory ``(train_set, test_set or None)`` to train on instead of
            loading ``config.dataset`` (see :func:`load_data`); the sets yield ``(image (C, H, W)
            in [0, 1], label)`` and ``train_set.spec`` (if any) gives the model's shape/normalisation.

    Returns:
        :class:`TrainResult`. Under ``torchrun`` every rank trains its shard of each batch
        (``batch_size`` is global) and rank 0 evaluates and writes checkpoints.

    Raises:
        StorageError: the run folder or the checkpoints folder refused a write (read-only, full
            disk): one sentence; the run folder's earlier epochs are untouched (resume continues).
    """
    from engine.device import resolve_device

    config.validate()
    check_world(config)
    started = time.monotonic()
    device = resolve_device(config.device)
    dist = setup_distributed(device)
    if dist.active and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    run_dir = Path(run_dir) if run_dir is not None else runs_root() / "train" / config.output_name
    with storage(f"cannot write the training run in {run_dir}"):
        run_dir.mkdir(parents=True, exist_ok=True)
        if dist.main:
            write_json_atomic(run_dir / "config.json", config.to_dict())
    data = load_data(config, datasets)
    raw = build(config, data.spec, device)
    optimizer = make_optimizer(config, raw)
    autocast, scaler = _amp(config, device)
    state = _resume(run_dir, config, raw, optimizer, scaler) if resume else RunState(config=config.to_dict())
    resumed_from = state.epoch
    model = nn.parallel.DistributedDataParallel(raw) if dist.active else raw
    step = Step(model=model, raw=raw, config=config, autocast=autocast)
    clock = _Clock(len(epoch_batches(data, config, 0, dist)) * (config.epochs - state.epoch))
    log.info("training %s on %s (%s, %d images, device %s, world %d) from epoch %d",
             config.method, config.dataset, config.arch or data.spec.default_arch, data.n_train,
             device, dist.world, state.epoch)
    status = "done"
    for epoch in range(state.epoch, config.epochs):
        t0 = time.monotonic()
        record = _train_epoch(step, optimizer, scaler, data, config, epoch, dist, device, clock,
                              progress, should_stop)
        if record is None:
            status = "cancelled"
            log.info("stop requested during epoch %d; keeping epoch %d's checkpoint", epoch + 1, state.epoch)
            break
        if dist.main:
            record = {"epoch": epoch + 1, **record, **evaluate(raw, data, config, device),
                      "seconds": time.monotonic() - t0}
            state = _save_epoch(run_dir, raw, optimizer, scaler, config, data, state, record)
            log.info("epoch %d/%d %s", epoch + 1, config.epochs, _fmt(record))
            if progress is not None:
                progress(ProgressEvent("epoch", epoch + 1, config.epochs, 0, 0, record,
                                       clock.elapsed(), clock.eta()))
        _barrier(dist)
    checkpoint = best = None
    state = read_state(run_dir) or state  # every rank reports the saved epochs
    if dist.main:
        checkpoint, best = publish(run_dir, state, config, data.spec, raw, status, checkpoint_dir)
        if checkpoint is not None:
            log.info("published %s and %s", checkpoint, best)
    _barrier(dist)
    return TrainResult(status, state.epoch, state.history, checkpoint, best, run_dir,
                       time.monotonic() - started, resumed_from)


def _fmt(record: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())

