"""Layer activation statistics: how strongly, and how sparsely, each layer of each model fires.

For the first ``n`` test images, every chosen layer's output is summarised per model: the mean
activation, the mean absolute activation and the share of positive entries (1 - sparsity). Robust
training changes these numbers (robust models' features are sparser and smaller in magnitude in
the later layers; Agarwal & Chen 2020 discuss unit simplicity, docs/SCIENCE.md), so the table
sets a standard and a robust model side by side layer by layer.

This kind is also the worked example of docs/ENGINE_API.md ("Adding a kind"): this module, the
command ``python -m engine activations`` (``engine/cli/activations.py``) and the view
``pages/activations_view.py`` (rendered by the Results page) are all it took.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite, unique_names
from engine.analysis.fields import MAX_BATCH, MAX_IMAGES, check_dataset, check_int, check_model_list, check_names
from engine.analysis.registry import register
from engine.analysis.schema import Array, Schema

#: the statistics kept per model and layer, in table order
STATISTICS = ("mean", "mean_abs", "positive_share")


@register(title="Layer activation statistics", page="results", view="pages.activations_view")
@dataclass(frozen=True)
class ActivationsRequest(Request):
    """Per-layer activation statistics of one to eight models on the same first ``n`` test images.

    Attributes:
        models: one to eight models; dataset: the test split's first ``n`` images.
        layers: dotted layer names every model has (None: each model's default layers).
        batch_size: images per forward pass (memory only; the statistics are float64 sums).
    """

    kind = "layer_activations"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    n: int = 256
    layers: tuple[str, ...] | None = None
    batch_size: int = 64

    def _check(self) -> None:
        check_model_list(self.models)
        check_dataset(self.dataset)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_names("layers", self.layers)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        return f"{super().describe()} · {self.dataset} · {self.n} images"


def layer_statistics(model, layers: list[str], batches, progress=None, should_stop=None) -> np.ndarray | None:
    """``(len(layers), 3)`` float64: mean, mean |a| and share of positive entries of each layer's
    output over every image of ``batches`` (an iterable of ``(images, labels)``); None when
    ``should_stop()`` said stop. Sums are accumulated in float64, one batch in memory."""
    import torch

    from engine.models import record_activations
    from engine.models.state import frozen_eval, model_device

    sums = np.zeros((len(layers), 3), dtype=np.float64)
    counts = np.zeros(len(layers), dtype=np.float64)
    device = model_device(model)
    with frozen_eval(model, freeze=False), torch.no_grad(), record_activations(model, layers) as recorder:
        for done, (images, _labels) in enumerate(batches, start=1):
            if should_stop is not None and should_stop():
                return None
            model(images.to(device))
            for i, name in enumerate(layers):
                out = recorder.outputs[name].double()
                sums[i] += (out.sum().item(), out.abs().sum().item(), (out > 0).sum().item())
                counts[i] += out.numel()
            if progress is not None:
                progress(done)
    return sums / counts[:, None]


def run(request, ctx) -> Payload:
    """Every model's statistics on the request's images (see the module docstring)."""
    from engine import data as edata
    from engine.models import default_layers

    dataset = ctx.images(request.dataset, n=request.n)
    loaded, notes = ctx.models(request.models, dataset, classes=False)
    sample = edata.Sample(dataset, request.n)
    batches = -(-request.n // request.batch_size)
    names = unique_names(request.models)
    arrays, layers = {}, {}
    for index, (name, checkpoint) in enumerate(zip(names, loaded)):
        chosen = list(request.layers) if request.layers else default_layers(checkpoint.model)
        found = layer_statistics(checkpoint.model, chosen, edata.iter_batches(sample, request.batch_size),
                                 progress=lambda done, i=index: ctx.report(i * batches + done, len(loaded) * batches),
                                 should_stop=ctx.stopped)
        if found is None:
            raise AnalysisCancelled("layer activation statistics stopped before they finished; nothing was stored")
        arrays[f"stats_{index}"], layers[name] = found, chosen
    return Payload(arrays, finite({"names": names, "layers": layers, "notes": notes, "device": ctx.device}))


def decode(result, **_options) -> dict[str, dict[str, dict[str, float]]]:
    """``{model: {layer: {statistic: value}}}``."""
    out = {}
    for index, name in enumerate(result.meta["names"]):
        table = np.asarray(result.arrays[f"stats_{index}"], dtype=np.float64)
        out[name] = {layer: dict(zip(STATISTICS, map(float, row)))
                     for layer, row in zip(result.meta["layers"][name], table)}
    return out


def rows(result) -> list[dict]:
    """One row per model and layer (the CSV of ``activations --out F.csv``)."""
    return [{"model": name, "layer": layer, **stats}
            for name, by_layer in decode(result).items() for layer, stats in by_layer.items()]


def report(result) -> dict:
    """The CLI's JSON (torch-free)."""
    request = result.request
    return {"models": [ref.path for ref in request.models], "dataset": request.dataset, "n": request.n,
            "rows": rows(result), "seconds": round(result.seconds, 3), "device": result.meta.get("device")}


def passes(request, _per, _loaded) -> tuple[float, int]:
    """Cost model: one forward pass per model and image."""
    return 1.0, request.n


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"names": [str], "layers": dict, "notes": [str], "device": str},
    arrays={"stats_*": Array("f", 2)},
    rule=lambda meta, arrays: None if all(
        np.shape(arrays.get(f"stats_{i}")) == (len(meta["layers"].get(name, ())), len(STATISTICS))
        for i, name in enumerate(meta["names"])
    ) else "a model's statistics table is not layers × statistics",
)
