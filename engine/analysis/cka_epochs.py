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

from typing import NamedTuple

import numpy as np

from engine.analysis.base import Payload, finite


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
    from engine import data as edata
    from engine.analysis.evaluate import BAR, stage_progress

    dataset = edata.load_dataset(request.dataset, split=request.split)
    width = BAR // len(request.runs())
    arrays, runs, notes = {}, [], []
    for index, (folder, (refs, epochs, layers)) in enumerate(zip(request.folders(), request.runs())):
        method, result, found = _across_epochs(request, ctx, dataset, refs, epochs, layers,
                                               stage_progress(ctx, index * width, width))
        notes += [note for note in found if note not in notes]
        arrays[_key(index)] = np.asarray(result.matrix, dtype=np.float64)
        runs.append({"run": folder, "method": method, "epochs": list(result.epochs), "layers": list(result.layers),
                     "reference": result.reference, "n": result.n, "seconds": result.seconds,
                     "warnings": list(result.warnings)})
    return Payload(arrays, finite({"runs": runs, "notes": notes, "device": ctx.device}))


def _across_epochs(request, ctx, dataset, refs, epochs, layers, progress):
    """``(training method, EpochCKA, notes)`` of one run's snapshots (its final one's card gives
    the method and is checked against the dataset)."""
    from engine.analysis.cka import check_models, streamed
    from engine.similarity.structure import cka_across_epochs

    snapshots = [ctx.load(ref) for ref in refs]
    notes = check_models(snapshots[-1:], dataset, request.dataset, classes=False)
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
