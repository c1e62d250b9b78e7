"""KAR/ROAR retraining through the project's training engine (Hooker et al. 2019, "A Benchmark for
Interpretability Methods in Deep Neural Networks").

Without retraining, a keep/remove curve mixes two effects: the removed pixels carried evidence,
and the masked images are out of distribution for the model. KAR ("keep and retrain") and ROAR
("remove and retrain") separate them by training a fresh model of the same architecture on
training images masked the same way, then measuring its accuracy on the masked test images.

:func:`engine_retrainer` builds the ``retrain`` callable that
:func:`engine.attribution.keep_remove_curves` accepts::

    retrain = engine_retrainer(train_x, train_y, retrain_config("shapes", epochs=2))
    curves = keep_remove_curves(models, test_x, test_y, "remove", retrain=retrain)

For each curve point it masks the training set in batches with ``request.perturb`` (the original
model's attributions rank the pixels), trains from scratch with :func:`engine.training.train` on
those images in memory (in a temporary run folder under ``$ROBUSTSCOPE_RUNS/retrain``; nothing is
published to the checkpoints folder), and returns the trained model in eval mode on the original
model's device.
"""
from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from engine.attribution.curves import RetrainRequest, RetrainStopped
from engine.attribution.inputs import as_images, as_labels
from engine.models.state import model_device
from engine.errors import InvalidParameterError
from engine.training import CostEstimate, TrainConfig, estimate_cost, runs_root, train

#: The stages a retraining reports progress for, in order.
STAGES = ("perturb", "train")
#: Default learning recipe for retraining: short runs, so AdamW (forgiving) and no per-epoch eval.
RETRAIN_DEFAULTS = {"method": "standard", "optimizer": "adamw", "lr": 3e-3, "weight_decay": 0.0,
                    "batch_size": 64, "schedule": "cosine", "eval_size": 0}


@dataclass(frozen=True)
class RetrainProgress:
    """One progress report of a retraining.

    Attributes:
        name, mode, fraction: the curve point being retrained (model name, "keep"/"remove", f).
        stage: "perturb" (masking the training images) or "train" (training batches).
        done, total: batches done / in all, within this stage of this point.
    """

    name: str
    mode: str
    fraction: float
    stage: str
    done: int
    total: int


@dataclass(frozen=True)
class RetrainRecord:
    """What one retraining did (kept in :attr:`EngineRetrainer.records`).

    Attributes:
        name, mode, fraction: the curve point.
        n_train, epochs: training images and epochs of the fresh model.
        train_loss, train_acc: the last epoch's running loss / accuracy on the masked images.
        seconds: wall time of the point (masking + training + loading).
    """

    name: str
    mode: str
    fraction: float
    n_train: int
    epochs: int
    train_loss: float | None
    train_acc: float | None
    seconds: float

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


def retrain_config(dataset: str, epochs: int = 1, seed: int = 0, **overrides) -> TrainConfig:
    """A validated recipe for retraining: :data:`RETRAIN_DEFAULTS` (standard training, AdamW,
    no per-epoch evaluation: the curve evaluates the model) plus ``overrides``.

    Args:
        dataset: the registered dataset whose spec (classes, normalisation) the models use.
        epochs: epochs per retraining (>= 1); seed: weight init and shuffling seed.
        **overrides: any other :class:`engine.training.TrainConfig` field (e.g. ``device``).

    Raises:
        InvalidParameterError: an unknown field or a value out of range (named).
    """
    values = {**RETRAIN_DEFAULTS, "dataset": dataset, "epochs": epochs, "seed": seed, **overrides}
    return TrainConfig.from_dict(values).validate()


def retrain_cost(config: TrainConfig, n_train: int, retrainings: int, device_kind: str = "cpu",
                 arch: str | None = None) -> CostEstimate:
    """Rough work and time of ``retrainings`` runs of ``config`` on ``n_train`` images each
    (:func:`engine.training.estimate_cost` times the number of runs; masking not included)."""
    if isinstance(retrainings, bool) or not isinstance(retrainings, int) or retrainings < 0:
        raise InvalidParameterError(f"retrainings must be a whole number >= 0, got {retrainings!r}")
    one = estimate_cost(config, n_train, device_kind, arch)
    return CostEstimate(one.passes, one.image_passes * retrainings,
                        one.seconds_low * retrainings, one.seconds_high * retrainings)


class EngineRetrainer:
    """``retrain(request) -> model``: a fresh model trained on the masked training set.

    Build it with :func:`engine_retrainer` (which validates the arguments). Each call appends a
    :class:`RetrainRecord` to :attr:`records`.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, config: TrainConfig,
                 perturb_batch_size: int, progress: Callable[[RetrainProgress], None] | None,
                 should_stop: Callable[[], bool] | None, work_dir: Path | None):
        self.images, self.labels, self.config = images, labels, config  # (N, C, H, W), (N,)
        self.perturb_batch_size = perturb_batch_size
        self.progress, self.should_stop, self.work_dir = progress, should_stop, work_dir
        self.records: list[RetrainRecord] = []

    def __call__(self, request: RetrainRequest) -> nn.Module:
        """Mask the training set for ``request``, train from scratch, return the model (eval mode).

        Raises:
            RetrainStopped: ``should_stop`` returned True (masking or training was interrupted).
            InvalidParameterError: the model does not fit the training images or the dataset.
        """
        started = time.monotonic()
        spec = self.spec_for(request.model)
        masked = self.perturbed(request)
        model, history = self.fit(request, masked, spec)
        last = history[-1] if history else {}
        self.records.append(RetrainRecord(
            request.name, request.mode, request.fraction, len(self.labels), self.config.epochs,
            last.get("train_loss"), last.get("train_acc"), time.monotonic() - started,
        ))
        return model

    # ------------------------------------------------------------------ steps
    def perturbed(self, request: RetrainRequest) -> torch.Tensor:
        """The training images masked by ``request.perturb``, batch by batch: (N, C, H, W) on CPU."""
        chunks = []
        batches = list(zip(self.images.split(self.perturb_batch_size), self.labels.split(self.perturb_batch_size)))
        for i, (x, y) in enumerate(batches):
            self._check_stop()
            chunks.append(request.perturb(x, y).detach().cpu())
            self._report(request, "perturb", i + 1, len(batches))
        return torch.cat(chunks)

    def spec_for(self, model: nn.Module):
        """The dataset spec the fresh model is built from: the model's own input shape and
        normalisation when it is an ``engine.models`` Classifier, else the dataset's."""
        from engine.data import get_spec

        spec = get_spec(self.config.dataset)
        shape = tuple(self.images.shape[1:])
        if not hasattr(model, "arch"):
            return dataclasses.replace(spec, input_shape=shape)
        from engine.checkpoints.making import model_fields

        fields = model_fields(model)
        if fields["num_classes"] != spec.num_classes:
            raise InvalidParameterError(
                f"the model has {fields['num_classes']} classes but dataset {self.config.dataset!r} "
                f"has {spec.num_classes}; retrain with the model's own dataset"
            )
        if tuple(fields["input_shape"]) != shape:
            raise InvalidParameterError(
                f"the training images are {shape} but the model takes {tuple(fields['input_shape'])}"
            )
        return dataclasses.replace(spec, input_shape=shape, mean=tuple(fields["mean"]), std=tuple(fields["std"]))

    def config_for(self, request: RetrainRequest) -> TrainConfig:
        """The recipe of this point: the architecture of ``request.model`` (when it records one),
        its device, and a file-safe run name."""
        arch = {}
        if hasattr(request.model, "arch"):
            arch = {"arch": request.model.arch, "arch_kwargs": dict(request.model.arch_kwargs)}
        name = f"retrain-{request.mode}-{round(request.fraction * 1000):04d}"
        return dataclasses.replace(self.config, device=str(model_device(request.model)), name=name, **arch)

    def fit(self, request: RetrainRequest, masked: torch.Tensor, spec) -> tuple[nn.Module, list]:
        """Train from scratch on ``masked`` in a temporary run folder; return (model, history)."""
        from engine.checkpoints import load
        from engine.data import TensorImageDataset

        config = self.config_for(request)
        root = self.work_dir if self.work_dir is not None else runs_root() / "retrain"
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{config.name}-", dir=root) as tmp:
            result = train(
                config, run_dir=Path(tmp) / "run", checkpoint_dir=Path(tmp) / "model", resume=False,
                datasets=(TensorImageDataset(masked, self.labels, spec), None),
                progress=lambda event: self._train_progress(request, event), should_stop=self.should_stop,
            )
            if result.status != "done" or result.checkpoint is None:
                raise RetrainStopped(f"retraining of {request.name} {request.mode}@{request.fraction:g} was stopped")
            model = load(result.checkpoint, device=model_device(request.model)).model
        return model.eval(), result.history

    # ------------------------------------------------------------------ reporting
    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise RetrainStopped("retraining was stopped")

    def _train_progress(self, request: RetrainRequest, event) -> None:
        if event.kind == "batch":
            done = (event.epoch - 1) * event.batches + event.batch
            self._report(request, "train", done, event.epochs * event.batches)

    def _report(self, request: RetrainRequest, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(RetrainProgress(request.name, request.mode, request.fraction, stage, done, total))


def engine_retrainer(
    train_images,
    train_labels,
    config: TrainConfig,
    *,
    perturb_batch_size: int = 256,
    progress: Callable[[RetrainProgress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    work_dir: str | Path | None = None,
) -> EngineRetrainer:
    """A ``retrain`` callable for :func:`engine.attribution.keep_remove_curves` (KAR/ROAR).

    For each curve point it masks ``train_images`` with ``request.perturb`` (exactly like the
    curve masks its evaluation images), trains a fresh model of ``request.model``'s architecture
    (``arch``/``arch_kwargs``/normalisation of an ``engine.models`` Classifier; ``config.arch``
    otherwise) from scratch with :func:`engine.training.train` on the masked images, and returns
    it in eval mode on the original model's device. The original model is not modified.

    Args:
        train_images: (N, C, H, W) float in [0, 1], N >= 2 (e.g. ``engine.data.take`` of the
            training split); train_labels: (N,) class indices of ``config.dataset``.
        config: the training recipe (see :func:`retrain_config`); ``device`` and ``name`` are set
            per point, ``arch``/``arch_kwargs`` too for engine Classifiers.
        perturb_batch_size: images per attribution batch while masking.
        progress: ``progress(RetrainProgress)`` after each masking batch and training batch.
        should_stop: polled between batches; True raises :class:`RetrainStopped`, which ends the
            curve early (``stopped=True``).
        work_dir: where the temporary run folders go (default ``$ROBUSTSCOPE_RUNS/retrain``);
            each is deleted once its model is loaded. Nothing goes to the checkpoints folder.

    Returns:
        An :class:`EngineRetrainer` (call it with a :class:`RetrainRequest`).

    Raises:
        InvalidParameterError: bad images/labels, an invalid config, a bad batch size or callback.
    """
    if not isinstance(config, TrainConfig):
        raise InvalidParameterError(f"config must be an engine.training.TrainConfig, got {type(config).__name__}")
    config.validate()
    from engine.data import get_spec

    images = as_images(train_images, "train_images")
    if images.shape[0] < 2:
        raise InvalidParameterError(f"retraining needs at least 2 training images, got {images.shape[0]}")
    labels = as_labels(train_labels, images.shape[0], get_spec(config.dataset).num_classes, "train_labels")
    if isinstance(perturb_batch_size, bool) or not isinstance(perturb_batch_size, int) or perturb_batch_size < 1:
        raise InvalidParameterError(f"perturb_batch_size must be a whole number >= 1, got {perturb_batch_size!r}")
    for key, value in (("progress", progress), ("should_stop", should_stop)):
        if value is not None and not callable(value):
            raise InvalidParameterError(f"{key} must be a function or None, got {type(value).__name__}")
    return EngineRetrainer(images.cpu(), labels, config, perturb_batch_size, progress, should_stop,
                           None if work_dir is None else Path(work_dir))
