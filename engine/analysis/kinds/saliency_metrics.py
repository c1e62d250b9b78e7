"""Explanation-quality metrics as an analysis: how good each model's attribution maps are, by
randomisation, faithfulness, localisation and robustness, for every method and model.

``run`` is ``engine.attribution.metrics.explanation_metrics`` on the request's images (the first
``n`` of the test split, or a ``seed``-ed subset; foreground masks from the dataset when a
localisation metric is asked for). The stored result keeps every score's per-image values
(``values_<k>``) and the curve behind it (``curve_<k>``: ROAD accuracy per fraction, the
pixel-flipping curve, similarity per randomised layer, sensitivity per noise sample) as arrays,
and each score's mean, spread and axis in the metadata. ``rows`` gives the table (model x method x
score) that ``python -m engine saliency --metrics ... --out F.csv`` writes and the Saliency page
shows with models A and B side by side; ``report`` the JSON; both without importing torch.

The metric names and what their scores mean live here, torch-free (:data:`METRICS`,
:data:`SCORES`, :data:`GROUPS`); ``engine.attribution.metrics.EVALUATORS`` holds the functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite, unique_names
from engine.analysis.fields import (
    MAX_BATCH,
    MAX_IMAGES,
    PARAM_TYPES,
    check_choice,
    check_dataset,
    check_float,
    check_int,
    check_model_list,
    check_names,
    grouped_params,
)
from engine.analysis.registry import register
from engine.analysis.schema import Array, Schema
from engine.catalogue import ATTRIBUTION_METHODS, EXPLANATION_METRICS, LOCALISATION_METRICS, REDUCTIONS, MetricOptions
from engine.errors import InvalidParameterError


class ScoreInfo(NamedTuple):
    """One score: its label, which direction is better ("higher"/"lower") and what it measures."""

    label: str
    better: str
    explanation: str


#: metric name -> its family and the scores it gives; the metrics that need foreground masks
METRICS, LOCALISATION = EXPLANATION_METRICS, LOCALISATION_METRICS
#: names that stand for several metrics (``--metrics faithfulness``), "all" for every one
GROUPS: dict[str, tuple[str, ...]] = {
    **{family: tuple(m for m, (f, _) in METRICS.items() if f == family)
       for family in ("randomisation", "faithfulness", "localisation", "robustness")},
    "all": tuple(METRICS),
}
#: score -> what it means (the page's explanations, the CSV's ``better`` column)
SCORES: dict[str, ScoreInfo] = {
    "randomisation_ssim": ScoreInfo(
        "Randomisation: SSIM", "lower",
        "Structural similarity between the map and the map of the same model with every layer re-initialised "
        "(cascading from the top, Adebayo et al. 2018). A map that survives the destruction of the weights does "
        "not explain what the model learnt."),
    "randomisation_spearman": ScoreInfo(
        "Randomisation: Spearman", "lower",
        "Rank correlation between the map and the fully randomised model's map (Adebayo et al. 2018)."),
    "road_morf": ScoreInfo(
        "ROAD MoRF accuracy", "lower",
        "Accuracy after the most relevant pixels are replaced by noisy linear imputation, averaged over the "
        "fractions (Rong et al. 2022). Falls fast when the map found the evidence the model uses."),
    "road_lerf": ScoreInfo(
        "ROAD LeRF accuracy", "higher",
        "Accuracy after the least relevant pixels are imputed, averaged over the fractions (Rong et al. 2022). "
        "Stays high when the map's unimportant pixels really are unimportant."),
    "pixel_flipping_auc": ScoreInfo(
        "Pixel flipping AUC", "lower",
        "Area under the label's probability as the most relevant pixels are set to black step by step "
        "(Bach et al. 2015; Samek et al. 2017)."),
    "pointing_game": ScoreInfo(
        "Pointing game", "higher",
        "Share of images whose map peaks on the object's foreground mask (Zhang et al. 2018)."),
    "relevance_mass": ScoreInfo(
        "Relevance-mass accuracy", "higher",
        "Share of the map's positive relevance inside the object's foreground mask (Arras et al. 2022)."),
    "max_sensitivity": ScoreInfo(
        "Max-sensitivity", "lower",
        "Largest change of the map, relative to its norm, under uniform noise in a small ℓ∞ ball "
        "(Yeh et al. 2019, normalised as in Quantus)."),
    "avg_sensitivity": ScoreInfo(
        "Average-sensitivity", "lower",
        "Mean change of the map, relative to its norm, under uniform noise in a small ℓ∞ ball (Yeh et al. 2019)."),
}
#: ROAD's default fractions (``MetricOptions``, as every other metric parameter's default)
ROAD_FRACTIONS = MetricOptions.fractions


def expand_metrics(names) -> tuple[str, ...]:
    """Metric and group names (:data:`METRICS`, :data:`GROUPS`) -> the metrics, each once, in
    :data:`METRICS` order (the request's canonical form: the CLI and the page both use it).

    Raises:
        InvalidParameterError: no names, or one that is neither a metric nor a group.
    """
    chosen = set()
    for name in names:
        if name not in METRICS and name not in GROUPS:
            raise InvalidParameterError(f"unknown explanation metric {name!r}; choose from "
                                        f"{', '.join(METRICS)} or the groups {', '.join(GROUPS)}")
        chosen.update(GROUPS.get(name, (name,)))
    if not chosen:
        raise InvalidParameterError("name at least one explanation metric")
    return tuple(m for m in METRICS if m in chosen)


def _check_param_triples(params, methods) -> None:
    """``((method, name, value), ...)``: overrides of the chosen methods' parameters."""
    if not isinstance(params, tuple) or len(params) > 256:
        raise InvalidParameterError("params must be a list of (method, name, value) triples")
    for item in params:
        if not (isinstance(item, tuple) and len(item) == 3 and all(isinstance(v, str) for v in item[:2])
                and isinstance(item[2], PARAM_TYPES)):
            raise InvalidParameterError(f"a parameter is (method, name, value), got {item!r}")
        if item[0] not in methods:
            raise InvalidParameterError(f"parameter {item[0]}.{item[1]} is for a method not chosen")


@register(title="Explanation metrics", page="saliency")
@dataclass(frozen=True)
class SaliencyMetricsRequest(Request):
    """Explanation-quality metrics (``engine.attribution.metrics.explanation_metrics``) of every
    method's maps for every model, on the same test images.

    Attributes:
        models: one to eight models; dataset: its test split gives the ``n`` images (the first
            ``n``, or a ``seed``-ed random subset).
        metrics: names of :data:`METRICS`, each once, in its order (:func:`expand_metrics`).
        methods: ``engine.attribution.METHODS`` names, in display order; params: ``((method, name,
            value), ...)`` overriding their defaults; reduce: the maps' channel reduction.
        fractions, road_noise: ROAD's shares of pixels imputed (each in [0, 1)) and noise.
        flip_steps, flip_baseline: pixel flipping's number of steps and the value flipped pixels get.
        radius, samples: the sensitivity's ℓ∞ noise radius and draws per image.
        metric_seed: seeds every random draw (imputation and sensitivity noise, re-initialised layers).
        batch_size: images per forward pass (memory only).
    """

    kind = "saliency_metrics"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    metrics: tuple[str, ...]
    methods: tuple[str, ...] = ("saliency",)
    params: tuple[tuple[str, str, object], ...] = ()
    reduce: str = "abs_sum"
    n: int = 64
    seed: int | None = None
    fractions: tuple[float, ...] = MetricOptions.fractions
    road_noise: float = MetricOptions.road_noise
    flip_steps: int = MetricOptions.flip_steps
    flip_baseline: float = MetricOptions.flip_baseline
    radius: float = MetricOptions.radius
    samples: int = MetricOptions.samples
    metric_seed: int = MetricOptions.seed
    batch_size: int = MetricOptions.batch_size

    def _check(self) -> None:
        check_model_list(self.models)
        check_dataset(self.dataset)
        check_names("metrics", self.metrics, optional=False, limit=len(METRICS))
        if not isinstance(self.metrics, tuple) or self.metrics != expand_metrics(self.metrics):
            raise InvalidParameterError(f"metrics must name each of {', '.join(METRICS)} at most once, in that "
                                        f"order (expand_metrics gives it), got {self.metrics!r}")
        self._check_methods()
        check_int("n", self.n, 1, MAX_IMAGES)
        if self.seed is not None:
            check_int("seed", self.seed, 0, 2**31 - 1)
        self._check_options()

    def _check_methods(self) -> None:
        check_names("methods", self.methods, optional=False, limit=len(ATTRIBUTION_METHODS))
        for method in self.methods:
            check_choice("method", method, ATTRIBUTION_METHODS)
        if len(set(self.methods)) != len(self.methods):
            raise InvalidParameterError(f"methods must name each method once, got {self.methods!r}")
        _check_param_triples(self.params, self.methods)
        check_choice("reduce", self.reduce, REDUCTIONS)

    def _check_options(self) -> None:
        if not isinstance(self.fractions, tuple) or not 1 <= len(self.fractions) <= 64:
            raise InvalidParameterError(f"fractions must list 1 to 64 numbers in [0, 1), got {self.fractions!r}")
        for value in self.fractions:
            if check_float("fraction", value, 0.0, 1.0, optional=False) >= 1.0:
                raise InvalidParameterError("ROAD fractions must be below 1 (some pixels must stay), got 1")
        check_float("road_noise", self.road_noise, 0.0, 1.0, optional=False)
        check_int("flip_steps", self.flip_steps, 1, 100_000)
        check_float("flip_baseline", self.flip_baseline, 0.0, 1.0, optional=False)
        if check_float("radius", self.radius, 0.0, 1.0, optional=False) <= 0:
            raise InvalidParameterError("radius must be a number in (0, 1], got 0")
        check_int("samples", self.samples, 1, 1000)
        check_int("metric_seed", self.metric_seed, 0, 2**31 - 1)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def method_params(self) -> dict[str, dict]:
        """``{method: {name: value}}`` in method order."""
        return grouped_params(self.methods, self.params)

    def describe(self) -> str:
        return (f"{super().describe()} · {self.dataset} · {', '.join(self.metrics)} · {', '.join(self.methods)} · "
                f"{self.n} images")


def check(request) -> None:
    """Torch-side checks before a job is queued: the methods' parameters exist and fit, and the
    dataset has foreground masks when a localisation metric is asked for."""
    from engine import data as edata

    resolve_method_params(request)
    if any(m in LOCALISATION for m in request.metrics):
        masks_of(request, edata.load_dataset(request.dataset, split="test"), [0])


def resolve_method_params(request) -> None:
    """Every method's parameters exist and fit (``engine.attribution.resolve_params``)."""
    from engine.attribution.methods import resolve_params

    for method, params in request.method_params().items():
        resolve_params(method, params)


def masks_of(request, dataset, indices):
    """The foreground masks of images ``indices`` of ``dataset``; an InvalidParameterError naming
    the dataset when it has none."""
    from engine.attribution.metrics import dataset_masks

    found = dataset_masks(dataset, indices)
    if found is None:
        asked = ", ".join(m for m in request.metrics if m in LOCALISATION)
        raise InvalidParameterError(f"`{request.dataset}` has no foreground masks, which {asked} need; choose a "
                                    "dataset with masks (shapes) or leave the localisation metrics out")
    return found


def options_of(request):
    """The request's ``engine.attribution.metrics.MetricOptions``."""
    from engine.attribution.metrics import MetricOptions

    return MetricOptions(fractions=request.fractions, road_noise=request.road_noise, flip_steps=request.flip_steps,
                         flip_baseline=request.flip_baseline, radius=request.radius, samples=request.samples,
                         seed=request.metric_seed, batch_size=request.batch_size)


def run(request, ctx) -> Payload:
    """Every metric of every method's maps for every model (see the module docstring)."""
    from engine import data as edata
    from engine.attribution.metrics import explanation_metrics

    resolve_method_params(request)
    names = unique_names(request.models)
    dataset = ctx.images(request.dataset, n=request.n)
    masks = None
    if any(m in LOCALISATION for m in request.metrics):
        masks = masks_of(request, dataset, edata.take_indices(len(dataset), request.n, request.seed))
    loaded, notes = ctx.models(request.models, dataset)
    images, labels = edata.take(dataset, request.n, seed=request.seed)
    ctx.check_stop()
    found = explanation_metrics({n: m.model for n, m in zip(names, loaded)}, images, labels, request.method_params(),
                                request.metrics, masks, options_of(request), request.reduce, progress=ctx.report,
                                should_stop=ctx.stopped)
    if found.stopped or ctx.stopped():
        raise AnalysisCancelled("explanation metrics stopped before they finished; nothing was stored")
    arrays, entries = {}, []
    for k, score in enumerate(found.scores):
        arrays[f"values_{k}"] = score.values
        if score.curve is not None:
            arrays[f"curve_{k}"] = score.curve
        entries.append({"model": score.model, "method": score.method, "metric": score.metric, "score": score.score,
                        "mean": score.mean, "std": score.std, "count": score.count,
                        "axis": None if score.axis is None else list(score.axis)})
    errors = [{"model": model, "method": method, "error": message} for model, method, message in found.errors]
    meta = finite({"names": names, "scores": entries, "errors": errors, "n": int(images.shape[0]), "notes": notes,
                   "device": ctx.device})
    return Payload(arrays, meta)


def decode(result, names: dict | None = None, **_options) -> list:
    """The ``engine.attribution.metrics.ScoreSet`` list (models outer, then methods, then scores);
    ``names`` renames models (stored name -> shown name)."""
    from engine.attribution.metrics import ScoreSet

    rename = names or {}
    out = []
    for k, entry in enumerate(result.meta["scores"]):
        curve = result.arrays.get(f"curve_{k}")
        out.append(ScoreSet(rename.get(entry["model"], entry["model"]), entry["method"], entry["metric"],
                            entry["score"], np.asarray(result.arrays[f"values_{k}"], dtype=np.float64),
                            None if curve is None else np.asarray(curve, dtype=np.float64),
                            None if entry["axis"] is None else tuple(entry["axis"])))
    return out


def rows(result, names: dict | None = None) -> list[dict]:
    """One row per model, method and score (the CSV, and the page's table before A and B are set
    side by side): its mean and standard deviation over the images where it is defined, how many
    those are, and which direction is better; ``names`` renames models."""
    rename = names or {}
    return [{"model": rename.get(e["model"], e["model"]), "method": e["method"], "metric": e["metric"],
             "score": e["score"], "label": SCORES[e["score"]].label, "mean": e["mean"], "std": e["std"],
             "n": e["count"], "better": SCORES[e["score"]].better}
            for e in result.meta["scores"]]


def report(result) -> dict:
    """The JSON of ``python -m engine saliency --metrics ...`` (torch-free): the table, the
    parameters and any method a model refused; per-image values via ``--out F.npz``."""
    request, meta = result.request, result.meta
    options = {name: getattr(request, name) for name in ("fractions", "road_noise", "flip_steps", "flip_baseline",
                                                         "radius", "samples", "metric_seed", "reduce")}
    options["fractions"] = list(options["fractions"])
    return {"dataset": request.dataset, "n": meta["n"], "metrics": list(request.metrics),
            "methods": list(request.methods), "params": [list(p) for p in request.params], "options": options,
            "checkpoints": {n: r.path for n, r in zip(meta["names"], request.models)}, "table": rows(result),
            "errors": meta["errors"], "seconds": round(result.seconds, 3), "warnings": list(meta.get("notes", []))}


def passes(request, per, loaded) -> tuple[float, int]:
    """Cost model per image, in forward passes of all the models: per method, its map, then per
    metric — a map per randomised layer (the deepest model's count), per ROAD order and fraction a
    forward pass and each model's imputation (timed on a probe: ``imputation_seconds``), a forward
    pass per pixel-flipping step, a map per sensitivity sample (shared by max and average)."""
    from engine.analysis.cost import method_passes
    from engine.attribution.metrics import flip_schedule, imputation_seconds, randomisable_layers

    shape = tuple(loaded[0].card.input_shape) if loaded else (3, 32, 32)
    chosen = set(request.metrics)
    maps = 1 + (max((len(randomisable_layers(m.model)) for m in loaded), default=1) if "randomisation" in chosen else 0)
    maps += request.samples if chosen & {"max_sensitivity", "avg_sensitivity"} else 0
    imputing = len(request.models) * imputation_seconds(shape) / max(sum(per), 1e-12)  # each model's images
    forwards = 2 * len(request.fractions) * (1.0 + imputing) if "road" in chosen else 0.0
    forwards += len(flip_schedule(shape[-1] * shape[-2], request.flip_steps)) if "pixel_flipping" in chosen else 0
    total = sum(maps * method_passes(method, params) + forwards for method, params in request.method_params().items())
    return total, request.n


def _arrays_match(meta: dict, arrays) -> str | None:
    """Every score has its values, of one length, and nothing else is stored."""
    count = len(meta["scores"])
    if any(f"values_{k}" not in arrays for k in range(count)):
        return "a score's per-image values are missing"
    if any(int(name.split("_")[1]) >= count for name in arrays):
        return "an array belongs to no score"
    if any(np.shape(arrays[f"values_{k}"]) != (meta["n"],) for k in range(count)):
        return "a score's per-image values are not one per image"
    return None


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"names": [str], "n": int, "notes": [str], "device": str,
          "errors": [{"model": str, "method": str, "error": str}],
          "scores": [{"model": str, "method": str, "metric": str, "score": str, "mean": float, "std": float,
                      "count": int, "axis": ([str], [float], None)}]},
    arrays={"values_*": Array("f", 1), "curve_*": Array("f", 2)},
    rule=_arrays_match,
)
