"""Features page: units (natural basis) vs random directions, Szegedy et al. 2013.

Pick a layer; each row is a unit eᵢ or a seeded random unit-norm direction v; the columns show the
top-k held-out images maximising ⟨φ(x), w⟩ and lucent's optimised image, for models A and B.
Teaching mode hides which rows are units: guess, then reveal.

The top-k search is one stored ``engine.analysis`` request per model (``featvis_topk``), run here
or as background jobs (``?job=ID,ID``, progress from any session); the view reopens from the
permalink ``?result=<key A>,<key B>`` without loading a model. Lucent's images are rendered here
on **Show** (not part of the stored result).
"""
import json
from typing import NamedTuple

import numpy as np
import streamlit as st

from engine import featvis
from engine import models as emodels
from engine.analysis import ModelRef, TopKRequest
from engine.analysis import topk as etopk
from engine.errors import RobustScopeError
from pages import analysis_ui, common

KIND = "featvis_topk"
VIS_KEY = "fv_vis"  # session: result key -> lucent VisResult rendered on the last Show
SIDEBAR_TITLES = ("Model A", "Model B")  # column titles of results about the sidebar's models

st.title("Features: units vs random directions")
st.caption(
    "Szegedy et al. 2013: the images that maximise a single unit look no more coherent than those "
    "maximising a random direction of the same layer — meaning lives in the space, not the units."
)
sel = common.current_selection()
shown = analysis_ui.permalinked_all(KIND) or analysis_ui.job_statuses(KIND) or []  # ?result=… / ?job=…
if not shown or sel.a is not None:  # (a permalinked view shows without models)
    common.require_models(sel, both=False)
MODELS = {slot: m for slot, m in (("A", sel.a), ("B", sel.b)) if m is not None}


class Settings(NamedTuple):
    """The form's choices."""

    layer: str
    n_units: int
    n_dirs: int
    seed: int
    k: int
    n_images: int
    steps: int
    teaching: bool
    mode: str


#: the view's settings when no form is shown (a permalink opened without models)
NO_FORM = Settings("", 0, 0, 0, 0, 0, 0, False, "auto")


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


def settings_form(dims: dict[str, int]) -> tuple[Settings, bool]:
    """The form (layer, rows, search size, lucent steps, teaching mode, where to run) and whether
    **Show** was pressed."""
    with st.form("featvis"):
        c1, c2, c3, c4 = st.columns(4)
        layer = c1.selectbox("Layer", list(dims), index=min(1, len(dims) - 1))
        n_units = c2.number_input("Units", 1, 8, 2)
        n_dirs = c3.number_input("Random directions", 1, 8, 2)
        seed = c4.number_input("Seed", 0, 10_000, 0)
        c5, c6, c7, c8 = st.columns(4)
        k = c5.number_input("Top-k images", 1, 16, 5)
        n_images = c6.number_input("Held-out images searched", 20, 5000, 200, step=20)
        steps = c7.number_input("Lucent steps (0: off)", 0, 1024, 32, step=16,
                                help="rendered here on Show (not in background jobs or permalinks)")
        teaching = c8.checkbox("Teaching mode", help="Shuffle rows; guess which are real units.")
        mode = analysis_ui.mode_picker(st, "fv_mode")
        show = st.form_submit_button("Show", type="primary")
    return Settings(layer, int(n_units), int(n_dirs), int(seed), int(k), int(n_images), int(steps), teaching,
                    mode), show


def topk_request(loaded, targets: list, s: Settings) -> TopKRequest:
    """The stored-analysis request of one model's top-k search (``n_images`` test images, seed 0)."""
    specs = tuple(("unit", int(t.channel)) if t.kind != "direction" else ("direction", int(t.seed)) for t in targets)
    return TopKRequest(model=ModelRef.from_loaded(loaded), layer=s.layer, targets=specs, dataset=sel.dataset,
                       n=s.n_images, sample_seed=0, k=min(s.k, s.n_images))


def row_targets(s: Settings) -> dict[str, list]:
    """Slot -> the rows' targets, for every model with layer ``s.layer`` (a warning for the others)."""
    out = {}
    for slot, loaded in MODELS.items():
        dim = layer_dims(loaded.model).get(s.layer)
        if dim is None:
            st.warning(f"Model {slot} has no layer {s.layer!r}.")
            continue
        out[slot] = make_targets(dim, s.n_units, s.n_dirs, s.seed)
    return out


def compute(s: Settings) -> list | None:
    """Top-k images of every row for models A and B (one stored request per model: a repeated
    search reads the stored result), here or queued (then None); lucent's images (when
    ``s.steps``) go to the session, by result key."""
    targets = row_targets(s)
    found = analysis_ui.run_or_queue_all(
        [topk_request(MODELS[slot], rows, s) for slot, rows in targets.items()],
        [[MODELS[slot]] for slot in targets], s.mode,
        [f"Model {slot}: top-{min(s.k, s.n_images)} images" for slot in targets], sel.device)
    if found is None:
        if s.steps:
            st.caption("Lucent's images are rendered here only: press **Show** with **Run: here** for them.")
        return None
    st.session_state[VIS_KEY] = {result.key: visualise(slot, rows, s)
                                 for result, (slot, rows) in zip(found, targets.items()) if s.steps}
    return found


def visualise(slot: str, targets: list, s: Settings):
    """Lucent's optimised image of every row for model ``slot`` (cached on disk by the engine)."""
    update, finish = common.progress_callback(f"Model {slot}: lucent visualisation")
    try:
        return featvis.cached_visualise(MODELS[slot], s.layer, targets, featvis.VisConfig(steps=s.steps, seed=s.seed),
                                        progress=update)
    finally:
        finish()


@st.cache_data(show_spinner="Reading the top-k images…", max_entries=16)
def picked(key: str, _result) -> np.ndarray:
    """The chosen images of stored result ``key``, (T, k, C, H, W) in [0, 1], read from the dataset."""
    return etopk.picked_images(_result).numpy()


def column_titles(results: list) -> list[str]:
    """"Model A" / "Model B" for a result about that sidebar model (by weights and BN branch),
    else the checkpoint's name."""
    free, titles = dict(MODELS), []
    for result in results:
        ref = result.request.model
        same = [s for s, m in free.items() if (m.sha256, getattr(m, "branch", "main")) == (ref.sha256, ref.branch)]
        if same:
            free.pop(same[0])
        titles.append(f"Model {same[0]}" if same else ref.name)
    return titles


def describe(results: list, titles: list[str]) -> None:
    """Which models, layer and search the view shows."""
    request = results[0].request
    models = " · ".join(f"{title}: `{r.request.model.name}`" if title in SIDEBAR_TITLES else f"`{title}`"
                        for title, r in zip(titles, results))
    st.caption(f"{models} · layer `{request.layer}` · top-{request.k} of {request.n} {request.dataset} test images")
    if not all(title in SIDEBAR_TITLES for title in titles):
        st.info("Some of these stored top-k images are for other models than the sidebar's; "
                "press **Show** to search the sidebar's models.")


def show_rows(results: list, titles: list[str], s: Settings) -> dict[int, bool]:
    """One row per target, one column per result (top-k grid, lucent image when rendered here).
    Returns the teaching-mode guesses (row index -> "a real unit")."""
    reports = [r.value() for r in results]
    images = [picked(r.key, r) for r in results]
    vis = st.session_state.get(VIS_KEY, {})
    n_rows = max(len(report.labels) for report in reports)
    order = np.random.default_rng(s.seed + 1).permutation(n_rows) if s.teaching else np.arange(n_rows)
    guesses = {}
    for row, index in enumerate(order):
        st.markdown(f"**Row {row + 1}**" if s.teaching else "")
        for column, title, result, report, chosen in zip(st.columns(len(results)), titles, results, reports, images):
            if index >= len(report.labels):
                continue
            column.markdown(title + ("" if s.teaching else f" · {report.labels[index]}"))
            show_image(column, featvis.to_hwc(chosen[index]),
                       "top-k: " + ", ".join(f"{v:.2f}" for v in report.top[index].scores))
            lucent = vis.get(result.key)
            if lucent is not None:
                show_image(column, lucent.images[index:index + 1],
                           f"lucent, objective {lucent.trajectories[-1, index]:.3f}")
        if s.teaching:
            guesses[int(index)] = st.checkbox("I think this row is a real unit", key=f"guess_{row}")
    return guesses


def reveal(report, guesses: dict[int, bool]) -> None:
    """Score the teaching-mode guesses against which rows are units."""
    real = {i for i, key in enumerate(report.keys) if not key.startswith("direction")}
    correct = sum((i in real) == guessed for i, guessed in guesses.items())
    st.success(f"You classified {correct} of {len(guesses)} rows correctly (chance: half).")
    st.table([{"row": r + 1, "truth": "unit" if i in real else "random direction",
               "your guess": "unit" if guessed else "random direction"}
              for r, (i, guessed) in enumerate(guesses.items())])


def downloads(results: list, titles: list[str]) -> None:
    """The top-k JSON (as ``python -m engine featvis``) and each column's lucent images (PNG)."""
    report = {title: etopk.report(result) for title, result in zip(titles, results)}
    st.download_button("Download top-k (JSON)", json.dumps(report, indent=2), "featvis.json", "application/json")
    vis = st.session_state.get(VIS_KEY, {})
    for i, (title, result) in enumerate(zip(titles, results)):
        if result.key in vis:
            st.download_button(f"Download {title} visualisations (PNG, rows in unit-then-direction order)",
                               featvis.png_bytes(tiled(vis[result.key].images)),
                               f"featvis_{result.request.model.name}_{result.request.layer}.png", "image/png",
                               key=f"png_{i}")


settings = NO_FORM
if MODELS:
    common.require_compatible(sel, MODELS, classes=False)  # top-k needs the inputs; labels are not used
    dims = layer_dims(sel.a.model)
    if not dims:
        st.info("Model A has no layer with a channel output to inspect.")
        st.stop()
    settings, pressed = settings_form(dims)
    if pressed:
        try:
            with common.stop_button(st, "fv_stop", "interrupts the top-k search and the lucent optimisation"):
                shown = compute(settings) or []
        except RobustScopeError as exc:
            common.show_error(exc)
            st.stop()
if not shown:
    if not analysis_ui.job_pending(KIND):
        st.info("Choose a layer and the rows, then press **Show** to search the top-k images"
                + (" and render the lucent visualisations." if settings.steps else "."))
    st.stop()

titles = column_titles(shown)
describe(shown, titles)
guesses = show_rows(shown, titles, settings)
if settings.teaching and st.button("Reveal"):
    reveal(shown[0].value(), guesses)
analysis_ui.show_permalink(*shown)
downloads(shown, titles)
