"""The Features page's **Unit atlas** view: every unit of a layer, model A beside model B.

A paged grid (64 units a page, sorted by unit, class selectivity, sparsity or best-match
correlation) of each model's unit visualisations, with the random directions as the baseline row;
a unit's button opens its detail view (larger image, statistics, top-k images with labels, its best
matches in the other model, and on demand its negative image and other starting points). The atlas
is the stored ``atlas`` analysis (``engine.analysis.kinds.atlas``), run here or as a background job;
while the job renders, the view shows the batches done so far, refreshed every few seconds.
Permalinks: ``?atlas=<key>`` (the grid) and ``?atlas=<key>&unit=<i>&side=a|b`` (one unit).
"""
from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import streamlit as st

from engine.analysis import AnalysisResult, ModelRef, ResultStore
from engine.analysis.kinds import atlas as katlas
from engine.errors import RobustScopeError
from engine.featvis.atlas_data import Atlas, crop_box
from pages import analysis_ui, common

PARAM, UNIT, SIDE = "atlas", "unit", "side"
PER_PAGE, PER_ROW = 64, 8
THUMB, DETAIL, TOP = 96, 288, 96
SORTS = {"unit": "unit", "class selectivity ↓": "selectivity", "sparsity ↓": "sparsity",
         "best-match correlation ↓": "match"}
SIDES = "ab"


# ------------------------------------------------------------------------------- the URL
def linked_key() -> str | None:
    """The atlas result the URL names: ``?atlas=KEY``, or a ``?result=KEY`` of an atlas (the
    Results page opens it so)."""
    key = st.query_params.get(PARAM)
    if key:
        return str(key)
    if analysis_ui.url_kind() == katlas.AtlasRequest.kind and not st.query_params.get(analysis_ui.JOB_PARAM):
        return str(st.query_params.get(analysis_ui.RESULT_PARAM)).split(",")[0]
    return None


def wanted() -> bool:
    """Whether the URL asks for the atlas view (a permalink or a running atlas job)."""
    return bool(st.query_params.get(PARAM)) or analysis_ui.url_kind() == katlas.AtlasRequest.kind


def _stored(key: str) -> AnalysisResult | None:
    try:
        found = ResultStore().load(key)
    except RobustScopeError as exc:   # a damaged entry or a malformed key
        st.warning(f"`?{PARAM}={key}`: {exc}")
        return None
    if found is None:
        st.warning(f"No stored atlas `{key}` in this runs folder; make it again below.")
    elif found.kind != katlas.AtlasRequest.kind:
        st.info(f"`?{PARAM}={key}` is a {found.kind} result; open it from the **Results** page.")
        return None
    return found


def _open_unit(side: int, unit: int | None) -> None:
    if unit is None:
        st.query_params.pop(UNIT, None)
        st.query_params.pop(SIDE, None)
    else:
        st.query_params[UNIT], st.query_params[SIDE] = str(unit), SIDES[side]


def _unit_in_url(atlas: Atlas) -> tuple[int, int] | None:
    """(side, unit) of ``?unit=&side=`` when it names a unit of ``atlas``."""
    text, side = st.query_params.get(UNIT), st.query_params.get(SIDE, "a")
    if text is None:
        return None
    index = SIDES.find(str(side))
    try:
        unit = int(str(text))
    except ValueError:
        unit = -1
    if not 0 <= index < len(atlas.models) or not 0 <= unit < len(atlas.models[index].units.mean):
        st.warning(f"`?{UNIT}={text}&{SIDE}={side}` names no unit of this atlas; showing the grid.")
        return None
    return index, unit


# ------------------------------------------------------------------------------- making one
def layer_choices(model) -> list[str]:
    """Layers of ``model`` an atlas can show (its main layers with a channel output)."""
    from engine import models as emodels

    shapes = {info.name: info.output_shape for info in emodels.list_layers(model)}
    return [name for name in emodels.default_layers(model) if shapes.get(name)]


def request_form(sel) -> katlas.AtlasRequest | None:
    """The atlas form (layer, B beside A, images, top-k, directions, steps, where to run); the
    request when **Make the atlas** is pressed."""
    layers = layer_choices(sel.a.model)
    if not layers:
        st.info("Model A has no layer with a channel output to show.")
        return None
    with st.form("atlas_form", enter_to_submit=False):
        c1, c2, c3 = st.columns(3)
        layer = c1.selectbox("Layer", layers, index=min(1, len(layers) - 1))
        both = c2.checkbox("Model B beside A", value=sel.b is not None, disabled=sel.b is None,
                           help="each unit of A matched with its best-correlated unit of B (and back)")
        n = common.image_count(c3, "Images scanned", sel.dataset, 20, 10_000, 1000, key="atlas_n")
        c4, c5, c6, c7 = st.columns(4)
        k = c4.number_input("Top-k images", 1, 32, 9)
        directions = c5.number_input("Random directions", 0, 32, 8, help="the baseline row: random directions "
                                     "of the same layer, visualised and searched like the units")
        steps = c6.number_input("Lucent steps", 0, 1024, 128, step=16)
        seed = c7.number_input("Seed", 0, 10_000, 0)
        mode = analysis_ui.mode_picker(st, "atlas_mode")
        pressed = st.form_submit_button("Make the atlas", type="primary")
    if not pressed:
        return None
    models = (ModelRef.from_loaded(sel.a),) + ((ModelRef.from_loaded(sel.b),) if both and sel.b is not None else ())
    st.session_state["atlas_mode_choice"] = mode
    return katlas.AtlasRequest(models=models, layers=(layer,), dataset=sel.dataset, n=int(n), k=min(int(k), int(n)),
                               directions=int(directions), steps=int(steps), seed=int(seed))


def make(sel, request) -> AnalysisResult | None:
    """Run or queue ``request`` (then None: the view follows the job)."""
    loaded = [sel.a] + ([sel.b] if len(request.models) == 2 else [])
    try:
        with common.stop_button(st, "atlas_stop", "stops the atlas (nothing is stored)"):
            return analysis_ui.run_or_queue(request, loaded, st.session_state.get("atlas_mode_choice", "auto"),
                                            "Unit atlas", sel.device)
    except RobustScopeError as exc:
        common.show_error(exc)
        return None


# ------------------------------------------------------------------------------- a running job
def running_job():
    """The unfinished atlas job ``?job=`` names, or None."""
    jobs = analysis_ui._jobs_for(katlas.AtlasRequest.kind)
    return next((job for job in jobs if job.status not in analysis_ui.FINISHED), None)


@st.fragment(run_every=3)
def show_partial(request) -> None:
    """The atlas so far of a running job (its partial state), refreshed every 3 s."""
    from engine.analysis.runner import read_state
    from engine.analysis.store import CorruptResult

    key = request.key()
    try:
        state = read_state(ResultStore().partial_dir(key), request, key)
    except CorruptResult:   # not written yet, or being replaced this instant
        st.caption("Scanning the images: the units appear here as their batches are rendered.")
        return
    atlas = katlas.partial_atlas(request, state)
    if atlas is None:
        st.caption("Scanning the images…")
        return
    done = " · ".join(f"{SIDES[i].upper()}: {m.rendered} of {len(m.units.mean)} units rendered"
                      for i, m in enumerate(atlas.models))
    st.caption(f"Rendering ({done}); the grid fills in as batches finish.")
    show_grids(atlas, None, interactive=False)


# ------------------------------------------------------------------------------- showing one
def _order(atlas: Atlas, side: int, key: str) -> list[int]:
    units = atlas.models[side].units
    if key == "unit":
        return list(range(len(units.mean)))
    values = {"selectivity": units.selectivity, "sparsity": units.sparsity,
              "match": atlas.best_match_correlations(side)}[key]
    if len(values) == 0:
        return list(range(len(units.mean)))
    return [int(u) for u in np.argsort(-np.where(np.isfinite(values), values, -np.inf), kind="stable")]


def _figure(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.2f}"


def _caption(atlas: Atlas, side: int, unit: int, key: str) -> str:
    units = atlas.models[side].units
    value = {"selectivity": units.selectivity[unit], "sparsity": units.sparsity[unit],
             "match": atlas.best_match_correlations(side)[unit] if atlas.matches else np.nan}.get(key)
    return f"{unit}" + ("" if value is None else f" · {_figure(float(value))}")


def _show(where, image: np.ndarray, width: int, caption: str | None = None) -> None:
    where.image(image[:, :, 0] if image.shape[2] == 1 else image, width=width, caption=caption)


def show_grids(atlas: Atlas, result: AnalysisResult | None, interactive: bool = True) -> None:
    """Each model's paged unit grid side by side (sort and page controls when ``interactive``)."""
    key, page = "unit", 0
    if interactive:
        c1, c2 = st.columns(2)
        sorts = [label for label, value in SORTS.items() if value != "match" or atlas.matches is not None]
        key = SORTS[c1.selectbox("Sort by", sorts, key="atlas_sort")]
        pages = max(-(-len(m.units.mean) // PER_PAGE) for m in atlas.models)
        page = int(c2.number_input(f"Page (of {pages}, {PER_PAGE} units each)", 1, pages, 1, key="atlas_page")) - 1
    for side, (where, model) in enumerate(zip(st.columns(len(atlas.models)), atlas.models)):
        where.markdown(f"**{SIDES[side].upper()}: `{model.name}`** · `{model.layer}` · {len(model.units.mean)} units")
        if len(model.direction_images):
            with where.expander("Random directions (the baseline row)"):
                cells = st.columns(PER_ROW)
                for j, image in enumerate(model.direction_images):
                    _show(cells[j % PER_ROW], image, THUMB, f"dir {j}")
        shown = _order(atlas, side, key)[page * PER_PAGE:(page + 1) * PER_PAGE]
        cells = where.columns(PER_ROW)
        for position, unit in enumerate(shown):
            cell = cells[position % PER_ROW]
            if unit < model.rendered:
                _show(cell, model.images[unit], THUMB)
            else:
                cell.caption("rendering…")
            if interactive:
                if cell.button(_caption(atlas, side, unit, key), key=f"atlas_open_{side}_{unit}"):
                    _open_unit(side, unit)
                    st.rerun()
            else:
                cell.caption(str(unit))


def show_matches_plot(atlas: Atlas) -> None:
    """The distribution of best-match correlations, A→B and B→A (Li et al. 2016)."""
    if atlas.matches is None:
        return
    import plotly.graph_objects as go

    figure = go.Figure()
    for side in (0, 1):
        values = atlas.best_match_correlations(side)
        figure.add_histogram(x=values[np.isfinite(values)], name=f"{SIDES[side].upper()} → {SIDES[1 - side].upper()}",
                             opacity=0.6, xbins={"start": -1, "end": 1.0001, "size": 0.05})
    figure.update_layout(barmode="overlay", height=260, margin={"t": 30, "b": 30},
                         title="Best-match correlation of each unit with the other model's units",
                         xaxis_title="Pearson r (spatially averaged activations)", yaxis_title="units")
    st.plotly_chart(figure, width="stretch")


@st.cache_resource(max_entries=4)
def _images_of(dataset: str, split: str):
    from engine.featvis.atlas import scanned_images

    return scanned_images(dataset, split)


def show_unit(atlas: Atlas, side: int, unit: int, sel, result: AnalysisResult) -> None:
    """One unit: its image, statistics, top-k images with labels and crops, best matches."""
    model = atlas.models[side]
    units = model.units
    if st.button("← Back to the grid", key="atlas_back"):
        _open_unit(side, None)
        st.rerun()
    st.subheader(f"{SIDES[side].upper()} `{model.name}` · `{model.layer}` · unit {unit}")
    c1, c2 = st.columns([1, 2])
    _show(c1, model.images[unit], DETAIL)
    c2.table({"figure": ["mean activation", "max activation", "sparsity (share ≤ 0)", "class selectivity",
                         "most active class"],
              "value": [_figure(float(units.mean[unit])), _figure(float(units.max[unit])),
                        _figure(float(units.sparsity[unit])), _figure(float(units.selectivity[unit])),
                        _class(atlas, int(np.argmax(units.class_mean[unit])))]})
    st.markdown(f"**Top {units.topk_index.shape[1]} of {atlas.n} images** (crop around the top activation)")
    images = _images_of(atlas.dataset, atlas.split)(units.topk_index[unit])
    cells = st.columns(min(PER_ROW, len(images)))
    size = tuple(atlas.image_shape[1:])
    for rank, (picture, pos) in enumerate(zip(images, units.topk_pos[unit])):
        top, left, height, width = crop_box(tuple(int(p) for p in pos), model.grid, size)
        _show(cells[rank % len(cells)], picture[top:top + height, left:left + width], TOP,
              f"{_class(atlas, int(units.topk_label[unit][rank]))} · {units.topk_score[unit][rank]:.2f}")
    matches = atlas.match(side, unit)
    if matches:
        other = atlas.models[1 - side]
        st.markdown(f"**Best matches in {SIDES[1 - side].upper()}** (`{other.name}`)")
        cells = st.columns(len(matches))
        for cell, (match, corr) in zip(cells, matches):
            _show(cell, other.images[match], THUMB)
            if cell.button(f"{SIDES[1 - side].upper()} {match} · r = {_figure(corr)}", key=f"atlas_match_{match}"):
                _open_unit(1 - side, match)
                st.rerun()
    show_variants(atlas, side, unit, sel, result.request.models[side].sha256)
    st.caption(f"Link to this unit: this page with `?{PARAM}=…&{UNIT}={unit}&{SIDE}={SIDES[side]}`.")


def _class(atlas: Atlas, label: int) -> str:
    return atlas.class_names[label] if 0 <= label < len(atlas.class_names) else str(label)


def show_variants(atlas: Atlas, side: int, unit: int, sel, sha256: str) -> None:
    """On demand: the unit's negative image and two other starting points (needs the model, by its
    weights' sha256, loaded in the sidebar)."""
    model = next((m for m in (sel.a, sel.b) if m is not None and m.sha256 == sha256), None)
    if model is None:
        st.caption("Load this model in the sidebar to see its negative image and other starting points.")
        return
    if st.button("Negative image and other starting points", key="atlas_variants"):
        from engine.featvis.atlas import render_variants
        from engine.featvis.config import VisConfig

        with st.spinner("Rendering three images…"):
            low, others = render_variants(model.model, atlas.models[side].layer, unit, VisConfig(steps=128))
        cells = st.columns(1 + len(others))
        _show(cells[0], low, THUMB, "negative (drives it down)")
        for i, (cell, image) in enumerate(zip(cells[1:], others), start=1):
            _show(cell, image, THUMB, f"another start ({i})")


def downloads(result: AnalysisResult) -> None:
    """The atlas as JSON, as CSV, and as a static HTML site (zip) that opens without the server."""
    c1, c2, c3 = st.columns(3)
    c1.download_button("Download JSON", json.dumps(katlas.report(result), default=str), f"atlas-{result.key}.json",
                       "application/json")
    import csv

    rows = katlas.rows(result)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    c2.download_button("Download CSV (one row per unit)", text.getvalue(), f"atlas-{result.key}.csv", "text/csv")
    if c3.button("Prepare the static atlas (zip)", help="an index and a page per unit with PNG images: "
                 "unzip and open index.html in any browser, no server needed"):
        c3.download_button("Download the static atlas", static_zip(result), f"atlas-{result.key}.zip",
                           "application/zip")


def static_zip(result: AnalysisResult) -> bytes:
    """The static HTML atlas of ``result`` as zip bytes."""
    from engine.featvis.atlas_html import export_atlas

    atlas = result.value()
    with tempfile.TemporaryDirectory() as folder:
        export_atlas(atlas, _images_of(atlas.dataset, atlas.split), folder,
                     title=f"Unit atlas · {result.request.describe()}")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file():
                    archive.write(path, f"atlas/{path.relative_to(folder)}")
    return buffer.getvalue()


def show(result: AnalysisResult, sel) -> None:
    """A finished atlas: its permalink, the unit in the URL or the grids, the match plot, downloads."""
    st.query_params[PARAM] = result.key
    for param in (analysis_ui.RESULT_PARAM, analysis_ui.JOB_PARAM):
        st.query_params.pop(param, None)
    atlas = result.value()
    st.caption(f"{result.request.describe()} · top-{atlas.k} · {'stored earlier' if result.cached else 'computed now'}"
               f" ({result.seconds:.1f} s) · permalink: this page with `?{PARAM}={result.key}`")
    opened = _unit_in_url(atlas)
    if opened is not None:
        show_unit(atlas, *opened, sel, result)
        return
    show_matches_plot(atlas)
    show_grids(atlas, result)
    downloads(result)


def render(sel) -> None:
    """The atlas view: a permalinked atlas, a running atlas job, or the form to make one."""
    key = linked_key()
    result = _stored(key) if key else None
    if result is None:
        job = running_job()
        if job is not None:
            analysis_ui.job_status(katlas.AtlasRequest.kind)   # its progress bar (and the rerun when done)
            show_partial(job.config.request)
            return
        done = analysis_ui.job_status(katlas.AtlasRequest.kind)
        result = done
    if sel.a is not None:
        request = request_form(sel)
        if request is not None:
            result = make(sel, request) or result
            if result is None:
                return
    elif result is None:
        common.require_models(sel, both=False)
    if result is not None:
        show(result, sel)
