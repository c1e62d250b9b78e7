"""Saliency page part: the attribution maps grid — gradient attribution maps (saliency,
SmoothGrad, Integrated Gradients, …) of models A and B side by side on one test image, rows by
method (Kim & Seo 2019, *Bridging Adversarial Robustness and Gradient Interpretability*). Rendering
only; the maps come from one ``engine.analysis`` request
(:class:`~engine.analysis.kinds.saliency.SaliencyGridRequest`), computed as it is shown (here when
the measured estimate is short, else offered as a background job), followed with ``?job=<id>`` and
reopened from ``?result=<key>`` without computing anything (without loading a model when no models
are chosen)."""
from __future__ import annotations

import io
from functools import partial

import numpy as np
import streamlit as st

from engine import attribution as attr
from engine import data as edata
from engine.analysis import ModelRef
from engine.analysis.kinds.saliency import SaliencyGridRequest
from engine.errors import RobustScopeError
from pages import analysis_ui, common

KIND = SaliencyGridRequest.kind
POOL = 256  # images the picker chooses from (first POOL of the test split)
DEFAULT_METHODS = ["saliency", "smoothgrad", "integrated_gradients"]
TILE_PX = 176  # rendered tile size
LIVE_KEY = "sal_live_key"  # session: the key of the grid this session last computed from its settings


def forget_live_grid() -> None:
    """Called first on every run of the page: when the maps' widgets are new (the page was just
    opened), a result in the URL was opened, not computed here."""
    if "sal_methods" not in st.session_state:
        st.session_state.pop(LIVE_KEY, None)


def heading(page, name: str) -> str:
    """A grid column's heading: the sidebar slot's title ("A: name (recipe)"), else the stored name."""
    return page.model_title(name) if name in page.models else name


@st.cache_data(show_spinner="Loading images…", max_entries=8)
def image_pool(dataset: str):
    """The first images of the test split (at most POOL) as numpy arrays."""
    size = len(edata.load_dataset(dataset, split="test"))
    images, labels = common.dataset_sample(dataset, min(POOL, size))
    return np.asarray(images), np.asarray(labels)


@st.cache_data(show_spinner="Loading the image…", max_entries=32)
def test_image(dataset: str, index: int):
    """Image ``index`` of the test split (C, H, W) and its label (a stored grid's input)."""
    image, label = edata.load_dataset(dataset, split="test")[index]
    return np.asarray(image, dtype=np.float32), int(label)


def grid_request(page, index: int, methods: dict, target, reduce: str, percentile: float) -> SaliencyGridRequest:
    """The stored-analysis request of the grid: the sidebar's models on test image ``index``."""
    return SaliencyGridRequest(
        models=tuple(ModelRef.from_loaded(m) for m in page.models.values()), dataset=page.sel.dataset, index=index,
        target=target, methods=tuple(methods),
        params=tuple((m, k, v) for m, values in methods.items() for k, v in values.items()),
        reduce=reduce, percentile=percentile)


def grid_cells(page, result) -> list[dict]:
    """Cells of a stored grid as plain dicts (methods outer, models inner)."""
    return [
        {"model": c.model, "method": c.method, "heatmap": c.heatmap, "error": c.error,
         "maps": None if c.attribution is None else c.attribution.maps[0], "predicted": c.predicted,
         "probability": c.probability, "target": c.target,
         "delta": None if c.attribution is None or c.attribution.delta is None else float(c.attribution.delta[0])}
        for c in result.value(names=page.shown_names(result))
    ]


def param_widgets(method: str) -> dict:
    """Widgets for one method's own parameters (from the registry's ParamSpecs)."""
    values = {}
    for spec in attr.METHODS[method].params:
        key = f"sal_{method}_{spec.name}"
        if isinstance(spec.default, bool):
            values[spec.name] = st.checkbox(spec.name, spec.default, help=spec.help, key=key)
        elif isinstance(spec.default, str):
            values[spec.name] = st.selectbox(spec.name, spec.choices, help=spec.help, key=key)
        elif isinstance(spec.default, int):
            high = int(min(spec.high, 256)) if spec.high is not None else None
            values[spec.name] = int(st.number_input(spec.name, int(spec.low), high, spec.default, help=spec.help, key=key))
        else:
            values[spec.name] = float(st.slider(spec.name, float(spec.low), float(spec.high), spec.default,
                                                help=spec.help, key=key))
    return values


def pick_image(dataset: str):
    """Index / random picker -> (image (C,H,W), label, index)."""
    images, labels = image_pool(dataset)
    cols = st.columns([2, 1, 3])
    if cols[1].button("Random image", key="sal_random"):
        st.session_state["sal_index"] = int(np.random.default_rng().integers(len(images)))
    index = cols[0].number_input("Image index (test split)", 0, len(images) - 1, key="sal_index")
    class_names = edata.get_spec(dataset).class_names
    label = int(labels[index])
    cols[2].markdown(f"True label: **{class_names[label] if label < len(class_names) else label}**")
    return images[index], label, int(index)


def choose_methods() -> tuple[dict, dict]:
    """Method multiselect, their parameters and the display options."""
    names = st.multiselect("Methods", list(attr.METHODS), default=DEFAULT_METHODS,
                           format_func=lambda m: attr.METHODS[m].label, key="sal_methods")
    with st.expander("Method parameters"):
        output = st.radio("Differentiate", ["logit", "log_prob"], horizontal=True, key="sal_output",
                          format_func={"logit": "class logit", "log_prob": "log-probability (−loss, Kim & Seo)"}.get)
        params = {}
        for method in names:
            if attr.METHODS[method].params:
                st.markdown(f"**{attr.METHODS[method].label}**")
            params[method] = {**param_widgets(method), "output": output}
    with st.expander("Display"):
        cols = st.columns(3)
        target_mode = cols[0].radio("Attribute", ["prediction", "true label"], key="sal_target",
                                    help="each model's own predicted class, or the true class")
        reduce = cols[1].selectbox("Channel reduction", list(attr.REDUCTIONS), key="sal_reduce")
        percentile = cols[2].slider("Clip at percentile", 90.0, 100.0, 99.0, 0.5, key="sal_pct")
        alpha = cols[1].slider("Overlay opacity", 0.0, 1.0, 0.6, 0.05, key="sal_alpha")
    return params, {"target_mode": target_mode, "reduce": reduce, "percentile": percentile, "alpha": alpha}


def tile(image: np.ndarray, heatmap: np.ndarray, as_overlay: bool, alpha: float) -> np.ndarray:
    """An RGB tile: the overlay on the image, or the coloured heatmap."""
    return attr.overlay(image, heatmap, alpha) if as_overlay else attr.colorize(heatmap)


def show_grid(page, image, cells, dataset: str, as_overlay: bool, alpha: float, scale: int) -> list:
    """Rows: methods; columns: the input, then the models (A and B). Returns the tiles (for the PNG
    download)."""
    models = list(dict.fromkeys(c["model"] for c in cells))
    names = edata.get_spec(dataset).class_names
    header = st.columns(1 + len(models))
    header[0].markdown("**input**")
    first = {c["model"]: c for c in cells[: len(models)]}
    for col, model in zip(header[1:], models):
        c = first[model]
        pred = names[c["predicted"]] if c["predicted"] < len(names) else c["predicted"]
        col.markdown(f"**{heading(page, model)}**  \npredicts *{pred}* ({c['probability']:.0%})")
    rows, by_method = [], {}
    for c in cells:
        by_method.setdefault(c["method"], []).append(c)
    input_tile = attr.image_to_rgb(image)
    for method, row in by_method.items():
        cols = st.columns(1 + len(models))
        cols[0].image(attr.to_png_bytes(input_tile, scale), caption=attr.METHODS[method].label, width=TILE_PX)
        tiles = [input_tile]
        for col, c in zip(cols[1:], row):
            if c["error"]:
                col.warning(c["error"])
                tiles.append(np.zeros_like(input_tile))
                continue
            picture = tile(image, c["heatmap"], as_overlay, alpha)
            delta = f" · IG δ={c['delta']:.2g}" if c["delta"] is not None else ""
            col.image(attr.to_png_bytes(picture, scale), caption=f"{c['model']} · {attr.METHODS[method].label}{delta}",
                      width=TILE_PX)
            tiles.append(picture)
        rows.append(tiles)
    if any(c["delta"] is not None for c in cells):
        st.caption("IG δ: Integrated Gradients' completeness gap, the sum of the attributions minus "
                   "(f(image) − f(baseline)) for the attributed class; near 0 when the path integral has converged "
                   "(more steps shrink it; Sundararajan et al. 2017).")
    return rows


def grid_png(rows: list, scale: int) -> bytes:
    """All tiles in one PNG (rows = methods), with a 2-pixel white gap."""
    gap = 2
    lines = []
    for tiles in rows:
        padded = [np.pad(t, ((gap, gap), (gap, gap), (0, 0)), constant_values=1.0) for t in tiles]
        lines.append(np.concatenate(padded, axis=1))
    return attr.to_png_bytes(np.concatenate(lines, axis=0), scale)


def maps_npz(image, label, cells) -> bytes:
    buffer = io.BytesIO()
    arrays = {"image": image, "label": np.asarray(label)}
    for c in cells:
        if c["maps"] is not None:
            arrays[f"{c['model']}__{c['method']}__maps"] = c["maps"]
            arrays[f"{c['model']}__{c['method']}__heatmap"] = c["heatmap"]
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def show_maps(page, result, image, label: int, as_overlay: bool, alpha: float) -> None:
    """The grid of a stored (or just computed) result, its downloads and its permalink."""
    request = result.request
    cells = grid_cells(page, result)
    scale = max(1, TILE_PX // image.shape[-1])
    rows = show_grid(page, image, cells, request.dataset, as_overlay, alpha, scale)
    cols = st.columns(2)
    cols[0].download_button("Download grid (PNG)", partial(grid_png, rows, max(1, scale // 2)),  # made when clicked
                            file_name=f"saliency_{request.dataset}_{request.index}.png", mime="image/png",
                            key="sal_dl_png")
    cols[1].download_button("Download maps (NPZ)", partial(maps_npz, image, label, cells),
                            file_name=f"saliency_{request.dataset}_{request.index}.npz", key="sal_dl_npz")
    analysis_ui.show_permalink(result, in_url=page.url_kind in (None, KIND))


def url_grid(page):
    """The grid the URL names: a finished ``?job=`` (progress while it runs) or a ``?result=``
    permalink; None when it names none, another view (curves, trade-off) or the job is not done."""
    if page.url_kind not in (None, KIND):
        return None
    return analysis_ui.job_status(KIND) or analysis_ui.permalinked(KIND)


def stored_view(page, result, as_overlay: bool = True, alpha: float = 0.6) -> None:
    """A stored grid as it was computed (no model is loaded), saying which models it is about."""
    request = result.request
    st.markdown(f"**Stored maps** · {request.describe()}")
    if not page.shown_names(result):
        st.info("These maps are for " + ", ".join(f"`{ref.name}`" for ref in request.models)
                + (", not the sidebar's models." if page.models else "."))
    try:
        image, label = test_image(request.dataset, request.index)
    except RobustScopeError as exc:
        common.show_error(exc)
        return
    show_maps(page, result, image, result.meta.get("label", label), as_overlay, alpha)


def render_stored(page) -> bool:
    """Without models: the grid the URL names, from the result store; False when it names none."""
    opened = url_grid(page)
    if opened is not None:
        stored_view(page, opened)
    return opened is not None


def render(page) -> None:
    """The picker and the grid of its settings (computed as shown), or the grid the URL names."""
    image, label, index = pick_image(page.sel.dataset)
    params, display = choose_methods()
    if not params:
        st.info("Choose at least one method.")
        return
    as_overlay = st.toggle("Overlay on the image", value=True, key="sal_overlay")
    target = None if display["target_mode"] == "prediction" else label
    try:
        request = grid_request(page, index, params, target, display["reduce"], display["percentile"])
    except RobustScopeError as exc:
        common.show_error(exc)
        return
    linked = url_grid(page)
    if analysis_ui.job_pending(KIND):
        st.caption("The maps show here when the background job is done.")
        return
    if linked is not None and linked.key not in (request.key(), st.session_state.get(LIVE_KEY)):
        if st.button("Show the maps of the settings above instead", key="sal_live"):
            st.query_params.pop(analysis_ui.RESULT_PARAM, None)
            st.rerun()
        stored_view(page, linked, as_overlay, display["alpha"])
        return
    try:
        result = analysis_ui.auto_run(request, list(page.models.values()), "Computing attribution maps…",
                                      page.sel.device, key="sal_grid")
    except RobustScopeError as exc:
        common.show_error(exc)
        return
    if result is not None:
        st.session_state[LIVE_KEY] = result.key
        show_maps(page, result, image, label, as_overlay, display["alpha"])
