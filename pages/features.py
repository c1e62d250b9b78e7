"""Features page: units (natural basis) vs random directions, Szegedy et al. 2013.

Pick a layer; each row is a unit eᵢ or a seeded random unit-norm direction v; the columns show the
top-k held-out images maximising ⟨φ(x), w⟩ and lucent's optimised image, for models A and B.
Teaching mode hides which rows are units: guess, then reveal.
"""
import json

import numpy as np
import streamlit as st

from engine import featvis
from engine import models as emodels
from engine.analysis import ModelRef, TopKRequest, run_analysis
from engine.analysis.topk import picked_images
from engine.errors import RobustScopeError
from pages import common

st.title("Features: units vs random directions")
st.caption(
    "Szegedy et al. 2013: the images that maximise a single unit look no more coherent than those "
    "maximising a random direction of the same layer — meaning lives in the space, not the units."
)
sel = common.current_selection()
common.require_models(sel, both=False)


def layer_dims(model) -> dict[str, int]:
    """Layer name -> channel count, for the main layers of ``model``."""
    shapes = {info.name: info.output_shape for info in emodels.list_layers(model)}
    return {name: int(shapes[name][0]) for name in emodels.default_layers(model) if shapes.get(name)}


def make_targets(dim: int, n_units: int, n_dirs: int, seed: int) -> list:
    """Seeded random units and random directions of a ``dim``-channel layer."""
    rng = np.random.default_rng(seed)
    units = sorted(rng.choice(dim, size=min(n_units, dim), replace=False).tolist())
    return [featvis.unit_target(u) for u in units] + [
        featvis.direction_target(dim, seed=seed + j) for j in range(n_dirs)]


def tiled(images, scale: int = 3):
    """(N, H, W, C) images as one grid, upscaled up to ``scale`` and wrapped to stay within
    ``featvis.MAX_GRID_SIDE`` (large-input models)."""
    columns, fitted = featvis.fitting_grid(len(images), images.shape[1], images.shape[2], scale)
    return featvis.grid(images, columns=columns, scale=fitted)


def show_image(where, images, caption: str) -> None:
    """A row of (N, H, W, C) images as one grid."""
    tiled_images = tiled(images)
    where.image(tiled_images[:, :, 0] if tiled_images.shape[2] == 1 else tiled_images, caption=caption, clamp=True)


def topk_request(loaded, layer: str, targets: list, k: int, n_images: int) -> TopKRequest:
    """The stored-analysis request of one model's top-k search (``n_images`` test images, seed 0)."""
    specs = tuple(("unit", int(t.channel)) if t.kind != "direction" else ("direction", int(t.seed)) for t in targets)
    return TopKRequest(model=ModelRef.from_loaded(loaded), layer=layer, targets=specs, dataset=sel.dataset,
                       n=n_images, sample_seed=0, k=min(k, n_images))


def compute(layer: str, n_units: int, n_dirs: int, seed: int, k: int, n_images: int, steps: int) -> dict:
    """Top-k images (and lucent images when ``steps``) of every row, for models A and B.

    The search is one stored ``engine.analysis`` request per model (streamed: memory does not grow
    with the number of images searched; a repeated search reads the stored result)."""
    results, images = {}, {}
    for slot, loaded in MODELS.items():
        dim = layer_dims(loaded.model).get(layer)
        if dim is None:
            results[slot] = f"model {slot} has no layer {layer!r}"
            continue
        targets = make_targets(dim, n_units, n_dirs, seed)
        update, finish = common.progress_callback(f"Model {slot}: top-{k} images")
        try:
            found = run_analysis(topk_request(loaded, layer, targets, k, n_images), update, loaded=[loaded],
                                 device=sel.device)
        finally:
            finish()
        best, images[slot] = found.value().top, picked_images(found)
        vis = None
        if steps:
            update, finish = common.progress_callback(f"Model {slot}: lucent visualisation")
            vis = featvis.cached_visualise(loaded, layer, targets, featvis.VisConfig(steps=steps, seed=seed),
                                           progress=update)
            finish()
        results[slot] = (targets, best, vis)
    return {"images": images, "results": results}


MODELS = {slot: m for slot, m in (("A", sel.a), ("B", sel.b)) if m is not None}
common.require_compatible(sel, MODELS, classes=False)  # top-k needs the inputs; labels are not used
dims = layer_dims(sel.a.model)
if not dims:
    st.info("Model A has no layer with a channel output to inspect.")
    st.stop()
with st.form("featvis"):
    c1, c2, c3, c4 = st.columns(4)
    layer = c1.selectbox("Layer", list(dims), index=min(1, len(dims) - 1))
    n_units = c2.number_input("Units", 1, 8, 2)
    n_dirs = c3.number_input("Random directions", 1, 8, 2)
    seed = c4.number_input("Seed", 0, 10_000, 0)
    c5, c6, c7, c8 = st.columns(4)
    k = c5.number_input("Top-k images", 1, 16, 5)
    n_images = c6.number_input("Held-out images searched", 20, 5000, 200, step=20)
    steps = c7.number_input("Lucent steps (0: off)", 0, 1024, 32, step=16)
    teaching = c8.checkbox("Teaching mode", help="Shuffle rows; guess which are real units.")
    show = st.form_submit_button("Show", type="primary")

settings = (sel.a_path, sel.b_path, sel.dataset, sel.device, layer, int(n_units), int(n_dirs), int(seed), int(k),
            int(n_images), int(steps))
if show:
    st.session_state.pop("fv_result", None)
    try:
        with common.stop_button(st, "fv_stop", "interrupts the top-k search and the lucent optimisation"):
            st.session_state["fv_result"] = {"settings": settings, **compute(*settings[4:])}
    except RobustScopeError as exc:
        common.show_error(exc)
        st.stop()
state = st.session_state.get("fv_result")
if state is None or state["settings"] != settings:
    st.info("Choose a layer and the rows, then press **Show** to search the top-k images"
            + (" and render the lucent visualisations." if steps else "."))
    st.stop()
picked, results = state["images"], state["results"]
models = list(MODELS.items())

n_rows = int(n_units) + int(n_dirs)
order = np.random.default_rng(int(seed) + 1).permutation(n_rows) if teaching else np.arange(n_rows)
guesses = {}
for row, index in enumerate(order):
    st.markdown(f"**Row {row + 1}**" if teaching else "")
    columns = st.columns(len(models))
    for column, (slot, _) in zip(columns, models):
        result = results[slot]
        if isinstance(result, str):
            column.warning(result)
            continue
        targets, best, vis = result
        if index >= len(targets):
            continue
        target = targets[index]
        title = f"Model {slot}" + ("" if teaching else f" · {target.label}")
        column.markdown(title)
        show_image(column, featvis.to_hwc(picked[slot][index]),
                   "top-k: " + ", ".join(f"{s:.2f}" for s in best[index].scores))
        if vis is not None:
            show_image(column, vis.images[index:index + 1], f"lucent, objective {vis.trajectories[-1, index]:.3f}")
    if teaching:
        guesses[int(index)] = st.checkbox("I think this row is a real unit", key=f"guess_{row}")

if teaching and st.button("Reveal"):
    real = set(range(int(n_units)))
    correct = sum((i in real) == guessed for i, guessed in guesses.items())
    st.success(f"You classified {correct} of {len(guesses)} rows correctly (chance: half).")
    st.table([{"row": r + 1, "truth": "unit" if i in real else "random direction",
               "your guess": "unit" if guesses[int(i)] else "random direction"} for r, i in enumerate(order)])

report = {slot: {"layer": layer, "targets": [t.label for t in r[0]],
                 "top_k": [{"indices": b.indices.tolist(), "scores": b.scores.tolist()} for b in r[1]]}
          for slot, r in results.items() if not isinstance(r, str)}
st.download_button("Download top-k (JSON)", json.dumps(report, indent=2), "featvis.json", "application/json")
for slot, result in results.items():
    if not isinstance(result, str) and result[2] is not None:
        st.download_button(f"Download model {slot} visualisations (PNG, rows in unit-then-direction order)",
                           featvis.png_bytes(tiled(result[2].images)),
                           f"featvis_{slot}_{layer}.png", "image/png", key=f"png_{slot}")
