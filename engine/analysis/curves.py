"""Keep/remove curves (and KAR/ROAR) as an analysis: accuracy as top-attributed pixels are kept or removed.

``run`` is ``engine.attribution.keep_remove_curves`` once per mode on the request's images, with the
``engine.attribution.engine_retrainer`` plugged in when the request asks for retraining. The stored
result keeps every curve (``CurveResult.to_dict()``) and the retraining's recipe and records in the
metadata (no arrays: a curve is a few numbers). ``decode`` rebuilds the ``CurveResult`` list the
Saliency page plots; ``report`` gives the JSON ``python -m engine saliency --curve`` writes, and
``rows`` the page's CSV, both without importing torch.
"""
from __future__ import annotations

from engine.analysis.base import AnalysisCancelled, Payload, finite
from engine.errors import InvalidParameterError


def check(request) -> None:
    """Torch-side checks before a job is queued: the ranking method and its parameters exist."""
    from engine.attribution.methods import resolve_params

    resolve_params(request.method, request.method_params())


def run(request, ctx) -> Payload:
    """Every mode's curve for every model (see the module docstring)."""
    from engine import data as edata
    from engine.analysis.cka import check_models
    from engine.analysis.saliency import model_names
    from engine.attribution import keep_remove_curves

    check(request)
    loaded = [ctx.load(ref) for ref in request.models]
    names = model_names(request.models)
    dataset = edata.load_dataset(request.dataset, split="test")
    notes = check_models(loaded, dataset, request.dataset, classes=True)
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
