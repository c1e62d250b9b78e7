"""CKA as an analysis: :class:`~engine.analysis.requests.CKARequest` -> stored maps.

``run`` streams the data through ``engine.similarity.compare_models`` (minibatch CKA, memory
independent of the number of images; each model runs on at most :data:`FORWARD_BATCH` images at a
time) and saves its running HSIC sums every second, so a killed job resumes at the next batch.
``decode`` rebuilds the :class:`~engine.similarity.CKAComparison` the Representations page plots;
``report`` gives the CLI's JSON without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request
from engine.analysis.fields import (
    CKA_KERNELS,
    CKA_POOLINGS,
    MAX_BATCH,
    MAX_IMAGES,
    SPLITS,
    check_choice,
    check_dataset,
    check_float,
    check_int,
    check_names,
)
from engine.analysis.registry import register
from engine.analysis.schema import Array, Schema
from engine.errors import InvalidParameterError


@register(title="CKA maps", page="representations")
@dataclass(frozen=True)
class CKARequest(Request):
    """Minibatch CKA maps A×A, B×B and A×B (``engine.similarity.compare_models``).

    Attributes:
        a, b: the two models (``b`` may be ``a`` with the other BN branch).
        dataset, split: the images (the first ``n`` of the split, in order).
        n: images used (>= 4); batch_size: images per minibatch of the estimator (>= 4).
        layers_a, layers_b: layer names (None: the model's default layers).
        kernel: "linear" or "rbf"; sigma_fraction: RBF bandwidth (None: 0.8).
        pooling: "flatten" or "avg".
        inputs: "clean", or "adv" (crafted by ``attack`` with ``eps``/``steps`` on ``craft_on``).
    """

    kind = "cka"
    MODEL_FIELDS = ("a", "b")

    a: ModelRef
    b: ModelRef
    dataset: str
    split: str = "test"
    n: int = 2000
    batch_size: int = 200
    layers_a: tuple[str, ...] | None = None
    layers_b: tuple[str, ...] | None = None
    kernel: str = "linear"
    sigma_fraction: float | None = None
    pooling: str = "flatten"
    inputs: str = "clean"
    attack: str = "pgd"
    eps: float | None = None
    steps: int | None = None
    craft_on: str = "a"

    def _check(self) -> None:
        check_dataset(self.dataset)
        check_choice("split", self.split, SPLITS)
        check_int("n", self.n, 4, MAX_IMAGES)
        check_int("batch size", self.batch_size, 4, MAX_BATCH)
        check_names("layers_a", self.layers_a)
        check_names("layers_b", self.layers_b)
        check_choice("kernel", self.kernel, CKA_KERNELS)
        check_float("sigma_fraction", self.sigma_fraction, 1e-6, 1e6)
        check_choice("pooling", self.pooling, CKA_POOLINGS)
        check_choice("inputs", self.inputs, ("clean", "adv"))
        if not isinstance(self.attack, str) or not self.attack:
            raise InvalidParameterError(f"attack must be an attack name, got {self.attack!r}")
        check_float("eps", self.eps, 0.0, 1e4)
        if self.steps is not None:
            check_int("steps", self.steps, 1, 10_000)
        check_choice("craft_on", self.craft_on, ("a", "b"))

    def describe(self) -> str:
        inputs = "clean" if self.inputs == "clean" else f"{self.attack} on {self.craft_on.upper()}"
        return f"{super().describe()} · {self.dataset} · {self.n} images · {inputs}"

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


def run(request, ctx) -> Payload:
    """Compute the three CKA maps of ``request`` (see the module docstring)."""
    from engine.similarity import compare_models, corresponding_depths

    dataset = ctx.images(request.dataset, request.split, request.n)
    (loaded_a, loaded_b), notes = ctx.models([request.a, request.b], dataset, classes=False)
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


def passes(request, per, _loaded) -> tuple[float, int]:
    """Cost model: one forward pass per model and image, plus about three passes per attack step on
    the crafting model for adversarial inputs."""
    from engine.analysis.cost import GRADIENT_STEP, share

    extra = 0.0
    if request.inputs == "adv":
        extra = GRADIENT_STEP * (request.steps or 10) * share(per, 0 if request.craft_on == "a" else len(per) - 1)
    return 1.0 + extra, request.n


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"layers_a": [str], "layers_b": [str], "kernel": str, "n": int, "inputs": str, "batch_size": int,
          "warnings": [str], "notes": [str], "device": str, "block_structure": {"a": (dict, None), "b": (dict, None)},
          "corresponding_depths": [dict], "resumed_at_images": int},
    arrays={"within_a": Array("f", 2), "within_b": Array("f", 2), "across": Array("f", 2)},
    rule=lambda meta, arrays: None if (
        np.shape(arrays["within_a"]) == (len(meta["layers_a"]),) * 2
        and np.shape(arrays["within_b"]) == (len(meta["layers_b"]),) * 2
        and np.shape(arrays["across"]) == (len(meta["layers_a"]), len(meta["layers_b"]))
    ) else "the CKA matrices' sizes differ from the layers named",
)
