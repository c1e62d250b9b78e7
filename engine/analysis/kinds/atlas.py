"""The unit atlas as an analysis: every unit of a layer of one or two models, each with its lucent
visualisation, its top-k dataset images, its statistics and (for two models) its best match in
the other model; K random directions of the same layer as the baseline row (Szegedy et al. 2013;
OpenAI Microscope; Li et al. 2016 for the matching).

``run``: one streamed scan of the first ``n`` images through both models
(``engine.featvis.atlas.scan_layers``), then the units and directions rendered in batches of
``render_batch`` per optimisation (``render_units``). After the scan and after every render batch
the partial atlas is saved as the run's partial state, so a killed job resumes at the next batch
(the scan is not repeated), and the page shows the batches rendered so far while the job runs
(:func:`partial_atlas`). Arrays are named ``"<model #>/units/<field>"``,
``"<model #>/directions/<field>"``, ``"<model #>/images"`` (uint8), ``"<model #>/direction_images"``,
``"<model #>/direction_vectors"`` and, for two models, ``"match/ab_index"`` ... ``"match/ba_corr"``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.analysis.base import AnalysisCancelled, ModelRef, Payload, Request, finite, unique_names
from engine.analysis.fields import (
    MAX_BATCH,
    MAX_IMAGES,
    MAX_SEED,
    MAX_TARGETS,
    SPLITS,
    check_choice,
    check_dataset,
    check_int,
    check_model_list,
    check_names,
)
from engine.analysis.registry import register
from engine.analysis.runner import BAR
from engine.analysis.schema import Array, Schema
from engine.errors import InvalidParameterError
from engine.featvis.atlas_data import MATCHES, RENDER_BATCH, TABLE_FIELDS, Atlas, AtlasModel, UnitTable, best_matches

#: largest number of random directions per model (the baseline row)
MAX_DIRECTIONS = 64
#: largest top-k per unit
MAX_K = 64
#: share of the progress bar the scan takes (rendering: the rest)
SCAN_SHARE = 15


@register(title="Unit atlas", page="features")
@dataclass(frozen=True)
class AtlasRequest(Request):
    """Every unit of a layer, for one model or two side by side (``python -m engine atlas``).

    Attributes:
        models: one or two models (A, B); layers: the layer of each (one name: the same for both).
        dataset, split, n: the scanned images (the split's first ``n``).
        k: top-k images per unit; directions: random directions per model (the baseline row);
        direction_seed: seeds them (direction j of a model has seed ``direction_seed + j``).
        steps, lr, seed: the lucent optimisation of every image (the Features page's parameterisation
            and transforms); render_batch: units optimised together.
        batch_size: images per forward pass of the scan.
    """

    kind = "atlas"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    layers: tuple[str, ...]
    dataset: str
    split: str = "test"
    n: int = 1000
    k: int = 9
    directions: int = 8
    direction_seed: int = 0
    steps: int = 128
    lr: float = 0.05
    seed: int = 0
    render_batch: int = RENDER_BATCH
    batch_size: int = 128

    def _check(self) -> None:
        check_model_list(self.models, limit=2)
        check_names("layers", self.layers, optional=False, limit=2)
        if len(self.layers) not in (1, len(self.models)):
            raise InvalidParameterError(f"give one layer, or one per model ({len(self.models)}), got {len(self.layers)}")
        check_dataset(self.dataset)
        check_choice("split", self.split, SPLITS)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("k", self.k, 1, min(MAX_K, self.n))
        check_int("directions", self.directions, 0, MAX_DIRECTIONS)
        check_int("direction_seed", self.direction_seed, 0, MAX_SEED - MAX_DIRECTIONS)
        check_int("steps", self.steps, 0, 10_000)
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not 0 < self.lr <= 10:
            raise InvalidParameterError(f"lr must be a number in (0, 10], got {self.lr!r}")
        check_int("seed", self.seed, 0, MAX_SEED)
        check_int("render_batch", self.render_batch, 1, MAX_TARGETS)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def layer_of(self, index: int) -> str:
        """The layer of model ``index``."""
        return self.layers[index] if len(self.layers) > 1 else self.layers[0]

    def describe(self) -> str:
        layers = " vs ".join(dict.fromkeys(self.layers))
        return f"{super().describe()} · {layers} · {self.dataset} · {self.n} images"


def run(request, ctx) -> Payload:
    """Scan, then render batch by batch, saving the partial atlas after each (see the docstring)."""
    from engine import data as edata

    split = ctx.images(request.dataset, request.split, request.n)
    loaded, notes = ctx.models(request.models, split, classes=False)
    dataset = edata.Sample(split, request.n)   # the first n images, read batch by batch
    spec = edata.get_spec(request.dataset)
    state = ctx.load_state() or {}
    if "0/units/mean" not in state:
        state = _scan(request, ctx, loaded, dataset, spec.num_classes)
        ctx.save_state(state, force=True)
    resumed = sum(int(value) for name, value in state.items() if name.endswith("_rendered"))
    jobs = _render_jobs(request, state)
    for done, (index, what, start, stop) in enumerate(jobs):
        if start < int(state[f"{index}/{what}_rendered"]):
            continue
        state[f"{index}/{_images_name(what)}"][start:stop] = _render(request, ctx, loaded[index], index, what,
                                                                   start, stop, state)
        state[f"{index}/{what}_rendered"] = stop
        ctx.save_state(state, force=True)
        ctx.report(SCAN_SHARE + (BAR - SCAN_SHARE) * (done + 1) // len(jobs), BAR)
    names = unique_names(request.models)
    meta = {"names": names, "layers": [request.layer_of(i) for i in range(len(loaded))], "notes": notes,
            "device": ctx.device, "grids": [state[f"{i}/grid"] for i in range(len(loaded))],
            "class_names": list(spec.class_names), "image_shape": list(spec.input_shape),
            "rendered": [int(state[f"{i}/units_rendered"]) for i in range(len(loaded))],
            "resumed_renders": resumed}   # images an earlier attempt had rendered
    arrays = {name: value for name, value in state.items() if isinstance(value, np.ndarray)}
    return Payload(arrays, finite(meta))


def _scan(request, ctx, loaded, dataset, classes: int) -> dict:
    """The scan of every model's layer as partial state: the tables, the direction vectors, blank
    images to render into, the matches for two models, and render counters at 0."""
    from engine.featvis.atlas import layer_units, scan_layers
    from engine.featvis.targets import random_direction

    shapes = [tuple(m.model.input_shape) for m in loaded]
    units = [layer_units(m.model, request.layer_of(i), shapes[i])[0] for i, m in enumerate(loaded)]
    vectors = [np.stack([random_direction(u, request.direction_seed + j) for j in range(request.directions)])
               if request.directions else np.zeros((0, u), np.float32) for u in units]
    pairs = [(m.model, request.layer_of(i)) for i, m in enumerate(loaded)]
    try:
        scans, corr = scan_layers(pairs, dataset, request.k, classes, vectors, request.batch_size,
                                  progress=lambda done, total: ctx.report(SCAN_SHARE * done // total, BAR),
                                  should_stop=ctx.stopped)
    except InterruptedError:
        raise AnalysisCancelled("the atlas stopped before it finished; nothing was stored") from None
    state: dict = {}
    for i, (scan, shape, dirs) in enumerate(zip(scans, shapes, vectors)):
        state.update(_table_arrays(f"{i}/units", scan.units))
        state.update(_table_arrays(f"{i}/directions", scan.directions))
        c, h, w = shape
        state[f"{i}/images"] = np.zeros((len(scan.units.mean), h, w, c), np.uint8)
        state[f"{i}/direction_images"] = np.zeros((len(dirs), h, w, c), np.uint8)
        state[f"{i}/direction_vectors"] = np.asarray(dirs, np.float32)
        state.update({f"{i}/grid": list(scan.grid), f"{i}/units_rendered": 0, f"{i}/directions_rendered": 0})
    if corr is not None:
        for side, matrix in (("ab", corr), ("ba", corr.T)):
            index, values = best_matches(matrix, MATCHES)
            state[f"match/{side}_index"], state[f"match/{side}_corr"] = index, values
    return state


def _table_arrays(prefix: str, table: UnitTable) -> dict:
    return {f"{prefix}/{field}": np.asarray(getattr(table, field)) for field in TABLE_FIELDS}


def _images_name(what: str) -> str:
    return "images" if what == "units" else "direction_images"


def _render_jobs(request, state: dict) -> list[tuple[int, str, int, int]]:
    """``(model #, "units" | "directions", start, stop)`` of every render batch, in order."""
    jobs = []
    index = 0
    while f"{index}/images" in state:
        for what in ("units", "directions"):
            count = len(state[f"{index}/{_images_name(what)}"])
            jobs += [(index, what, start, min(start + request.render_batch, count))
                     for start in range(0, count, request.render_batch)]
        index += 1
    return jobs


def _render(request, ctx, loaded, index: int, what: str, start: int, stop: int, state: dict) -> np.ndarray:
    """The images of units (or directions) ``start..stop`` of model ``index`` (one optimisation)."""
    from engine.featvis.atlas import render_units
    from engine.featvis.config import VisConfig

    config = VisConfig(steps=request.steps, lr=request.lr, seed=request.seed)
    vectors = state[f"{index}/direction_vectors"][start:stop] if what == "directions" else None
    try:
        return render_units(loaded.model, request.layer_of(index), range(start, stop) if vectors is None else (),
                            vectors=vectors, config=config, should_stop=ctx.stopped)
    except InterruptedError:
        raise AnalysisCancelled("the atlas stopped before it finished; nothing was stored") from None


# ------------------------------------------------------------------------------- reading
def decode(result, **_options) -> Atlas:
    """The :class:`~engine.featvis.atlas_data.Atlas` of a stored result."""
    return atlas_from(result.request, result.meta, result.arrays)


def atlas_from(request, meta: dict, arrays: dict) -> Atlas:
    """An :class:`Atlas` from a result's (or a running job's partial state's) metadata and arrays."""
    models = []
    for i, name in enumerate(meta["names"]):
        models.append(AtlasModel(name, meta["layers"][i], tuple(meta["grids"][i]), _table(arrays, f"{i}/units"),
                                 _table(arrays, f"{i}/directions"), arrays[f"{i}/images"],
                                 arrays[f"{i}/direction_images"], arrays[f"{i}/direction_vectors"],
                                 int(meta["rendered"][i])))
    matches = None
    if "match/ab_index" in arrays:
        matches = {side: (arrays[f"match/{side}_index"], arrays[f"match/{side}_corr"]) for side in ("ab", "ba")}
    return Atlas(models, matches, request.dataset, request.split, request.n, request.k, list(meta["class_names"]),
                 tuple(meta["image_shape"]))


def _table(arrays: dict, prefix: str) -> UnitTable:
    return UnitTable(*(np.asarray(arrays[f"{prefix}/{field}"]) for field in TABLE_FIELDS))


def partial_atlas(request, state: dict) -> Atlas | None:
    """The atlas so far from a running job's partial state (``runner.read_state``), or None before
    its scan is done: what the page shows while the job renders."""
    if "0/units/mean" not in state:
        return None
    count = 1 + ("1/units/mean" in state)
    images = state["0/images"].shape                       # (U, H, W, C)
    meta = {"names": unique_names(request.models)[:count], "layers": [request.layer_of(i) for i in range(count)],
            "grids": [state[f"{i}/grid"] for i in range(count)],
            "rendered": [state[f"{i}/units_rendered"] for i in range(count)],
            "class_names": [], "image_shape": [images[3], images[1], images[2]]}
    return atlas_from(request, meta, state)


def report(result) -> dict:
    """The CLI's JSON (torch-free): per model its layer, unit count and each unit's figures (top-k
    image indices, mean, max, sparsity, selectivity and, for two models, its best match)."""
    atlas = decode(result)
    return finite({"dataset": atlas.dataset, "split": atlas.split, "n": atlas.n, "k": atlas.k,
                   "models": [_model_json(atlas, side) for side in range(len(atlas.models))],
                   "seconds": round(result.seconds, 3), "warnings": list(result.meta.get("notes", []))})


def _model_json(atlas: Atlas, side: int) -> dict:
    model = atlas.models[side]
    best = atlas.best_match_correlations(side)
    return {"name": model.name, "layer": model.layer, "units": len(model.units.mean),
            "directions": len(model.directions.mean),
            "median_selectivity": _median(model.units.selectivity), "median_sparsity": _median(model.units.sparsity),
            "median_best_match": _median(best) if len(best) else None,
            "unit_table": rows_of(atlas, side)}


def _median(values: np.ndarray) -> float | None:
    finite_values = np.asarray(values, dtype=float)
    finite_values = finite_values[np.isfinite(finite_values)]
    return float(np.median(finite_values)) if len(finite_values) else None


def rows_of(atlas: Atlas, side: int) -> list[dict]:
    """One row per unit of model ``side``: its figures, top-k image indices and best match."""
    model = atlas.models[side]
    out = []
    for unit in range(len(model.units.mean)):
        match = atlas.match(side, unit)
        out.append({"model": model.name, "layer": model.layer, "unit": unit,
                    "mean": float(model.units.mean[unit]), "max": float(model.units.max[unit]),
                    "sparsity": float(model.units.sparsity[unit]), "selectivity": float(model.units.selectivity[unit]),
                    "top_images": model.units.topk_index[unit].tolist(),
                    "match": match[0][0] if match else None, "match_corr": match[0][1] if match else None})
    return out


def rows(result) -> list[dict]:
    """CSV rows: one per unit of each model (top-k indices joined by spaces)."""
    atlas = decode(result)
    return [{**row, "top_images": " ".join(map(str, row["top_images"]))}
            for side in range(len(atlas.models)) for row in rows_of(atlas, side)]


def passes(request, per, loaded) -> tuple[float, int]:
    """Cost model: the scan's forward pass of every model over ``n`` images, plus every unit's and
    direction's optimisation (``steps`` forward-and-backward passes of one image per target; the
    units of a batch share them), expressed per scanned image."""
    from engine.analysis.cost import GRADIENT_STEP
    from engine.featvis.atlas import layer_units

    targets = sum(layer_units(m.model, request.layer_of(i), tuple(m.model.input_shape))[0] + request.directions
                  for i, m in enumerate(loaded))
    render = request.steps * GRADIENT_STEP * targets / len(loaded)
    return 1.0 + render / request.n, request.n


def _consistent(meta: dict, arrays: dict) -> str | None:
    """What ties the atlas' arrays together: one table row and one image per unit."""
    for i in range(len(meta["names"])):
        units = len(arrays.get(f"{i}/units/mean", ()))
        if len(arrays.get(f"{i}/images", ())) != units or len(arrays.get(f"{i}/units/topk_index", ())) != units:
            return f"model {i}'s images and unit table differ in length"
    return None


#: what a stored result holds (checked by the result store on save and on every read)
SCHEMA = Schema(
    meta={"names": [str], "layers": [str], "notes": [str], "device": str, "grids": [[int]], "class_names": [str],
          "image_shape": [int], "rendered": [int], "resumed_renders": int},
    arrays={"*/topk_index": Array("iu", 2), "*/topk_score": Array("f", 2), "*/topk_pos": Array("iu", 3),
            "*/topk_label": Array("iu", 2),
            "*/mean": Array("f", 1), "*/max": Array("f", 1), "*/sparsity": Array("f", 1),
            "*/selectivity": Array("f", 1), "*/class_mean": Array("f", 2), "*/images": Array("u", 4),
            "*/direction_images": Array("u", 4), "*/direction_vectors": Array("f", 2),
            "match/*_index": Array("iu", 2), "match/*_corr": Array("f", 2)},
    rule=_consistent,
)
