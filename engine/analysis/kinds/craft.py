"""Craft-and-compare as an analysis: :class:`~engine.analysis.requests.CraftRequest` -> stored examples.

``run`` is one call of ``engine.attacks.craft_and_compare``: the attack crafted on the source model
(torch's RNG seeded with the request's seed, so a random start repeats), the clean and adversarial
images scored by every model. The stored result keeps every tensor of the attack's result and each
model's logits as arrays; ``decode`` rebuilds the :class:`~engine.attacks.CraftComparison` the
Attack Lab renders and ``python -m engine attack`` writes as NPZ; ``report`` gives the command's
JSON summary without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.analysis.base import Payload, Request, finite
from engine.analysis.fields import MAX_BATCH, MAX_IMAGES, SPLITS, check_choice, check_int
from engine.analysis.kinds._attacklab import (  # noqa: F401
    AttackChoice,
    attacking,
    build_attack,
    check,
    load_models,
    models_json,
)
from engine.analysis.registry import register
from engine.analysis.schema import Array, Schema
from engine.errors import InvalidParameterError


@register(title="Adversarial examples (craft and compare)", page="attack_lab")
@dataclass(frozen=True)
class CraftRequest(AttackChoice, Request):
    """Craft-and-compare (``engine.attacks.craft_and_compare``): adversarial examples crafted on one
    model, scored clean and adversarial by every model (the Attack Lab's Craft, ``python -m engine
    attack``).

    Attributes:
        models: one to eight models (slots A, B, ...); source: the position of the one attacked.
        dataset, split: the images: ``n`` from index ``offset`` on, or (``sample_seed``) ``n``
            seeded random ones (``engine.data.take``; then ``offset`` is 0).
        attack, params: the attack and its :func:`attack_params`; target: the class of a targeted
            attack (None: its own choice, e.g. the clean runner-up).
        batch_size: images per pass; seed: torch's RNG around the attack.
    """

    kind = "craft"

    source: int = 0
    split: str = "test"
    n: int = 1
    offset: int = 0
    sample_seed: int | None = None
    target: int | None = None
    batch_size: int = 128
    seed: int = 0

    def _check(self) -> None:
        self._check_models_and_attack()
        check_int("source", self.source, 0, len(self.models) - 1)
        check_choice("split", self.split, SPLITS)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("offset", self.offset, 0, 100_000_000)
        if self.sample_seed is not None:
            check_int("sample_seed", self.sample_seed, 0, 2**31 - 1)
            if self.offset:
                raise InvalidParameterError("a seeded sample (sample_seed) starts at offset 0")
        if self.target is not None:
            check_int("target", self.target, 0, 1_000_000)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        images = (f"{self.n} seeded images" if self.sample_seed is not None else
                  f"#{self.offset}" if self.n == 1 else f"images {self.offset}–{self.offset + self.n - 1}")
        return f"{super().describe()} · {self.attack} on {self.slots()[self.source]} · {self.dataset} {images}"

#: the ``AttackResult`` tensors stored as arrays (``targets``, ``queries``, ``found_by``: when set)
RESULT_TENSORS = ("adv", "perturbation", "success", "linf_norm", "l2_norm", "logits_clean", "logits_adv",
                  "labels", "targets", "queries", "found_by")
IMAGES = ("clean", "adversarial")


def image_indices(request, size: int) -> list[int]:
    """The dataset indices of the request's images: ``n`` from ``offset`` on, or seeded ones."""
    from engine.data.registry import take_indices

    if request.sample_seed is not None:
        return [int(i) for i in take_indices(size, request.n, request.sample_seed)]
    if request.offset + request.n > size:
        raise InvalidParameterError(f"images {request.offset}..{request.offset + request.n - 1} do not exist: "
                                    f"the {request.dataset} {request.split} split has {size}")
    return list(range(request.offset, request.offset + request.n))


def run(request, ctx) -> Payload:
    """Craft on the source model and score every model (see the module docstring)."""
    import torch
    from torch.utils.data import Subset

    from engine import data as edata
    from engine.attacks import craft_and_compare

    attack = build_attack(request)
    models, dataset, notes = load_models(request, ctx, split=request.split)
    indices = image_indices(request, len(dataset))
    images, labels = edata.take(Subset(dataset, indices), len(indices))
    targets = None
    if request.target is not None:
        classes = (getattr(dataset, "spec", None) or edata.get_spec(request.dataset)).num_classes
        if request.target >= classes:
            raise InvalidParameterError(f"target must be a class in [0, {classes - 1}], got {request.target}")
        targets = torch.full_like(labels, request.target)
    ctx.check_stop()
    with attacking(request, ctx):
        comparison = craft_and_compare(models, request.slots()[request.source], images, labels, attack,
                                       targets=targets, batch_size=request.batch_size, device=ctx.device,
                                       progress=ctx.report, should_stop=ctx.stopped)
    return Payload(comparison_arrays(comparison),
                   finite({"config": comparison.result.config, "source": comparison.source,
                           "slots": list(comparison.logits), "indices": indices, "notes": notes,
                           "device": ctx.device}))


def comparison_arrays(comparison) -> dict:
    """The arrays of a :class:`~engine.attacks.CraftComparison`: ``x``, the attack result's
    tensors and ``logits_<image>_<slot>`` per model."""
    arrays = {"x": comparison.x.numpy()}
    for name in RESULT_TENSORS:
        value = getattr(comparison.result, name)
        if value is not None:
            arrays[name] = value.numpy()
    for slot, pair in comparison.logits.items():
        for image, logits in zip(IMAGES, pair):
            arrays[f"logits_{image}_{slot}"] = logits.numpy()
    return arrays


def decode(result, **_options):
    """The :class:`~engine.attacks.CraftComparison` of a stored result."""
    import torch

    from engine.attacks import AttackResult, CraftComparison

    tensor = {name: torch.from_numpy(np.asarray(value)) for name, value in result.arrays.items()}
    attack_result = AttackResult(**{name: tensor.get(name) for name in RESULT_TENSORS}, config=result.meta["config"])
    logits = {slot: tuple(tensor[f"logits_{image}_{slot}"] for image in IMAGES) for slot in result.meta["slots"]}
    return CraftComparison(tensor["x"], attack_result, result.meta["source"], logits)


def example_arrays(result) -> dict[str, np.ndarray]:
    """The NPZ arrays of ``python -m engine attack`` (as ``engine.attacks.export.result_arrays`` of
    the decoded result), read straight from the stored arrays: no torch needed."""
    arrays = {name: np.asarray(value) for name, value in result.arrays.items()}
    out = {"x": arrays["x"].astype(np.float32), "x_adv": arrays["adv"].astype(np.float32), "labels": arrays["labels"],
           "preds": arrays["logits_adv"].argmax(axis=1), "preds_clean": arrays["logits_clean"].argmax(axis=1),
           "success": arrays["success"], "linf": arrays["linf_norm"], "l2": arrays["l2_norm"]}
    if "targets" in arrays:
        out["targets"] = arrays["targets"]
    return out


def report(result) -> dict:
    """The JSON of ``python -m engine attack --json`` (torch-free): accuracy of the attacked model
    clean and under the attack, the attack's success rate and config, and every model's accuracy
    on the clean and the adversarial images."""
    request, meta, arrays = result.request, result.meta, result.arrays
    labels = np.asarray(arrays["labels"])

    def accuracy(name: str) -> float:
        return float((np.asarray(arrays[name]).argmax(axis=1) == labels).mean())

    source = meta["source"]
    return {"checkpoint": request.models[request.source].path, "dataset": request.dataset, "split": request.split,
            "n": int(len(labels)), "indices": meta["indices"], "source": source,
            "clean_acc": accuracy(f"logits_clean_{source}"), "robust_acc": accuracy(f"logits_adversarial_{source}"),
            "success_rate": float(np.asarray(arrays["success"]).mean()), "attack": meta["config"],
            "models": [{**model, "clean_acc": accuracy(f"logits_clean_{model['slot']}"),
                        "adversarial_acc": accuracy(f"logits_adversarial_{model['slot']}")}
                       for model in models_json(request)],
            "device": meta.get("device", "")}


def rows(result) -> list[dict]:
    """CSV rows: per model, accuracy on the clean and on the adversarial images."""
    body = report(result)
    return [{"slot": m["slot"], "checkpoint": m["checkpoint"], "crafted_on": body["source"], "n": body["n"],
             "clean_acc": m["clean_acc"], "adversarial_acc": m["adversarial_acc"]} for m in body["models"]]


def passes(request, per, _loaded) -> tuple[float, int]:
    """Cost model: the attack on the source model plus a clean and an adversarial pass on every model."""
    from engine.analysis.cost import attack_passes, share

    return 2.0 + attack_passes(request.attack, request.attack_kwargs()) * share(per, request.source), request.n


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"config": dict, "source": str, "slots": [str], "indices": [int], "notes": [str], "device": str},
    arrays={"x": Array("f", 4), "adv": Array("f", 4), "perturbation": Array("f", 4), "success": Array("b", 1),
            "linf_norm": Array("f", 1), "l2_norm": Array("f", 1), "logits_clean": Array("f", 2),
            "logits_adv": Array("f", 2), "labels": Array("iu", 1), "targets": Array("iu", 1, required=False),
            "queries": Array("iuf", 1, required=False), "found_by": Array("iu", 1, required=False),
            "logits_clean_*": Array("f", 2), "logits_adversarial_*": Array("f", 2)},
    rule=lambda meta, arrays: None if len(arrays["x"]) == len(arrays["adv"]) == len(arrays["labels"])
    == len(meta["indices"]) else "the images, labels and indices differ in number",
)
