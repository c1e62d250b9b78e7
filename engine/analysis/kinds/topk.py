"""Feature top-k as an analysis: :class:`~engine.analysis.requests.TopKRequest` -> stored rankings.

``run`` draws the same held-out sample as ``python -m engine featvis`` and the Features page
(``n`` test images, seeded), reads it batch by batch and keeps only the k best images per target
(``engine.featvis.stream_top_k``), so memory does not grow with ``n``. The stored result holds the
indices (into the sample and into the dataset), scores and labels; :func:`picked_images` reads
back just the chosen images for display.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request
from engine.analysis.fields import MAX_BATCH, MAX_IMAGES, check_dataset, check_int, check_layer_targets
from engine.analysis.registry import register
from engine.analysis.schema import Array, Schema
from engine.errors import InvalidParameterError


@register(title="Feature top-k images", page="features")
@dataclass(frozen=True)
class TopKRequest(Request):
    """Feature top-k: the held-out images maximising units / random directions of one layer.

    Attributes:
        model: the model; layer: dotted layer name.
        targets: ``(("unit", i), ("direction", seed), ...)``: a unit eᵢ or a seeded random
            unit-norm direction (Szegedy et al. 2013), at most 64.
        position: ``(y, x)``: score one neuron per channel instead of the spatial mean.
        dataset, n, sample_seed: ``n`` test images drawn with ``sample_seed`` (a generated set is
            generated at size ``n``), as ``python -m engine featvis`` and the Features page do.
        k: images per target (1 <= k <= n).
        batch_size: images per forward pass (memory only; the ranking does not depend on it).
    """

    kind = "featvis_topk"
    MODEL_FIELDS = ("model",)

    model: ModelRef
    layer: str
    targets: tuple[tuple[str, int], ...]
    dataset: str
    position: tuple[int, int] | None = None
    n: int = 1000
    sample_seed: int = 0
    k: int = 9
    batch_size: int = 32

    def _check(self) -> None:
        check_layer_targets(self.layer, self.targets, self.position)
        check_dataset(self.dataset)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("sample_seed", self.sample_seed, 0, 2**31 - 1)
        check_int("k", self.k, 1, self.n)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        return f"{super().describe()} · {self.layer} · top-{self.k} of {self.n} {self.dataset} images"


class TopKReport(NamedTuple):
    """The decoded result: one ``TopK`` per target and the targets' labels/keys."""

    top: list
    labels: list[str]
    keys: list[str]
    dim: int


def sample(request):
    """``(dataset, Sample)``: the held-out images a request searches (lazy, nothing loaded)."""
    from engine import data as edata
    from engine.data.registry import OPTIONS

    options = {"n": request.n} if "n" in OPTIONS.get(request.dataset, ()) else {}
    dataset = edata.load_dataset(request.dataset, split="test", **options)
    if request.n > len(dataset):
        raise InvalidParameterError(f"n must be at most {len(dataset)} (the {request.dataset} test split's size), "
                                    f"got {request.n}")
    return dataset, edata.Sample(dataset, request.n, seed=request.sample_seed)


def _target_builders(request):
    from engine import featvis

    out = []
    for kind, value in request.targets:
        if kind == "unit":
            out.append(featvis.unit_target(value, request.position))
        else:
            out.append(lambda dim, seed=value: featvis.direction_target(dim, seed=seed, position=request.position))
    return out


def run(request, ctx) -> Payload:
    """Search the sample for the top-k images of every target (see the module docstring)."""
    from engine import featvis

    dataset, chosen = sample(request)
    (loaded,), notes = ctx.models([request.model], dataset, classes=False)
    builders = _target_builders(request)
    try:
        found = featvis.stream_top_k(loaded.model, request.layer, chosen, builders, request.k,
                                     position=request.position, batch_size=request.batch_size,
                                     progress=ctx.report, should_stop=ctx.stopped)
    except InterruptedError:
        raise AnalysisCancelled("top-k search stopped before it finished; nothing was stored") from None
    positions = np.stack([t.indices for t in found])                     # (T, k) into the sample
    dataset_index = chosen.indices.numpy()[positions]                    # (T, k) into the dataset
    labels = np.array([[int(dataset[int(i)][1]) for i in row] for row in dataset_index], dtype=np.int64)
    targets, dim = feature_targets(request, loaded.model)
    class_names = list(loaded.card.class_names or [])
    meta = {
        "labels": [t.label for t in targets], "keys": [t.key for t in targets], "dim": dim,
        "dataset": request.dataset, "n_searched": len(chosen), "notes": notes, "device": ctx.device,
        "class_names": [[class_names[i] if i < len(class_names) else str(i) for i in row] for row in labels.tolist()],
    }
    return Payload({"positions": positions.astype(np.int64), "dataset_index": dataset_index.astype(np.int64),
                    "scores": np.stack([t.scores for t in found]).astype(np.float32), "labels": labels}, meta)


def feature_targets(request, model) -> tuple[list, int]:
    """``(targets, dim)``: a feature request's ``("unit", i)`` / ``("direction", seed)`` targets as
    ``engine.featvis.FeatureTarget`` values of its layer (at its position) and the layer's channel
    count."""
    dim = _layer_dim(model, request.layer, request.position)
    return [b if not callable(b) else b(dim) for b in _target_builders(request)], dim


def _layer_dim(model, layer: str, position) -> int:
    from engine.models import list_layers

    for info in list_layers(model):
        if info.name == layer and info.output_shape:
            return int(info.output_shape[0])
    raise InvalidParameterError(f"unknown or non-tensor layer {layer!r}")


def decode(result, **_options) -> TopKReport:
    """One ``engine.featvis.TopK`` per target (indices into the sample, best first)."""
    from engine.featvis import TopK

    top = [TopK(np.asarray(p, dtype=np.int64), np.asarray(s, dtype=np.float32))
           for p, s in zip(result.arrays["positions"], result.arrays["scores"])]
    return TopKReport(top, list(result.meta["labels"]), list(result.meta["keys"]), int(result.meta["dim"]))


def picked_images(result):
    """The chosen images, float32 (T, k, C, H, W) in [0, 1], read back from the dataset."""
    import torch

    from engine import data as edata
    from engine.data.registry import OPTIONS

    request = result.request
    options = {"n": request.n} if "n" in OPTIONS.get(request.dataset, ()) else {}
    dataset = edata.load_dataset(request.dataset, split="test", **options)
    index = np.asarray(result.arrays["dataset_index"])
    return torch.stack([torch.stack([torch.as_tensor(dataset[int(i)][0], dtype=torch.float32) for i in row])
                        for row in index])


def report(result) -> dict:
    """The CLI's JSON of a top-k result (torch-free)."""
    request, meta, arrays = result.request, result.meta, result.arrays
    return {
        "checkpoint": request.model.path, "sha256": request.model.sha256, "layer": request.layer,
        "dataset": request.dataset, "split": "test", "n_searched": meta["n_searched"],
        "sample_seed": request.sample_seed, "k": request.k,
        "targets": [{"label": label, "key": key, "indices": np.asarray(arrays["positions"][i]).tolist(),
                     "dataset_indices": np.asarray(arrays["dataset_index"][i]).tolist(),
                     "scores": np.asarray(arrays["scores"][i]).astype(float).tolist(),
                     "labels": np.asarray(arrays["labels"][i]).tolist(), "label_names": meta["class_names"][i]}
                    for i, (label, key) in enumerate(zip(meta["labels"], meta["keys"]))],
        "warnings": list(meta.get("notes", [])), "seconds": round(result.seconds, 3),
    }


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"labels": [str], "keys": [str], "dim": int, "n_searched": int, "class_names": [list], "notes": [str],
          "device": str},
    arrays={"positions": Array("iu", 2), "dataset_index": Array("iu", 2), "scores": Array("f", 2),
            "labels": Array("iu", 2)},
    rule=lambda meta, arrays: None if len({np.shape(a) for a in arrays.values()}) == 1
    and len(arrays["positions"]) == len(meta["labels"]) == len(meta["class_names"]) else
    "the top-k arrays and the targets differ in size",
)
