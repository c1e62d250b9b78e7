"""Features page: units (natural basis) vs random directions, Szegedy et al. 2013.

Pick a layer; each row is a unit eᵢ or a seeded random unit-norm direction v; the columns show the
top-k held-out images maximising ⟨φ(x), w⟩ and lucent's optimised image, for models A and B.
Teaching mode hides which rows are units: guess, then reveal.

The top-k search (``featvis_topk``) and lucent's images (``featvis``) are stored ``engine.analysis``
requests, one of each per model, run here or as background jobs (``Run: auto / here / in the
background``; ``?job=ID,…``, progress from any session). The view reopens from the permalink
``?result=<key>,…`` (every top-k and lucent result of the view) or from the Results page (one
result: that model's column) without loading a model. The **Unit atlas** view (``pages/atlas_view.py``)
shows every unit of a layer instead (``?atlas=<key>``).
"""
import json
from typing import NamedTuple

import numpy as np
import streamlit as st

from engine import featvis
from engine import models as emodels
from engine.analysis import AnalysisResult, ModelRef
from engine.analysis.kinds import topk as etopk
from engine.analysis.kinds.featvis import FeatVisRequest
from engine.analysis.kinds.topk import TopKRequest
from engine.errors import RobustScopeError
from pages import analysis_ui, atlas_view, common

TOPK, VIS = KINDS = ("featvis_topk", "featvis")  # the view's results: top-k and lucent images per model
SIDEBAR_TITLES = ("Model A", "Model B")  # column titles of results about the sidebar's models

st.title("Features: units vs random directions")
st.caption(
    "Szegedy et al. 2013: the images that maximise a single unit look no more coherent than those "
    "maximising a random direction of the same layer — meaning lives in the space, not the units."
)
sel = common.current_selection()
VIEWS = ("Units vs directions", "Unit atlas")
if st.radio("View", VIEWS, index=int(atlas_view.wanted()), horizontal=True, key="features_view",
            help="Unit atlas: every unit of a layer, A beside B, each with its visualisation, top-k images, "
                 "statistics and best match") == VIEWS[1]:
    atlas_view.render(sel)
    st.stop()
shown = analysis_ui.permalinked_all(KINDS) or analysis_ui.job_statuses(KINDS) or []  # ?result=… / ?job=…
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
    with st.form("featvis", enter_to_submit=False):
        c1, c2, c3, c4 = st.columns(4)
        layer = c1.selectbox("Layer", list(dims), index=min(1, len(dims) - 1))
        n_units = c2.number_input("Units", 1, 8, 2)
        n_dirs = c3.number_input("Random directions", 1, 8, 2)
        seed = c4.number_input("Seed", 0, 10_000, 0)
        c5, c6, c7, c8 = st.columns(4)
        k = c5.number_input("Top-k images", 1, 16, 5)
        n_images = c6.number_input("Held-out images searched", 20, 5000, 200, step=20)
        steps = c7.number_input("Lucent steps (0: off)", 0, 1024, 32, step=16,
                                help="optimisation steps of lucent's image of each row (0: top-k images only)")
        teaching = c8.checkbox("Teaching mode", help="Shuffle rows; guess which are real units.")
        mode = analysis_ui.mode_picker(st, "fv_mode")
        show = st.form_submit_button("Show", type="primary")
    return Settings(layer, int(n_units), int(n_dirs), int(seed), int(k), int(n_images), int(steps), teaching,
                    mode), show


def target_specs(targets: list) -> tuple:
    """The rows' targets as requests name them: ``("unit", i)`` / ``("direction", seed)``."""
    return tuple(("unit", int(t.channel)) if t.kind != "direction" else ("direction", int(t.seed)) for t in targets)


def topk_request(loaded, specs: tuple, s: Settings) -> TopKRequest:
    """The stored-analysis request of one model's top-k search (``n_images`` test images, seed 0)."""
    return TopKRequest(model=ModelRef.from_loaded(loaded), layer=s.layer, targets=specs, dataset=sel.dataset,
                       n=s.n_images, sample_seed=0, k=min(s.k, s.n_images))


def vis_request(loaded, specs: tuple, s: Settings) -> FeatVisRequest:
    """The stored-analysis request of one model's lucent images (``s.steps`` steps, seeded by ``s.seed``)."""
    return FeatVisRequest(model=ModelRef.from_loaded(loaded), layer=s.layer, targets=specs, steps=s.steps,
                          seed=s.seed)


def requests_for(loaded, targets: list, s: Settings) -> list:
    """One model's requests: its top-k search, and its lucent images when ``s.steps``."""
    specs = target_specs(targets)
    return [topk_request(loaded, specs, s)] + ([vis_request(loaded, specs, s)] if s.steps else [])


def progress_label(slot: str, request) -> str:
    """The progress bar's label of one request run here."""
    what = f"top-{request.k} images" if request.kind == TOPK else "lucent visualisation"
    return f"Model {slot}: {what}"


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
    """The top-k images and (when ``s.steps``) lucent's images of every row for models A and B: one
    stored request of each per model (a repeated **Show** reads the stored results), run here or
    queued (then None)."""
    jobs = [(slot, request) for slot, rows in row_targets(s).items()
            for request in requests_for(MODELS[slot], rows, s)]
    return analysis_ui.run_or_queue_all([request for _, request in jobs], [[MODELS[slot]] for slot, _ in jobs],
                                        s.mode, [progress_label(slot, request) for slot, request in jobs],
                                        sel.device)


@st.cache_data(show_spinner="Reading the top-k images…", max_entries=16)
def picked(key: str, _result) -> np.ndarray:
    """The chosen images of stored result ``key``, (T, k, C, H, W) in [0, 1], read from the dataset."""
    return etopk.picked_images(_result).numpy()


class Column(NamedTuple):
    """One model's column of the view: its top-k result and/or its lucent result (the same rows)."""

    title: str
    top: AnalysisResult | None
    vis: AnalysisResult | None

    @property
    def first(self) -> AnalysisResult:
        """Either result (both name the same model, layer and rows)."""
        return self.top if self.top is not None else self.vis


def _rows_of(result) -> tuple:
    """What the top-k and lucent results of one column share: model, BN branch, layer, rows, position."""
    request = result.request
    return request.model.sha256, request.model.branch, request.layer, request.targets, request.position


def columns(results: list) -> list[Column]:
    """The view's columns in URL order: each pairs a top-k and a lucent result of the same model
    and rows (either may be missing, e.g. one result opened from the Results page)."""
    groups: list[dict] = []
    for result in results:
        group = next((g for g in groups if result.kind not in g and _rows_of(next(iter(g.values()))) ==
                      _rows_of(result)), None)
        if group is None:
            groups.append({result.kind: result})
        else:
            group[result.kind] = result
    titles = column_titles([next(iter(g.values())) for g in groups])
    return [Column(title, g.get(TOPK), g.get(VIS)) for title, g in zip(titles, groups)]


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


def describe(view: list[Column]) -> None:
    """Which models, layer, search and lucent settings the view shows."""
    models = " · ".join(f"{c.title}: `{c.first.request.model.name}`" if c.title in SIDEBAR_TITLES else f"`{c.title}`"
                        for c in view)
    parts = [models, f"layer `{view[0].first.request.layer}`"]
    top = next((c.top.request for c in view if c.top is not None), None)
    if top is not None:
        parts.append(f"top-{top.k} of {top.n} {top.dataset} test images")
    vis = next((c.vis.request for c in view if c.vis is not None), None)
    if vis is not None:
        parts.append(f"lucent: {vis.steps} steps, seed {vis.seed}")
    st.caption(" · ".join(parts))
    if not all(c.title in SIDEBAR_TITLES for c in view):
        st.info("Some of these stored results are for other models than the sidebar's; "
                "press **Show** to compute them for the sidebar's models.")


class Cells(NamedTuple):
    """One column decoded for display: its rows' labels, top-k ranking and images, lucent images."""

    labels: list[str]
    top: etopk.TopKReport | None
    picked: np.ndarray | None
    lucent: featvis.VisResult | None


def decode(column: Column) -> Cells:
    """Read one column's stored results back (the top-k images from the dataset)."""
    top, vis = column.top, column.vis
    return Cells(list(column.first.meta["labels"]), top.value() if top is not None else None,
                 picked(top.key, top) if top is not None else None, vis.value() if vis is not None else None)


def show_cell(where, title: str, cells: Cells, index: int, teaching: bool) -> None:
    """Row ``index`` of one column: its title, top-k grid and lucent image (those it has)."""
    where.markdown(title + ("" if teaching else f" · {cells.labels[index]}"))
    if cells.top is not None:
        show_image(where, featvis.to_hwc(cells.picked[index]),
                   "top-k: " + ", ".join(f"{v:.2f}" for v in cells.top.top[index].scores))
    if cells.lucent is not None:
        show_image(where, cells.lucent.images[index:index + 1],
                   f"lucent, objective {cells.lucent.trajectories[-1, index]:.3f}")


def show_rows(view: list[Column], s: Settings) -> dict[int, bool]:
    """One row per target, one column per model. Returns the teaching-mode guesses (row index ->
    "a real unit")."""
    decoded = [decode(column) for column in view]
    n_rows = max(len(cells.labels) for cells in decoded)
    order = np.random.default_rng(s.seed + 1).permutation(n_rows) if s.teaching else np.arange(n_rows)
    guesses = {}
    for row, index in enumerate(order):
        st.markdown(f"**Row {row + 1}**" if s.teaching else "")
        for where, column, cells in zip(st.columns(len(view)), view, decoded):
            if index < len(cells.labels):
                show_cell(where, column.title, cells, index, s.teaching)
        if s.teaching:
            guesses[int(index)] = st.checkbox("I think this row is a real unit", key=f"guess_{row}")
    return guesses


def reveal(keys: list[str], guesses: dict[int, bool]) -> None:
    """Score the teaching-mode guesses against which rows (target ``keys``) are units."""
    real = {i for i, key in enumerate(keys) if not key.startswith("direction")}
    correct = sum((i in real) == guessed for i, guessed in guesses.items())
    st.success(f"You classified {correct} of {len(guesses)} rows correctly (chance: half).")
    st.table([{"row": r + 1, "truth": "unit" if i in real else "random direction",
               "your guess": "unit" if guessed else "random direction"}
              for r, (i, guessed) in enumerate(guesses.items())])


def downloads(view: list[Column]) -> None:
    """The top-k JSON (as ``python -m engine featvis``) and each column's lucent images (PNG)."""
    report = {c.title: etopk.report(c.top) for c in view if c.top is not None}
    if report:
        st.download_button("Download top-k (JSON)", json.dumps(report, indent=2), "featvis.json", "application/json")
    for i, c in enumerate(view):
        if c.vis is not None:
            request = c.vis.request
            st.download_button(f"Download {c.title} visualisations (PNG, rows in unit-then-direction order)",
                               featvis.png_bytes(tiled(c.vis.value().images)),
                               f"featvis_{request.model.name}_{request.layer}.png", "image/png", key=f"png_{i}")


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
    if not analysis_ui.job_pending(KINDS):
        st.info("Choose a layer and the rows, then press **Show** to search the top-k images"
                + (" and render the lucent visualisations." if settings.steps else "."))
    st.stop()

view = columns(shown)
describe(view)
guesses = show_rows(view, settings)
if settings.teaching and st.button("Reveal"):
    reveal(list(view[0].first.meta["keys"]), guesses)
analysis_ui.show_permalink(*shown)
downloads(view)
