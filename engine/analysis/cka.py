"""CKA as an analysis: :class:`~engine.analysis.requests.CKARequest` -> stored maps.

``run`` streams the data through ``engine.similarity.compare_models`` (minibatch CKA, memory
independent of the number of images; each model runs on at most :data:`FORWARD_BATCH` images at a
time) and saves its running HSIC sums every second, so a killed job resumes at the next batch.
``decode`` rebuilds the :class:`~engine.similarity.CKAComparison` the Representations page plots;
``report`` gives the CLI's JSON without importing torch.
"""
from __future__ import annotations

import numpy as np

from engine.analysis.base import AnalysisCancelled, Payload
from engine.errors import InvalidParameterError

#: images per forward pass inside one CKA minibatch (bounds activation memory; same numbers)
FORWARD_BATCH = 16


def _inputs(request, loaded_a, loaded_b):
    """(transform or None, label) for the request's inputs."""
    if request.inputs == "clean":
        return None, "clean"
    from engine.attacks import make_attack
    from engine.similarity import attack_transform

    params = {"eps": request.eps}
    if request.steps is not None:
        params["steps"] = request.steps
    attack = make_attack(request.attack, request.dataset, **params)
    target = loaded_a if request.craft_on == "a" else loaded_b
    return attack_transform(attack, target.model), f"adversarial ({request.attack} on {request.craft_on.upper()})"


def check_models(checkpoints, dataset, name: str, classes: bool) -> list[str]:
    """Refuse models that cannot run on ``dataset`` (input shape; class count when ``classes``);
    return the notes to show (class count or training set differ), like ``engine.cli.require_compatible``."""
    from engine import data as edata
    from engine.selection import class_mismatch, incompatibility

    spec = getattr(dataset, "spec", None) or edata.get_spec(name)
    notes = []
    for loaded in checkpoints:
        problem = incompatibility(loaded.card, spec, classes=classes)
        if problem:
            raise InvalidParameterError(problem)
        note = class_mismatch(loaded.card, spec)
        if note is None and loaded.card.dataset and loaded.card.dataset != spec.name:
            note = (f"{loaded.name} was trained on `{loaded.card.dataset}`, not `{spec.name}`: its classes "
                    "are not this dataset's labels")
        if note and note not in notes:
            notes.append(note)
    return notes


def run(request, ctx) -> Payload:
    """Compute the three CKA maps of ``request`` (see the module docstring)."""
    from engine import data as edata
    from engine.similarity import compare_models, corresponding_depths

    loaded_a, loaded_b = ctx.load(request.a), ctx.load(request.b)
    dataset = edata.load_dataset(request.dataset, split=request.split)
    notes = check_models([loaded_a, loaded_b], dataset, request.dataset, classes=False)
    if request.n > len(dataset):
        raise InvalidParameterError(f"n must be at most {len(dataset)} (the {request.dataset} {request.split} "
                                    f"split's size), got {request.n}")
    transform, label = _inputs(request, loaded_a, loaded_b)
    state = ctx.load_state()
    resumed_at = int(state["images"]) if state else 0
    comparison = streamed(ctx, "CKA", lambda: compare_models(
        loaded_a.model, loaded_b.model, dataset, layers_a=request.layers_a, layers_b=request.layers_b,
        n=request.n, batch_size=request.batch_size, kernel=request.kernel, sigma_fraction=request.sigma_fraction,
        pooling=request.pooling, transform=transform, inputs=label, progress=ctx.report,
        should_stop=ctx.stopped, forward_batch=FORWARD_BATCH, state=state, save_state=ctx.save_state,
    ))
    depth, values, pairs = corresponding_depths(comparison.across)
    meta = {
        "layers_a": list(comparison.within_a.rows), "layers_b": list(comparison.within_b.rows),
        "kernel": request.kernel, "estimator": "minibatch", "n": comparison.within_a.n,
        "inputs": comparison.inputs, "batch_size": comparison.batch_size, "compute_seconds": comparison.seconds,
        "warnings": list(comparison.warnings), "notes": notes, "device": ctx.device,
        "block_structure": {"a": _structure(comparison.within_a.matrix), "b": _structure(comparison.within_b.matrix)},
        "corresponding_depths": [{"depth": float(d), "a": pa, "b": pb, "cka": float(v)}
                                 for d, v, (pa, pb) in zip(depth, values, pairs)],
        "resumed_at_images": resumed_at,
    }
    arrays = {"within_a": comparison.within_a.matrix, "within_b": comparison.within_b.matrix,
              "across": comparison.across.matrix}
    return Payload(arrays, meta)


def streamed(ctx, what: str, compute):
    """``compute()``, a streamed CKA estimate polling ``ctx.stopped``, with a stop turned into
    AnalysisCancelled: part way (the estimate warns "stopped early") or before its first batch
    (the engine then finds no images: a cancel, not an input error)."""
    ctx.check_stop()
    try:
        found = compute()
    except InvalidParameterError:
        ctx.check_stop()
        raise
    ctx.check_stop()
    if any(w.startswith("stopped early") for w in found.warnings):
        raise AnalysisCancelled(f"{what} stopped before it finished; nothing was stored")
    return found


def _structure(matrix) -> dict | None:
    """The block-structure reading of a within-model map (None when it has too few layers)."""
    from engine.similarity.structure import block_structure

    try:
        return block_structure(matrix).to_dict()
    except InvalidParameterError:
        return None


def decode(result, **_options):
    """The stored maps as a :class:`~engine.similarity.CKAComparison` (what the page plots)."""
    from engine.similarity import CKAComparison, CKAResult

    meta, arrays = result.meta, result.arrays
    warnings = tuple(meta.get("warnings", ()))

    def one(name, rows, cols):
        return CKAResult(np.asarray(arrays[name], dtype=np.float64), tuple(rows), tuple(cols), meta["kernel"],
                         meta.get("estimator", "minibatch"), int(meta["n"]), warnings)

    la, lb = meta["layers_a"], meta["layers_b"]
    return CKAComparison(one("within_a", la, la), one("within_b", lb, lb), one("across", la, lb), meta["inputs"],
                         int(meta["batch_size"]), float(result.seconds), warnings)


def _map(result, name, rows, cols) -> dict:
    meta = result.meta
    return {"rows": list(rows), "cols": list(cols), "matrix": np.asarray(result.arrays[name]).tolist(),
            "kernel": meta["kernel"], "estimator": meta.get("estimator", "minibatch"), "n": meta["n"],
            "warnings": list(meta.get("warnings", []))}


def report(result) -> dict:
    """The CLI's JSON for a CKA result (torch-free: what ``cka --json`` and ``jobs result`` print)."""
    request, meta = result.request, result.meta
    la, lb = meta["layers_a"], meta["layers_b"]
    return {
        "a": request.a.path, "b": request.b.path, "a_branch": request.a.branch, "b_branch": request.b.branch,
        "dataset": request.dataset, "inputs": meta["inputs"], "block_structure": meta.get("block_structure"),
        "n": meta["n"], "batch_size": meta["batch_size"], "kernel": meta["kernel"], "estimator": meta.get("estimator"),
        "seconds": round(result.seconds, 3),
        "within_a": _map(result, "within_a", la, la), "within_b": _map(result, "within_b", lb, lb),
        "across": _map(result, "across", la, lb),
        "corresponding_depths": meta.get("corresponding_depths", []),
        "warnings": list(meta.get("notes", [])) + list(meta.get("warnings", [])),
        "device": meta.get("device"),
    }


def rows(result) -> list[dict]:
    """Long-format rows ``{map, row, col, cka}`` of the three maps (the CSV of ``cka --out``)."""
    meta = result.meta
    la, lb = meta["layers_a"], meta["layers_b"]
    out = []
    for key, name, rs, cs in (("AxA", "within_a", la, la), ("BxB", "within_b", lb, lb), ("AxB", "across", la, lb)):
        matrix = np.asarray(result.arrays[name])
        out += [{"map": key, "row": r, "col": c, "cka": float(matrix[i, j])}
                for i, r in enumerate(rs) for j, c in enumerate(cs)]
    return out
