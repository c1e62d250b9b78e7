"""CKA (and the other similarity measures) as an analysis: :class:`CKARequest` -> stored maps.

With ``measure="cka"`` (the default) ``run`` streams the data through
``engine.similarity.compare_models`` (minibatch CKA, memory independent of the number of images;
each model runs on at most :data:`FORWARD_BATCH` images at a time) and saves its running HSIC sums
every second, so a killed job resumes at the next batch. Any other measure of
:data:`MEASURE_NAMES` goes through ``engine.similarity.measures.compare_with_measure`` (all
activations held at once, within a memory bound; a killed job starts over).
``decode`` rebuilds the :class:`~engine.similarity.measures.MeasureComparison` the Representations
page plots; ``report`` gives the CLI's JSON without importing torch.
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
from engine.catalogue import SIMILARITY_MEASURES
from engine.errors import InvalidParameterError

#: the similarity measures, each with its one line (torch-free, so the CLI and requests need no torch)
MEASURE_NAMES = SIMILARITY_MEASURES
#: the measure a request without one uses (its results keep their keys)
DEFAULT_MEASURE = "cka"
#: mutual kNN's default neighbours (``engine.similarity.measures.DEFAULT_K``)
DEFAULT_K = 10
#: fields left out of a request's dict (and key) while they have their default, so the CKA
#: results stored before measures existed keep their keys: name -> "is it at its default?"
_OMITTED_AT_DEFAULT = {
    "measure": lambda request: request.measure == DEFAULT_MEASURE,
    "k": lambda request: request.measure != "mknn",
}


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
        pooling: "flatten" or "avg" (spatial activations, for every measure).
        inputs: "clean", or "adv" (crafted by ``attack`` with ``eps``/``steps`` on ``craft_on``).
        measure: a name of :data:`MEASURE_NAMES` ("cka": the streamed minibatch CKA).
        k: neighbours of the "mknn" measure (other measures keep the default).
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
    measure: str = DEFAULT_MEASURE
    k: int = DEFAULT_K

    def to_dict(self) -> dict:
        """The fields, less ``measure`` and ``k`` while they are at their defaults (a CKA request
        keeps the dict, and so the key, it had before the measures were added)."""
        return {name: value for name, value in super().to_dict().items()
                if not (name in _OMITTED_AT_DEFAULT and _OMITTED_AT_DEFAULT[name](self))}

    def cost_class(self) -> str:
        """``cka`` for CKA (the runs recorded before other measures existed), ``cka:MEASURE`` for
        another measure: a Procrustes or PWCCA run's time says nothing about CKA's."""
        return self.kind if self.measure == DEFAULT_MEASURE else f"{self.kind}:{self.measure}"

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
        self._check_measure()

    def _check_measure(self) -> None:
        """The measure is known; ``k`` is mknn's (1 <= k < n); kernels are CKA's."""
        check_choice("measure", self.measure, tuple(MEASURE_NAMES))
        check_int("k", self.k, 1, MAX_IMAGES)
        if self.measure == "mknn" and self.k >= self.n:
            raise InvalidParameterError(f"k must be smaller than the number of images ({self.n}), got {self.k}")
        if self.measure != "mknn" and self.k != DEFAULT_K:
            raise InvalidParameterError("k applies to the mknn measure only")
        if self.measure != "cka" and (self.kernel != "linear" or self.sigma_fraction is not None):
            raise InvalidParameterError("the kernel options apply to the cka measure only")

    def describe(self) -> str:
        inputs = "clean" if self.inputs == "clean" else f"{self.attack} on {self.craft_on.upper()}"
        measure = "" if self.measure == DEFAULT_MEASURE else f" · {self.measure}" + \
            (f" (k={self.k})" if self.measure == "mknn" else "")
        return f"{super().describe()}{measure} · {self.dataset} · {self.n} images · {inputs}"

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
    """Compute the maps of ``request``'s measure (see the module docstring)."""
    from engine.similarity.measures import compare_with_measure

    dataset = ctx.images(request.dataset, request.split, request.n)
    (loaded_a, loaded_b), notes = ctx.models([request.a, request.b], dataset, classes=False)
    transform, label = _inputs(request, loaded_a, loaded_b)
    streams = request.measure == "cka"
    state = ctx.load_state() if streams else None
    cka_options = dict(kernel=request.kernel, sigma_fraction=request.sigma_fraction, state=state,
                       save_state=ctx.save_state) if streams else {}
    comparison = streamed(ctx, request.measure.upper() if streams else request.measure, lambda: compare_with_measure(
        loaded_a.model, loaded_b.model, dataset, request.measure, layers_a=request.layers_a,
        layers_b=request.layers_b, n=request.n, batch_size=request.batch_size, pooling=request.pooling,
        transform=transform, inputs=label, options={"k": request.k}, progress=ctx.report, should_stop=ctx.stopped,
        forward_batch=FORWARD_BATCH, **cka_options,
    ))
    meta = _meta(request, comparison) | {"notes": notes, "device": ctx.device,
                                         "resumed_at_images": int(state["images"]) if state else 0}
    arrays = {"within_a": comparison.within_a.matrix, "within_b": comparison.within_b.matrix,
              "across": comparison.across.matrix}
    if comparison.reverse is not None:
        arrays["across_reverse"] = comparison.reverse.matrix
    return Payload(arrays, meta)


def _meta(request, comparison) -> dict:
    """The stored metadata of a comparison: layers, settings, block structure (on the measure's
    similarity form) and the A×B values at corresponding depths (keyed by the measure's name)."""
    from engine.similarity import corresponding_depths
    from engine.similarity.measures import get_measure

    found = get_measure(request.measure)
    depth, values, pairs = corresponding_depths(comparison.across)
    return {
        "layers_a": list(comparison.within_a.rows), "layers_b": list(comparison.within_b.rows),
        "kernel": request.kernel, "estimator": comparison.within_a.estimator, "n": comparison.within_a.n,
        "inputs": comparison.inputs, "batch_size": comparison.batch_size, "compute_seconds": comparison.seconds,
        "warnings": list(comparison.warnings), "measure": found.name, "measure_options": dict(comparison.options),
        "block_structure": {"a": _structure(found.similarity(comparison.within_a.matrix)),
                            "b": _structure(found.similarity(comparison.within_b.matrix))},
        "corresponding_depths": [{"depth": float(d), "a": pa, "b": pb, found.name: float(v)}
                                 for d, v, (pa, pb) in zip(depth, values, pairs)],
    }


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


def measure_of(result) -> str:
    """The measure of a stored result ("cka" for results stored before measures existed)."""
    return result.meta.get("measure", DEFAULT_MEASURE)


def _maps(result) -> list[tuple[str, str, list, list]]:
    """``(label, array name, rows, cols)`` of every stored map: A×A, B×B, A×B and (asymmetric
    measures) B×A."""
    la, lb = result.meta["layers_a"], result.meta["layers_b"]
    maps = [("AxA", "within_a", la, la), ("BxB", "within_b", lb, lb), ("AxB", "across", la, lb)]
    return maps + ([("BxA", "across_reverse", lb, la)] if "across_reverse" in result.arrays else [])


def decode(result, **_options):
    """The stored maps as a :class:`~engine.similarity.measures.MeasureComparison` (a
    ``CKAComparison`` with its measure named; what the page plots)."""
    from engine.similarity.measures import MeasureComparison, SimilarityMap

    meta = result.meta
    warnings = tuple(meta.get("warnings", ()))
    maps = {name: SimilarityMap(np.asarray(result.arrays[name], dtype=np.float64), tuple(rows), tuple(cols),
                                meta["kernel"], meta.get("estimator", "minibatch"), int(meta["n"]), warnings,
                                measure_of(result))
            for _, name, rows, cols in _maps(result)}
    return MeasureComparison(maps["within_a"], maps["within_b"], maps["across"], meta["inputs"],
                             int(meta["batch_size"]), float(result.seconds), warnings, measure=measure_of(result),
                             reverse=maps.get("across_reverse"), options=dict(meta.get("measure_options", {})))


def _map(result, name, rows, cols) -> dict:
    meta = result.meta
    return {"rows": list(rows), "cols": list(cols), "matrix": np.asarray(result.arrays[name]).tolist(),
            "measure": measure_of(result), "kernel": meta["kernel"], "estimator": meta.get("estimator", "minibatch"),
            "n": meta["n"], "warnings": list(meta.get("warnings", []))}


def report(result) -> dict:
    """The CLI's JSON for a result (torch-free: what ``cka --json`` and ``jobs result`` print):
    the measure, its maps (``across_reverse``: B×A, for an asymmetric measure) and their readings."""
    request, meta = result.request, result.meta
    maps = {name: _map(result, name, rows, cols) for _, name, rows, cols in _maps(result)}
    return {
        "a": request.a.path, "b": request.b.path, "a_branch": request.a.branch, "b_branch": request.b.branch,
        "dataset": request.dataset, "measure": measure_of(result), "measure_options": meta.get("measure_options", {}),
        "inputs": meta["inputs"], "block_structure": meta.get("block_structure"),
        "n": meta["n"], "batch_size": meta["batch_size"], "kernel": meta["kernel"], "estimator": meta.get("estimator"),
        "seconds": round(result.seconds, 3), **maps,
        "corresponding_depths": meta.get("corresponding_depths", []),
        "warnings": list(meta.get("notes", [])) + list(meta.get("warnings", [])),
        "device": meta.get("device"),
    }


def rows(result) -> list[dict]:
    """Long-format rows ``{map, row, col, <measure>}`` of every map (the CSV of ``cka --out``; the
    value column is named after the measure: ``cka`` for CKA)."""
    column = measure_of(result)
    out = []
    for key, name, rs, cs in _maps(result):
        matrix = np.asarray(result.arrays[name])
        out += [{"map": key, "row": r, "col": c, column: float(matrix[i, j])}
                for i, r in enumerate(rs) for j, c in enumerate(cs)]
    return out


def passes(request, per, loaded) -> tuple[float, int]:
    """Cost model: one forward pass per model and image, plus about three passes per attack step on
    the crafting model for adversarial inputs, plus (measures other than CKA) the measure's own
    compute: its operation count (``engine.similarity.measures.measure_flops``) at
    :data:`MEASURE_FLOPS_PER_S`, in units of the models' forward time per image."""
    from engine.analysis.cost import GRADIENT_STEP, share

    extra = 0.0
    if request.inputs == "adv":
        extra = GRADIENT_STEP * (request.steps or 10) * share(per, 0 if request.craft_on == "a" else len(per) - 1)
    if request.measure != "cka" and loaded:
        seconds = _measure_flops(request, loaded) / MEASURE_FLOPS_PER_S
        extra += seconds / max(sum(per) * request.n, 1e-12)
    return 1.0 + extra, request.n


#: float64 operations per second the cost model assumes for a measure's linear algebra (SVDs,
#: products): fitted to ``bench/similarity.py --table`` (N = 500, flatten, one thread) on the 2-core
#: development CPU, within about 2× for most measures; the kind's recorded runs correct it per machine
MEASURE_FLOPS_PER_S = 1e10


def _measure_flops(request, loaded) -> float:
    """The measure's operation count on the request's layers (widths from one probe forward)."""
    from engine.models import default_layers, list_layers
    from engine.similarity.measures import measure_flops

    def widths(model, names) -> list[int]:
        shapes = {info.name: info.output_shape or (1,) for info in list_layers(model)}
        names = names or default_layers(model)
        return [shapes.get(name, (1,))[0] if request.pooling == "avg" else int(np.prod(shapes.get(name, (1,))))
                for name in names]

    return measure_flops(request.measure, request.n, widths(loaded[0].model, request.layers_a),
                         widths(loaded[-1].model, request.layers_b), {"k": request.k})


def _check_shapes(meta, arrays) -> str | None:
    """What ties the stored fields together: each matrix has the size of the layers it names, and
    a stored measure is a known one."""
    la, lb = len(meta["layers_a"]), len(meta["layers_b"])
    shapes = {"within_a": (la, la), "within_b": (lb, lb), "across": (la, lb), "across_reverse": (lb, la)}
    if any(np.shape(arrays[name]) != shape for name, shape in shapes.items() if name in arrays):
        return "the CKA matrices' sizes differ from the layers named"
    if meta.get("measure", DEFAULT_MEASURE) not in MEASURE_NAMES:
        return f"the stored measure {meta.get('measure')!r} is not one of {', '.join(MEASURE_NAMES)}"
    return None


#: what a stored result holds (checked by the result store on save and on every read); results
#: stored before the measures existed have no "measure" (read as "cka") and no "across_reverse"
SCHEMA = Schema(
    meta={"layers_a": [str], "layers_b": [str], "kernel": str, "n": int, "inputs": str, "batch_size": int,
          "warnings": [str], "notes": [str], "device": str, "block_structure": {"a": (dict, None), "b": (dict, None)},
          "corresponding_depths": [dict], "resumed_at_images": int},
    arrays={"within_a": Array("f", 2), "within_b": Array("f", 2), "across": Array("f", 2),
            "across_reverse": Array("f", 2, required=False)},
    rule=_check_shapes,
)
