"""The transfer matrix as an analysis: :class:`~engine.analysis.requests.TransferRequest` -> stored matrix.

``run`` is one call of ``engine.attacks.transfer_matrix`` on the first ``n`` test images: the
attack crafted on every model (rows, torch's RNG seeded with the request's seed) and evaluated on
every model (columns). ``decode`` rebuilds the :class:`~engine.attacks.TransferResult` (names: the
slots A, B, ...) the Attack Lab draws; ``report`` gives ``python -m engine transfer --json``
without importing torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from engine.analysis.base import Payload, Request, finite
from engine.analysis.fields import MAX_BATCH, MAX_IMAGES, check_int
from engine.analysis.kinds._attacklab import (  # noqa: F401
    AttackChoice,
    attacking,
    build_attack,
    check,
    first_images,
    load_models,
    models_json,
)
from engine.analysis.registry import register
from engine.analysis.schema import Schema


@register(title="Transfer matrix", page="attack_lab")
@dataclass(frozen=True)
class TransferRequest(AttackChoice, Request):
    """The transfer matrix (``engine.attacks.transfer_matrix``, Szegedy et al. 2013): the attack
    crafted on every model (rows) and evaluated on every model (columns), on the first ``n`` test
    images: the Attack Lab's Transfer, ``python -m engine transfer``.

    Attributes:
        models: one to eight models (slots A, B, ...); dataset: its test split.
        attack, params: the attack and its :func:`attack_params`.
        batch_size: images per pass; seed: torch's RNG around the attacks.
    """

    kind = "transfer"

    n: int = 64
    batch_size: int = 128
    seed: int = 0

    def _check(self) -> None:
        self._check_models_and_attack()
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        return f"{super().describe()} · {self.attack} · {self.dataset} · {self.n} images"


def run(request, ctx) -> Payload:
    """Craft on every model, evaluate on every model (see the module docstring)."""
    from engine.attacks import transfer_matrix

    attack = build_attack(request)
    models, dataset, notes = load_models(request, ctx)
    images, labels = first_images(request, dataset)
    ctx.check_stop()
    with attacking(request, ctx):
        matrix = transfer_matrix(models, images, labels, attack, batch_size=request.batch_size, device=ctx.device,
                                 progress=ctx.report, should_stop=ctx.stopped)
    return Payload({}, finite({"transfer": dataclasses.asdict(matrix), "notes": notes, "device": ctx.device}))


def decode(result, **_options):
    """The :class:`~engine.attacks.TransferResult` of a stored result."""
    from engine.attacks import TransferResult

    return TransferResult(**result.meta["transfer"])


def report(result) -> dict:
    """The JSON of ``python -m engine transfer --json``: rows crafted on, columns evaluated on
    (torch-free)."""
    matrix = result.meta["transfer"]
    return {"attack": matrix["config"], "dataset": result.request.dataset, "n": matrix["n"],
            "models": models_json(result.request), "crafted_on": matrix["names"], "evaluated_on": matrix["names"],
            "accuracy": matrix["accuracy"], "fooling_rate": matrix["fooling"],
            "device": result.meta.get("device", "")}


def rows(result) -> list[dict]:
    """CSV rows: crafted on, evaluated on, accuracy, fooling rate, n."""
    body = report(result)
    names = body["crafted_on"]
    return [{"crafted_on": src, "evaluated_on": dst, "accuracy": body["accuracy"][i][j],
             "fooling_rate": body["fooling_rate"][i][j], "n": body["n"]}
            for i, src in enumerate(names) for j, dst in enumerate(names)]


def passes(request, _per, _loaded) -> tuple[float, int]:
    """Cost model: the attack on every model, one clean pass and one pass per model's examples."""
    from engine.analysis.cost import attack_passes

    return attack_passes(request.attack, request.attack_kwargs()) + 1.0 + len(request.models), request.n


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"transfer": {"names": [str], "accuracy": [[float]], "fooling": [[float]], "n": int, "config": dict},
          "notes": [str], "device": str},
    rule=lambda meta, _arrays: None if all(
        len(matrix) == len(meta["transfer"]["names"]) and all(len(row) == len(matrix) for row in matrix)
        for matrix in (meta["transfer"]["accuracy"], meta["transfer"]["fooling"])
    ) else "the transfer matrices are not models × models",
)
