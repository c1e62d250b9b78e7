"""AdvProp's branches as an analysis: :class:`~engine.analysis.requests.AdvPropRequest` -> clean, PGD
and mean distorted accuracy of an AdvProp model's main and aux BatchNorm branches and of the
standard and robust models beside it (Xie et al. 2019).

``run`` is ``engine.generalisation.advprop.compare_branches`` on the first ``n`` test images, with
torch's RNG seeded with :data:`SEED` around it (PGD's random starts), what ``python -m engine
advprop`` and the Models page computed before. The stored result keeps each numeric column of the
table as an array named by the column and the text columns (model, attack, distortions) in the
metadata, with the column order. ``decode`` rebuilds the table (a DataFrame with
``engine.generalisation.advprop.COLUMNS``); ``report`` gives the JSON of ``advprop --json`` and
``rows`` its records, both without torch.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite
from engine.analysis.fields import MAX_BATCH, MAX_IMAGES, SEVERITY_LEVELS, check_dataset, check_float, check_int
from engine.analysis.registry import register
from engine.analysis.schema import Array, Schema
from engine.errors import InvalidParameterError

#: most checkpoints an AdvProp comparison sets beside the AdvProp model (a standard and a robust one)
MAX_PEERS = 2


@register(title="AdvProp branches vs standard and robust", page="models")
@dataclass(frozen=True)
class AdvPropRequest(Request):
    """AdvProp's two BatchNorm branches beside a standard and a robust model (Xie et al. 2019,
    ``engine.generalisation.advprop.compare_branches``): clean, PGD and mean distorted accuracy on the
    first ``n`` test images (``python -m engine advprop``, the Models page).

    Attributes:
        model: the AdvProp (dual-BN) checkpoint, named by its main branch; both branches are evaluated.
        peers: the standard and/or robust checkpoints of its dataset it is compared with, at most
            :data:`MAX_PEERS` (chosen when the request is made: ``engine.analysis.kinds.advprop.advprop_request``).
        dataset: the test split the first ``n`` images come from.
        eps, steps: PGD's ε (None: the dataset's usual one) and steps; torch's RNG is seeded around
            the comparison, so PGD's random starts repeat.
        severity: the distortions' severity; batch_size: images per pass (PGD draws per batch).
    """

    kind = "advprop"
    MODEL_FIELDS = ("model", "peers")

    model: ModelRef
    dataset: str
    peers: tuple[ModelRef, ...] = ()
    n: int = 500
    eps: float | None = None
    steps: int = 20
    severity: int = 3
    batch_size: int = 128

    def _check(self) -> None:
        if self.model.branch != "main":
            raise InvalidParameterError("name the AdvProp checkpoint by its main branch: both branches are evaluated")
        if not isinstance(self.peers, tuple) or len(self.peers) > MAX_PEERS:
            raise InvalidParameterError(f"peers lists at most {MAX_PEERS} checkpoints, got {self.peers!r}")
        check_dataset(self.dataset)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_float("eps", self.eps, 0.0, 1e4)
        check_int("steps", self.steps, 1, 10_000)
        check_int("severity", self.severity, min(SEVERITY_LEVELS), max(SEVERITY_LEVELS))
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        peers = ", ".join(ref.name for ref in self.peers) or "no peers"
        return (f"{self.kind}: {self.model.name} (main and aux BN) vs {peers} · {self.dataset} · {self.n} images · "
                f"PGD-{self.steps}")

#: torch's seed around the comparison (PGD's random starts)
SEED = 0
#: the table's columns stored as text in the metadata (the others are arrays)
TEXT_COLUMNS = ("model", "attack", "distortions")


def advprop_request(infos, path: str, **settings):
    """The :class:`~engine.analysis.AdvPropRequest` comparing the AdvProp checkpoint at ``path``
    with the standard and robust checkpoints of its dataset in the listing ``infos``
    (``engine.generalisation.advprop.comparison_peers``); ``settings``: n, eps, steps, severity,
    batch_size."""
    from engine.analysis.kinds.advprop import AdvPropRequest
    from engine.generalisation.advprop import comparison_peers

    adv, peers = comparison_peers(infos, path)
    return AdvPropRequest(model=ModelRef.of(path), dataset=adv.card.dataset,
                          peers=tuple(ModelRef.of(info.path) for info in peers), **settings).validate()


def branches(request) -> tuple[ModelRef, ...]:
    """The models of the comparison, in table order: the AdvProp model's main and aux branch, then
    its peers."""
    return (request.model, replace(request.model, branch="aux"), *request.peers)


def build_attack(request):
    """The request's PGD (``engine.attacks.make_attack``; the dataset's ε unless the request sets one)."""
    from engine.attacks import make_attack

    params = {"steps": request.steps} | ({"eps": request.eps} if request.eps is not None else {})
    return make_attack("pgd", request.dataset, **params)


def check(request) -> None:
    """Torch-side checks before a job is queued: the model is an AdvProp one and PGD takes the settings."""
    if not request.model.card().dual_bn:
        raise InvalidParameterError(f"{request.model.path} is not an AdvProp (dual-BN) checkpoint")
    build_attack(request)


def run(request, ctx) -> Payload:
    """Compare the branches and peers (see the module docstring)."""
    from engine import data as edata
    from engine.generalisation.advprop import branch_labels, compare_branches

    dataset = ctx.images(request.dataset, n=request.n)
    loaded, notes = ctx.models(branches(request), dataset)
    images, labels = edata.take(dataset, request.n)
    names = [*branch_labels(loaded[0].name), *(peer.name for peer in loaded[2:])]
    ctx.check_stop()
    models = {name: m.model for name, m in zip(names, loaded)}
    with ctx.seeded(SEED):
        table = compare_branches(models, images, labels, build_attack(request), severity=request.severity,
                                 batch_size=request.batch_size, progress=ctx.report, should_stop=ctx.stopped)
    if ctx.stopped() or len(table) < len(models):
        raise AnalysisCancelled("the AdvProp comparison stopped before it finished; nothing was stored")
    arrays = {column: table[column].to_numpy() for column in table.columns if column not in TEXT_COLUMNS}
    meta = {"columns": list(table.columns), "text": {column: table[column].tolist() for column in TEXT_COLUMNS},
            "compute_seconds": table.attrs.get("seconds"), "notes": notes, "device": ctx.device}
    return Payload(arrays, finite(meta))


def rows(result) -> list[dict]:
    """The table's records, column by column in its order (``advprop --json``'s ``rows``)."""
    text = result.meta["text"]
    columns = {name: text[name] if name in text else np.asarray(result.arrays[name]).tolist()
               for name in result.meta["columns"]}
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def decode(result, **_options):
    """The comparison table (a DataFrame, ``engine.generalisation.advprop.COLUMNS``), as
    ``compare_branches`` returned it."""
    import pandas as pd

    table = pd.DataFrame(rows(result), columns=result.meta["columns"])
    table.attrs["seconds"] = result.meta.get("compute_seconds")
    return table


def report(result) -> dict:
    """The JSON of ``python -m engine advprop --json`` (torch-free)."""
    request = result.request
    return {"checkpoint": request.model.path, "dataset": request.dataset, "n": request.n, "rows": rows(result)}


def passes(request, _per, _loaded) -> tuple[float, int]:
    """Cost model per image (its models: both branches and the peers): a clean pass, PGD's steps
    and one pass per distortion at the request's severity."""
    from engine.analysis.cost import attack_passes
    from engine.data.distortions import DISTORTIONS

    return 1.0 + attack_passes("pgd", {"steps": request.steps}) + len(DISTORTIONS), request.n


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(meta={"columns": [str], "text": dict, "notes": [str], "device": str},
                arrays={"*": Array("fiub", 1)})
