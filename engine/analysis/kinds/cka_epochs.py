"""CKA across a training run's epochs as an analysis: :class:`~engine.analysis.requests.CKARunRequest`
-> each layer's CKA between the kept epoch snapshots of one or two runs (Cianfarani et al. 2022).

``run`` is ``engine.similarity.structure.cka_across_epochs`` run by run, on the first ``n`` images of
the split (streamed, every snapshot of the run on each batch), what ``python -m engine cka --run``
and the Representations page computed before. The stored result keeps each run's epochs × layers
matrix as the array ``"<run #>/matrix"`` and the rest (run folder, training method, epochs,
layers, time, warnings) in the metadata. ``decode`` rebuilds one :class:`RunEpochs` per run;
``report`` gives the JSON of ``cka --run --json`` and ``rows`` its CSV, both without torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine.analysis.base import ModelRef, Payload, Request, finite
from engine.analysis.fields import (
    CKA_KERNELS,
    CKA_POOLINGS,
    MAX_BATCH,
    MAX_IMAGES,
    SPLITS,
    check_choice,
    check_dataset,
    check_int,
    check_names,
)
from engine.analysis.registry import register
from engine.analysis.schema import Array, Schema
from engine.catalogue import CKA_REFERENCES
from engine.errors import InvalidParameterError

#: most kept snapshots of one run a request may name
MAX_SNAPSHOTS = 1000


def _check_run(name: str, snapshots, epochs, optional: bool = False) -> None:
    """Two to :data:`MAX_SNAPSHOTS` snapshots of one run with their epochs, increasing (``optional``:
    or none at all)."""
    if optional and snapshots == () and epochs == ():
        return
    if not isinstance(snapshots, tuple) or not 2 <= len(snapshots) <= MAX_SNAPSHOTS:
        raise InvalidParameterError(f"{name} must list 2 to {MAX_SNAPSHOTS} epoch snapshots of a run")
    if not isinstance(epochs, tuple) or len(epochs) != len(snapshots):
        raise InvalidParameterError(f"epochs_{name[-1]} must give one epoch per snapshot of {name}, got {epochs!r}")
    for epoch in epochs:
        check_int("epoch", epoch, 0, 1_000_000)
    if list(epochs) != sorted(set(epochs)):
        raise InvalidParameterError(f"the epochs of {name} must increase, got {list(epochs)}")


@register(title="CKA across epochs", page="representations")
@dataclass(frozen=True)
class CKARunRequest(Request):
    """Each layer's CKA across the kept epoch snapshots of one or two training runs (Cianfarani et
    al. 2022, ``engine.similarity.structure.cka_across_epochs``, run by run): ``python -m engine
    cka --run``, the Representations page's "Across epochs".

    Attributes:
        run_a, run_b: the snapshots of each run (``run_b`` empty for one run), two or more each; a
            snapshot trained again or replaced has a new sha256, so a new key.
        epochs_a, epochs_b: their epochs, increasing, in the same order.
        reference: "final" (each epoch vs the last) or "consecutive" (each epoch vs the one before).
        dataset, split, n, batch_size, kernel, pooling: as for the ``cka`` kind's request (the first ``n``
            images of the split; more than the split holds uses the whole split).
        layers_a, layers_b: each run's layers (None: its final snapshot's default layers).
    """

    kind = "cka_epochs"
    MODEL_FIELDS = ("run_a", "run_b")

    run_a: tuple[ModelRef, ...]
    epochs_a: tuple[int, ...]
    dataset: str
    run_b: tuple[ModelRef, ...] = ()
    epochs_b: tuple[int, ...] = ()
    reference: str = "final"
    split: str = "test"
    n: int = 2000
    batch_size: int = 200
    layers_a: tuple[str, ...] | None = None
    layers_b: tuple[str, ...] | None = None
    kernel: str = "linear"
    pooling: str = "flatten"

    def _check(self) -> None:
        _check_run("run_a", self.run_a, self.epochs_a)
        _check_run("run_b", self.run_b, self.epochs_b, optional=True)
        check_choice("reference", self.reference, CKA_REFERENCES)
        check_dataset(self.dataset)
        check_choice("split", self.split, SPLITS)
        check_int("n", self.n, 4, MAX_IMAGES)
        check_int("batch size", self.batch_size, 4, MAX_BATCH)
        check_names("layers_a", self.layers_a)
        check_names("layers_b", self.layers_b)
        if not self.run_b and self.layers_b is not None:
            raise InvalidParameterError("layers_b needs a second run (run_b)")
        check_choice("kernel", self.kernel, CKA_KERNELS)
        check_choice("pooling", self.pooling, CKA_POOLINGS)

    def runs(self) -> tuple[tuple[tuple[ModelRef, ...], tuple[int, ...], tuple[str, ...] | None], ...]:
        """``((snapshots, epochs, layers), ...)`` of each run, in order."""
        runs = ((self.run_a, self.epochs_a, self.layers_a), (self.run_b, self.epochs_b, self.layers_b))
        return tuple(run for run in runs if run[0])

    def folders(self) -> tuple[str, ...]:
        """Each run's folder (its snapshots are ``<folder>/epoch-<k>/model``)."""
        return tuple(str(Path(snapshots[-1].path).parent.parent) for snapshots, _, _ in self.runs())

    def describe(self) -> str:
        names = " vs ".join(f"{Path(folder).parent.name}/{Path(folder).name}" for folder in self.folders())
        return f"{self.kind}: {names} · each epoch vs the {self.reference} one · {self.dataset} · {self.n} images"


class RunEpochs(NamedTuple):
    """One run of a decoded result: its folder, its training method and its
    ``engine.similarity.structure.EpochCKA``."""

    run: str
    method: str
    cka: object


def _key(index: int) -> str:
    return f"{index}/matrix"


def run(request, ctx) -> Payload:
    """Each run's layers' CKA across its epochs (see the module docstring)."""
    from engine.analysis.runner import BAR

    dataset = ctx.images(request.dataset, request.split)
    width = BAR // len(request.runs())
    arrays, runs, notes = {}, [], []
    for index, (folder, (refs, epochs, layers)) in enumerate(zip(request.folders(), request.runs())):
        method, result, found = _across_epochs(request, ctx, dataset, refs, epochs, layers,
                                               ctx.stage(index * width, width))
        notes += [note for note in found if note not in notes]
        arrays[_key(index)] = np.asarray(result.matrix, dtype=np.float64)
        runs.append({"run": folder, "method": method, "epochs": list(result.epochs), "layers": list(result.layers),
                     "reference": result.reference, "n": result.n, "seconds": result.seconds,
                     "warnings": list(result.warnings)})
    return Payload(arrays, finite({"runs": runs, "notes": notes, "device": ctx.device}))


def _across_epochs(request, ctx, dataset, refs, epochs, layers, progress):
    """``(training method, EpochCKA, notes)`` of one run's snapshots (its final one's card gives
    the method and is checked against the dataset)."""
    from engine.analysis.kinds.cka import streamed
    from engine.similarity.structure import cka_across_epochs

    snapshots = [ctx.load(ref) for ref in refs]
    notes = ctx.models(refs[-1:], dataset, classes=False)[1]
    result = streamed(ctx, "CKA across epochs", lambda: cka_across_epochs(
        [(epoch, loaded.model) for epoch, loaded in zip(epochs, snapshots)], dataset, layers=layers,
        reference=request.reference, n=request.n, batch_size=request.batch_size, kernel=request.kernel,
        pooling=request.pooling, progress=progress, should_stop=ctx.stopped))
    return snapshots[-1].card.training.method, result, notes


def decode(result, **_options) -> list[RunEpochs]:
    """One :class:`RunEpochs` per run, in request order (what the Representations page plots)."""
    from engine.similarity.structure import EpochCKA

    return [RunEpochs(entry["run"], entry["method"], EpochCKA(
        tuple(entry["epochs"]), tuple(entry["layers"]), np.asarray(result.arrays[_key(i)], dtype=np.float64),
        entry["reference"], int(entry["n"]), float(entry["seconds"]), tuple(entry["warnings"])))
        for i, entry in enumerate(result.meta["runs"])]


def _runs(result) -> list[dict]:
    """Each run as ``cka --run --json`` prints it: run, method, then ``EpochCKA.to_dict()``'s fields."""
    out = []
    for i, entry in enumerate(result.meta["runs"]):
        matrix = np.asarray(result.arrays[_key(i)]).tolist()
        out.append({"run": entry["run"], "method": entry["method"], "epochs": entry["epochs"],
                    "layers": entry["layers"], "matrix": matrix, "reference": entry["reference"], "n": entry["n"],
                    "seconds": entry["seconds"], "warnings": entry["warnings"]})
    return out


def report(result) -> dict:
    """The JSON of ``python -m engine cka --run ... --json`` (torch-free)."""
    return {"dataset": result.request.dataset, "runs": _runs(result)}


def rows(result) -> list[dict]:
    """Long-format rows ``{run, epoch, layer, cka}`` (the CSV of ``cka --run --out``)."""
    return [{"run": entry["run"], "epoch": epoch, "layer": layer, "cka": entry["matrix"][i][j]}
            for entry in _runs(result) for i, epoch in enumerate(entry["epochs"])
            for j, layer in enumerate(entry["layers"])]


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"runs": [{"run": str, "method": (str, None), "epochs": [int], "layers": [str], "reference": (int, str, None),
                    "n": int, "seconds": float, "warnings": [str]}], "notes": [str], "device": str},
    arrays={"*/matrix": Array("f", 2)},
    rule=lambda meta, arrays: None if all(
        np.shape(arrays.get(_key(i))) == (len(run["epochs"]), len(run["layers"])) for i, run in enumerate(meta["runs"])
    ) else "a run's matrix is not epochs × layers",
)
