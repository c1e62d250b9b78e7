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

from dataclasses import replace

import numpy as np

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, card_json, finite
from engine.errors import InvalidParameterError

#: torch's seed around the comparison (PGD's random starts)
SEED = 0
#: the table's columns stored as text in the metadata (the others are arrays)
TEXT_COLUMNS = ("model", "attack", "distortions")


def advprop_request(infos, path: str, **settings):
    """The :class:`~engine.analysis.AdvPropRequest` comparing the AdvProp checkpoint at ``path``
    with the standard and robust checkpoints of its dataset in the listing ``infos``
    (``engine.generalisation.advprop.comparison_peers``); ``settings``: n, eps, steps, severity,
    batch_size."""
    from engine.analysis.requests import AdvPropRequest
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
    if not card_json(request.model.path).get("dual_bn"):
        raise InvalidParameterError(f"{request.model.path} is not an AdvProp (dual-BN) checkpoint")
    build_attack(request)


def run(request, ctx) -> Payload:
    """Compare the branches and peers (see the module docstring)."""
    from engine import data as edata
    from engine.analysis.cka import check_models
    from engine.analysis.evaluate import seeded
    from engine.generalisation.advprop import branch_labels, compare_branches

    loaded = [ctx.load(ref) for ref in branches(request)]
    dataset = edata.load_dataset(request.dataset, split="test")
    notes = check_models(loaded, dataset, request.dataset, classes=True)
    if request.n > len(dataset):
        raise InvalidParameterError(f"n must be at most {len(dataset)} (the {request.dataset} test split's size), "
                                    f"got {request.n}")
    images, labels = edata.take(dataset, request.n)
    names = [*branch_labels(loaded[0].name), *(peer.name for peer in loaded[2:])]
    ctx.check_stop()
    models = {name: m.model for name, m in zip(names, loaded)}
    with seeded(SEED, ctx.device):
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
