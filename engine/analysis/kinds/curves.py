"""Keep/remove curves (and KAR/ROAR) as an analysis: accuracy as top-attributed pixels are kept or removed.

``run`` is ``engine.attribution.keep_remove_curves`` once per mode on the request's images, with the
``engine.attribution.engine_retrainer`` plugged in when the request asks for retraining. The stored
result keeps every curve (``CurveResult.to_dict()``) and the retraining's recipe and records in the
metadata (no arrays: a curve is a few numbers). ``decode`` rebuilds the ``CurveResult`` list the
Saliency page plots; ``report`` gives the JSON ``python -m engine saliency --curve`` writes, and
``rows`` the page's CSV, both without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite, unique_names
from engine.analysis.fields import (
    MAX_IMAGES,
    PARAM_TYPES,
    check_bool,
    check_choice,
    check_dataset,
    check_float,
    check_int,
    check_model_list,
)
from engine.analysis.registry import register
from engine.analysis.schema import Schema
from engine.catalogue import CURVE_FRACTIONS, CURVE_MODES, CURVE_REPLACEMENTS
from engine.errors import InvalidParameterError

#: the retraining defaults of ``python -m engine saliency --retrain`` (epochs, training images)
RETRAIN_EPOCHS, RETRAIN_N = 4, 2048


def _check_method_params(params) -> None:
    """``((name, value), ...)``: one attribution method's parameter overrides."""
    if not isinstance(params, tuple) or len(params) > 64:
        raise InvalidParameterError("params must be a list of (name, value) pairs")
    for item in params:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], PARAM_TYPES)):
            raise InvalidParameterError(f"a parameter is (name, value), got {item!r}")


@register(title="Keep/remove curves", page="saliency")
@dataclass(frozen=True)
class SaliencyCurvesRequest(Request):
    """Keep/remove curves (``engine.attribution.keep_remove_curves``): accuracy as the top-attributed
    pixels are kept or removed, per mode and model; with ``retrain`` the KAR/ROAR variant (Hooker
    et al. 2019): a fresh model trained on masked training images at each fraction
    (``engine.attribution.engine_retrainer``).

    Attributes:
        models: one to eight models; dataset: its test split gives the ``n`` images (the first
            ``n``, or a ``seed``-ed random subset).
        modes: "keep" and/or "remove", in display order.
        method, params: the attribution method ranking the pixels and its ``(name, value)``
            parameter overrides.
        fractions: shares of pixels kept/removed, in [0, 1].
        replacement: "mean" or "blur" fill of the dropped pixels.
        retrain: evaluate freshly trained models instead of the originals (KAR for keep, ROAR for
            remove); retrain_epochs, retrain_n: epochs and training images of each (the first
            ``retrain_n`` of the training split, or ``seed``-ed; the recipe's seed is ``seed`` or 0).
    """

    kind = "saliency_curves"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    modes: tuple[str, ...] = CURVE_MODES
    method: str = "saliency"
    params: tuple[tuple[str, object], ...] = ()
    fractions: tuple[float, ...] = CURVE_FRACTIONS
    replacement: str = "mean"
    n: int = 64
    seed: int | None = None
    retrain: bool = False
    retrain_epochs: int = RETRAIN_EPOCHS
    retrain_n: int = RETRAIN_N

    def _check(self) -> None:
        check_model_list(self.models)
        check_dataset(self.dataset)
        if not isinstance(self.modes, tuple) or not self.modes or len(set(self.modes)) != len(self.modes):
            raise InvalidParameterError(f"modes must list keep and/or remove once each, got {self.modes!r}")
        for mode in self.modes:
            check_choice("mode", mode, CURVE_MODES)
        if not isinstance(self.method, str) or not self.method:
            raise InvalidParameterError(f"method must be an attribution method name, got {self.method!r}")
        _check_method_params(self.params)
        if not isinstance(self.fractions, tuple) or not 1 <= len(self.fractions) <= 64:
            raise InvalidParameterError(f"fractions must list 1 to 64 numbers in [0, 1], got {self.fractions!r}")
        for value in self.fractions:
            check_float("fraction", value, 0.0, 1.0, optional=False)
        check_choice("replacement", self.replacement, CURVE_REPLACEMENTS)
        check_int("n", self.n, 1, MAX_IMAGES)
        if self.seed is not None:
            check_int("seed", self.seed, 0, 2**31 - 1)
        check_bool("retrain", self.retrain, optional=False)
        check_int("retrain_epochs", self.retrain_epochs, 1, 1000)
        check_int("retrain_n", self.retrain_n, 2, MAX_IMAGES)
        if not self.retrain and (self.retrain_epochs, self.retrain_n) != (RETRAIN_EPOCHS, RETRAIN_N):
            raise InvalidParameterError("retrain_epochs and retrain_n need retrain (they would split the result key)")

    def method_params(self) -> dict:
        """``{name: value}`` of the ranking method."""
        return dict(self.params)

    def describe(self) -> str:
        variant = f" · retrained ({self.retrain_epochs} epoch(s) on {self.retrain_n})" if self.retrain else ""
        return f"{super().describe()} · {self.dataset} · {'/'.join(self.modes)} · {self.n} images{variant}"


def check(request) -> None:
    """Torch-side checks before a job is queued: the ranking method and its parameters exist."""
    from engine.attribution.methods import resolve_params

    resolve_params(request.method, request.method_params())


def run(request, ctx) -> Payload:
    """Every mode's curve for every model (see the module docstring)."""
    from engine import data as edata
    from engine.attribution import keep_remove_curves

    check(request)
    names = unique_names(request.models, file_safe=True)
    dataset = ctx.images(request.dataset, n=request.n)
    loaded, notes = ctx.models(request.models, dataset)
    images, labels = edata.take(dataset, request.n, seed=request.seed)
    retrainer = retrainer_of(request, ctx) if request.retrain else None
    models = {name: m.model for name, m in zip(names, loaded)}
    curves = []
    for i, mode in enumerate(request.modes):
        ctx.check_stop()
        found = keep_remove_curves(models, images, labels, mode, method=request.method,
                                   method_params=request.method_params(), fractions=request.fractions,
                                   replacement=request.replacement, progress=_mode_progress(ctx, i, len(request.modes)),
                                   should_stop=ctx.stopped, retrain=retrainer)
        if ctx.stopped() or any(curve.stopped for curve in found.values()):
            raise AnalysisCancelled("keep/remove curves stopped before they finished; nothing was stored")
        curves += [curve.to_dict() for curve in found.values()]
    retrain = None if retrainer is None else {"config": retrainer.config.to_dict(),
                                              "records": [r.to_dict() for r in retrainer.records]}
    meta = finite({"names": names, "curves": curves, "retrain": retrain, "notes": notes, "device": ctx.device})
    return Payload({}, meta)


def retrainer_of(request, ctx):
    """The KAR/ROAR ``retrain`` callable: ``retrain_n`` training images (the first, or ``seed``-ed),
    the engine's retraining recipe with ``retrain_epochs`` and seed ``seed or 0``."""
    from engine import data as edata
    from engine.attribution import engine_retrainer, retrain_config

    train_set = edata.load_dataset(request.dataset, split="train")
    if request.retrain_n > len(train_set):
        raise InvalidParameterError(f"retrain_n must be <= {len(train_set)} (the {request.dataset} training split), "
                                    f"got {request.retrain_n}")
    images, labels = edata.take(train_set, request.retrain_n, seed=request.seed)
    config = retrain_config(request.dataset, epochs=request.retrain_epochs, seed=request.seed or 0)
    return engine_retrainer(images, labels, config, should_stop=ctx.stopped)


def _mode_progress(ctx, index: int, modes: int):
    """``progress(done, total)`` of mode ``index``'s curves drawn as its share of one bar over all modes."""
    def update(done: int, total: int) -> None:
        ctx.report(index * total + done, modes * total)
    return update


def decode(result, names: dict | None = None, **_options) -> list:
    """The ``engine.attribution.CurveResult`` list (modes outer, models inner); ``names`` renames
    models (stored name -> shown name)."""
    from engine.attribution import CurveResult

    rename = names or {}
    out = []
    for entry in result.meta["curves"]:
        fields = {**entry, "fractions": tuple(entry["fractions"]), "accuracy": tuple(entry["accuracy"]),
                  "params": dict(entry.get("params") or {})}
        fields["name"] = rename.get(entry["name"], entry["name"])
        out.append(CurveResult(**fields))
    return out


def report(result) -> dict:
    """The JSON of the curves (torch-free): ``curves`` is ``{mode: {model: curve}}``, each curve as
    ``python -m engine saliency --curve MODE`` writes it to ``curve_MODE[_retrain].json``."""
    request, meta = result.request, result.meta
    curves: dict = {mode: {} for mode in request.modes}
    for entry in meta["curves"]:
        curves[entry["mode"]][entry["name"]] = entry
    return {"dataset": request.dataset, "modes": list(request.modes), "method": request.method, "n": request.n,
            "retrained": request.retrain, "checkpoints": {n: r.path for n, r in zip(meta["names"], request.models)},
            "curves": curves, "retrain": meta.get("retrain"), "seconds": round(result.seconds, 3),
            "warnings": list(meta.get("notes", []))}


def rows(result, names: dict | None = None) -> list[dict]:
    """One row per curve point (the Saliency page's table and CSV); ``names`` renames models.
    Retrained curves add their ``retrain_epochs`` and ``retrain_n``."""
    request, rename = result.request, names or {}
    extra = {"retrain_epochs": request.retrain_epochs, "retrain_n": request.retrain_n} if request.retrain else {}
    return [{"model": rename.get(c["name"], c["name"]), "mode": c["mode"], "retrained": c["retrained"], "fraction": f,
             "accuracy": a, "clean_accuracy": c["clean_accuracy"], "method": c["method"],
             "replacement": c["replacement"], "n": c["n"], **extra}
            for c in result.meta["curves"] for f, a in zip(c["fractions"], c["accuracy"])]


def passes(request, _per, _loaded) -> tuple[float, int]:
    """Cost model per evaluation image: per mode, the ranking map, one pass per fraction and the
    clean pass; with retraining, per mode and fraction, masking ``retrain_n`` training images (a
    map each) and training on them (a gradient step per image and epoch), per evaluation image."""
    from engine.analysis.cost import GRADIENT_STEP, method_passes

    fractions = len(set(request.fractions))
    ranking = method_passes(request.method, request.method_params())
    total = len(request.modes) * (ranking + fractions + 1.0)
    if request.retrain:
        per_run = request.retrain_n * (ranking + GRADIENT_STEP * request.retrain_epochs) / request.n
        total += len(request.modes) * fractions * per_run
    return total, request.n


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(meta={
    "names": [str], "notes": [str], "device": str, "retrain": (dict, None),
    "curves": [{"mode": str, "name": str, "fractions": [float], "accuracy": [float], "retrained": bool}],
})
