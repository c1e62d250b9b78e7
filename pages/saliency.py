"""Saliency page: gradient attribution maps of models A and B side by side (Kim & Seo 2019),
keep/remove curves, and the ε-vs-interpretability trade-off across checkpoints.

Each view is a stored ``engine.analysis`` request. The attribution grid (``saliency_grid``) is
computed as it is shown (here when the measured estimate is short, else offered as a background
job); the curves (``saliency_curves``, one request more for KAR/ROAR) and the trade-off
(``tradeoff``) run on a button, here or in the background as the run picker says. A queued job is
followed from any session with ``?job=ID``; ``?result=<key>`` reopens a stored view without
computing anything (without loading a model when no models are chosen). The URL names one view at a
time: the others leave it alone.
"""
import dataclasses
import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from engine import attribution as attr
from engine import data as edata
from engine.analysis import ModelRef, SaliencyCurvesRequest, TradeoffRequest
from engine.analysis import curves as stored_curves
from engine.analysis import tradeoff as stored_tradeoff
from engine.analysis.requests import SaliencyGridRequest
from engine.errors import RobustScopeError
from engine import selection
from pages import analysis_ui, common

POOL = 256  # images the picker chooses from (first POOL of the test split)
DEFAULT_METHODS = ["saliency", "smoothgrad", "integrated_gradients"]
TILE_PX = 176  # rendered tile size
KIND = "saliency_grid"
CURVES, TRADEOFF = "saliency_curves", "tradeoff"
LIVE_KEY = "sal_live_key"  # session: the key of the grid this session last computed from its settings

st.title("Saliency")
st.caption(
    "Where does each model look? Robust models' input gradients tend to look like the object, "
    "standard models' like noise (Kim & Seo 2019, *Bridging Adversarial Robustness and Gradient "
    "Interpretability*). Maps are computed with captum on the same image for A and B."
)
sel = common.current_selection()
MODELS = {slot: m for slot, m in (("A", sel.a), ("B", sel.b)) if m is not None}
URL_KIND = analysis_ui.url_kind()  # the view the URL (?result= / ?job=) names
if "sal_methods" not in st.session_state:
    # the maps' widgets are new (the page was just opened): a result in the URL was opened, not computed here
    st.session_state.pop(LIVE_KEY, None)


def model_title(slot: str) -> str:
    return selection.model_title(slot, MODELS[slot].card)


def heading(name: str) -> str:
    """A grid column's heading: the sidebar slot's title ("A: name (recipe)"), else the stored name."""
    return model_title(name) if name in MODELS else name


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


def grid_request(index: int, methods: dict, target, reduce: str, percentile: float) -> SaliencyGridRequest:
    """The stored-analysis request of the grid: the sidebar's models on test image ``index``."""
    return SaliencyGridRequest(
        models=tuple(ModelRef.from_loaded(m) for m in MODELS.values()), dataset=sel.dataset, index=index,
        target=target, methods=tuple(methods),
        params=tuple((m, k, v) for m, values in methods.items() for k, v in values.items()),
        reduce=reduce, percentile=percentile)


def shown_names(result) -> dict:
    """Stored model names -> "A"/"B" when the grid is about the sidebar's models (same weights and
    BN branches, in order); else {} (the stored names stay)."""
    mine = [(m.sha256, getattr(m, "branch", "main")) for m in MODELS.values()]
    theirs = [(ref.sha256, ref.branch) for ref in result.request.models]
    return dict(zip(result.meta["names"], MODELS)) if theirs == mine else {}


def grid_cells(result) -> list[dict]:
    """Cells of a stored grid as plain dicts (methods outer, models inner)."""
    return [
        {"model": c.model, "method": c.method, "heatmap": c.heatmap, "error": c.error,
         "maps": None if c.attribution is None else c.attribution.maps[0], "predicted": c.predicted,
         "probability": c.probability, "target": c.target,
         "delta": None if c.attribution is None or c.attribution.delta is None else float(c.attribution.delta[0])}
        for c in result.value(names=shown_names(result))
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


def pick_image():
    """Index / random picker -> (image (C,H,W), label, index)."""
    images, labels = image_pool(sel.dataset)
    cols = st.columns([2, 1, 3])
    if cols[1].button("Random image", key="sal_random"):
        st.session_state["sal_index"] = int(np.random.default_rng().integers(len(images)))
    index = cols[0].number_input("Image index (test split)", 0, len(images) - 1, key="sal_index")
    class_names = edata.get_spec(sel.dataset).class_names
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


def show_grid(image, cells, dataset: str, as_overlay: bool, alpha: float, scale: int) -> list:
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
        col.markdown(f"**{heading(model)}**  \npredicts *{pred}* ({c['probability']:.0%})")
    rows, by_method = [], {}
    for c in cells:
        by_method.setdefault(c["method"], []).append(c)
    input_tile = attr.image_to_rgb(image)
    for method, row in by_method.items():
        cols = st.columns(1 + len(models))
        cols[0].image(attr.to_png_bytes(input_tile, scale), caption=attr.METHODS[method].label)
        tiles = [input_tile]
        for col, c in zip(cols[1:], row):
            if c["error"]:
                col.warning(c["error"])
                tiles.append(np.zeros_like(input_tile))
                continue
            picture = tile(image, c["heatmap"], as_overlay, alpha)
            delta = f" · IG δ={c['delta']:.2g}" if c["delta"] is not None else ""
            col.image(attr.to_png_bytes(picture, scale), caption=f"{c['model']} · {attr.METHODS[method].label}{delta}")
            tiles.append(picture)
        rows.append(tiles)
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


def show_maps(result, image, label: int, as_overlay: bool, alpha: float) -> None:
    """The grid of a stored (or just computed) result, its downloads and its permalink."""
    request = result.request
    cells = grid_cells(result)
    scale = max(1, TILE_PX // image.shape[-1])
    rows = show_grid(image, cells, request.dataset, as_overlay, alpha, scale)
    cols = st.columns(2)
    cols[0].download_button("Download grid (PNG)", grid_png(rows, max(1, scale // 2)),
                            file_name=f"saliency_{request.dataset}_{request.index}.png", mime="image/png",
                            key="sal_dl_png")
    cols[1].download_button("Download maps (NPZ)", maps_npz(image, label, cells),
                            file_name=f"saliency_{request.dataset}_{request.index}.npz", key="sal_dl_npz")
    analysis_ui.show_permalink(result, in_url=URL_KIND in (None, KIND))


def url_grid():
    """The grid the URL names: a finished ``?job=`` (progress while it runs) or a ``?result=``
    permalink; None when it names none, another view (curves, trade-off) or the job is not done."""
    if URL_KIND not in (None, KIND):
        return None
    return analysis_ui.job_status(KIND) or analysis_ui.permalinked(KIND)


def stored_view(result, as_overlay: bool = True, alpha: float = 0.6) -> None:
    """A stored grid as it was computed (no model is loaded), saying which models it is about."""
    request = result.request
    st.markdown(f"**Stored maps** · {request.describe()}")
    if not shown_names(result):
        st.info("These maps are for " + ", ".join(f"`{ref.name}`" for ref in request.models)
                + (", not the sidebar's models." if MODELS else "."))
    try:
        image, label = test_image(request.dataset, request.index)
    except RobustScopeError as exc:
        common.show_error(exc)
        return
    show_maps(result, image, result.meta.get("label", label), as_overlay, alpha)


def maps_section() -> None:
    """The picker and the grid of its settings (computed as shown), or the grid the URL names."""
    image, label, index = pick_image()
    params, display = choose_methods()
    if not params:
        st.info("Choose at least one method.")
        return
    as_overlay = st.toggle("Overlay on the image", value=True, key="sal_overlay")
    target = None if display["target_mode"] == "prediction" else label
    try:
        request = grid_request(index, params, target, display["reduce"], display["percentile"])
    except RobustScopeError as exc:
        common.show_error(exc)
        return
    linked = url_grid()
    if analysis_ui.job_pending(KIND):
        st.caption("The maps show here when the background job is done.")
        return
    if linked is not None and linked.key not in (request.key(), st.session_state.get(LIVE_KEY)):
        if st.button("Show the maps of the settings above instead", key="sal_live"):
            st.query_params.pop(analysis_ui.RESULT_PARAM, None)
            st.rerun()
        stored_view(linked, as_overlay, display["alpha"])
        return
    try:
        result = analysis_ui.auto_run(request, list(MODELS.values()), "Computing attribution maps…", sel.device,
                                      key="sal_grid")
    except RobustScopeError as exc:
        common.show_error(exc)
        return
    if result is not None:
        st.session_state[LIVE_KEY] = result.key
        show_maps(result, image, label, as_overlay, display["alpha"])


#: line style per (mode, retrained): keep solid/dashed, remove dotted/dash-dotted.
CURVE_DASH = {("keep", False): "solid", ("keep", True): "dash", ("remove", False): "dot", ("remove", True): "dashdot"}
RETRAIN_SIZES = [64, 256, 512, 1024, 2048, 4096, 8192]


def curve_label(mode: str, retrained: bool) -> str:
    """``keep`` / ``remove``, or ``keep · KAR (retrained)`` / ``remove · ROAR (retrained)``."""
    return f"{mode} · {'KAR' if mode == 'keep' else 'ROAR'} (retrained)" if retrained else mode


def curves_figure(frame: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for (model, mode, retrained), part in frame.groupby(["model", "mode", "retrained"], sort=False):
        fig.add_trace(go.Scatter(x=part["fraction"], y=part["accuracy"], mode="lines+markers",
                                 name=f"{model} · {curve_label(mode, retrained)}",
                                 line={"dash": CURVE_DASH[(mode, bool(retrained))]}))
    fig.update_layout(xaxis_title="fraction of top-attributed pixels kept / removed", yaxis_title="accuracy",
                      yaxis_range=[0, 1.02], height=380, margin={"t": 30})
    return fig


def retrain_options(n_models: int, n_modes: int, n_fractions: int) -> dict | None:
    """The opt-in KAR/ROAR controls and a cost hint: ``{"epochs", "n_train"}``, or ``None`` when
    retraining is off."""
    if not st.checkbox("Retrain at each fraction (KAR/ROAR, slow)", key="curve_retrain",
                       help="Hooker et al. 2019: at each fraction, train a fresh model of the same architecture "
                            "on training images masked the same way, and evaluate that model instead"):
        return None
    cols = st.columns([1, 1, 3])
    epochs = int(cols[0].number_input("Retrain epochs", 1, 50, 4, key="curve_retrain_epochs"))
    n_train = cols[1].select_slider("Training images", RETRAIN_SIZES, value=2048, key="curve_retrain_n")
    config = attr.retrain_config(sel.dataset, epochs=epochs)
    runs = n_models * n_modes * n_fractions
    arch = next(iter(MODELS.values())).card.arch
    cost = attr.retrain_cost(config, n_train, runs, sel.device, arch)
    cols[2].caption(
        f"**{runs} trainings from scratch** ({n_models} model(s) × {n_modes} curve(s) × {n_fractions} fractions), "
        f"{epochs} epoch(s) on {n_train} training images each (standard training, AdamW) on {sel.device}: "
        f"{cost.describe()}, plus masking the training images. "
        "The curves without retraining are drawn too, for comparison."
    )
    return {"epochs": epochs, "n_train": int(n_train)}


def curve_requests(modes, method, replacement, n, fractions, retrain: dict | None) -> list[SaliencyCurvesRequest]:
    """The stored-analysis requests of the curves on the sidebar's models: the plain curves, and
    with ``retrain`` their KAR/ROAR twins (one request each, so the plain ones are shared)."""
    plain = SaliencyCurvesRequest(
        models=tuple(ModelRef.from_loaded(m) for m in MODELS.values()), dataset=sel.dataset,
        modes=tuple(m for m in attr.MODES if m in modes), method=method, fractions=tuple(sorted(fractions)),
        replacement=replacement, n=int(n))
    if retrain is None:
        return [plain]
    return [plain, dataclasses.replace(plain, retrain=True, retrain_epochs=retrain["epochs"],
                                       retrain_n=retrain["n_train"]).validate()]


def curves_frame(results: list) -> pd.DataFrame:
    """One table row per curve point of every result (the chart's and the CSV's data); the
    sidebar's models named by their titles."""
    rows = []
    for result in results:
        names = {stored: model_title(slot) for stored, slot in shown_names(result).items()}
        rows += stored_curves.rows(result, names=names)
    return pd.DataFrame(rows)


def compute_curves(modes, method, replacement, n, fractions, retrain: dict | None, mode: str, where) -> list | None:
    """The curves of the settings: stored, computed here (a Stop button in ``where`` while they
    run) or queued as background jobs (then None), as the run picker's ``mode`` says."""
    requests = curve_requests(modes, method, replacement, n, fractions, retrain)
    labels = ["keep/remove curves", "KAR/ROAR curves (retraining)"][: len(requests)]
    loaded = list(MODELS.values())
    with common.stop_button(where, "curve_stop"):
        return analysis_ui.run_or_queue_all(requests, [loaded] * len(requests), mode, labels, sel.device)


def linked_curves() -> list | None:
    """The curves the URL names (a finished ``?job=``, progress while it runs, or a ``?result=``
    permalink); None when it names another view."""
    if URL_KIND != CURVES:
        return None
    return analysis_ui.job_statuses(CURVES) or analysis_ui.permalinked_all(CURVES) or None


def show_curves(results: list) -> None:
    """Curves of stored (or just computed) results: remembered for this session, put in the URL."""
    if not shown_names(results[0]):
        st.info("These curves are for " + ", ".join(f"`{ref.name}`" for ref in results[0].request.models)
                + (", not the sidebar's models." if MODELS else "."))
    st.session_state["curve_frame"] = curves_frame(results)
    analysis_ui.show_permalink(*results)


def curves_section() -> None:
    st.subheader("Keep / remove curves")
    st.caption(
        "Accuracy when only the top-attributed pixels are kept (the rest replaced), or when they are "
        "removed. Each model ranks pixels by its own map for the true label. A fast drop when removing "
        "means the map found the evidence the model uses. Without retraining the masked images are also "
        "unusual for the model; retraining a fresh model on masked training images at each fraction "
        "(KAR/ROAR, Hooker et al. 2019) separates the two."
    )
    cols = st.columns(4)
    modes = cols[0].multiselect("Curves", list(attr.MODES), default=list(attr.MODES), key="curve_modes")
    method = cols[1].selectbox("Ranking method", list(attr.METHODS), format_func=lambda m: attr.METHODS[m].label,
                               key="curve_method")
    replacement = cols[2].selectbox("Replace pixels by", list(attr.REPLACEMENTS), key="curve_fill",
                                    help="mean: each image's mean colour; blur: a Gaussian-blurred copy")
    n = cols[3].select_slider("Images", [16, 32, 64, 128, 256], value=32, key="curve_n")
    fractions = st.multiselect("Fractions of pixels", list(attr.DEFAULT_FRACTIONS), default=list(attr.DEFAULT_FRACTIONS),
                               format_func=lambda f: f"{f:.0%}", key="curve_fractions")
    try:
        retrain = retrain_options(len(MODELS), len(modes), len(fractions))
    except RobustScopeError as exc:
        common.show_error(exc)
        return
    run_cols = st.columns([1, 1, 4])
    mode = analysis_ui.mode_picker(run_cols[2], "curve_mode")
    found = None
    if run_cols[0].button("Compute curves", type="primary", key="curve_run") and modes and fractions:
        try:
            found = compute_curves(modes, method, replacement, n, fractions, retrain, mode, run_cols[1])
        except RobustScopeError as exc:
            common.show_error(exc)
    found = found or linked_curves()
    if found:
        show_curves(found)
    elif analysis_ui.job_pending(CURVES):
        st.caption("The curves show here when the background job is done.")
    frame = st.session_state.get("curve_frame")
    if frame is not None and len(frame):
        st.plotly_chart(curves_figure(frame), key="curve_chart")
        st.download_button("Download curves (CSV)", frame.to_csv(index=False), file_name="keep_remove_curves.csv",
                           mime="text/csv", key="curve_csv")


def epsilon_candidates(dataset: str) -> list:
    """Listed checkpoints on ``dataset`` whose card records a training ε."""
    return [i for i in common.checkpoint_listing()
            if not getattr(i, "error", None) and i.card is not None and i.card.dataset == dataset
            and attr.training_epsilon(i.card) is not None]


def tradeoff_series(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame, str]]:
    """``(legend name, rows, plotly mode)`` of the alignment plot: one line per threat model
    (ℓ∞, ℓ₂), each starting from the standard models at ε = 0; clean models trained another way
    (AdvProp: adversarial examples only through its auxiliary BN) as separate markers at ε = 0,
    never on a robust line."""
    standard = frame[frame["method"] == "standard"]
    robust = frame[frame["norm"] != ""]
    other_clean = frame[(frame["norm"] == "") & (frame["method"] != "standard")]
    series = []
    for norm, part in robust.groupby("norm", sort=True):
        label = {"linf": "ℓ∞", "l2": "ℓ₂"}.get(norm, norm)
        series.append((f"alignment ({label})", pd.concat([standard, part]).sort_values("epsilon"), "markers+lines"))
    if robust.empty and not standard.empty:
        series.append(("alignment (standard)", standard, "markers"))
    for method, part in other_clean.groupby("method", sort=True):
        label = {"advprop": "AdvProp"}.get(method, method)
        series.append((f"alignment ({label}, a clean model)", part, "markers"))
    return series


def tradeoff_figure(frame: pd.DataFrame) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("gradient alignment with the object", "clean accuracy"))
    text = frame["name"]
    for name, part, mode in tradeoff_series(frame):
        fig.add_trace(go.Scatter(x=part["epsilon"], y=part["alignment"], mode=mode, text=part["name"],
                                 error_y={"array": part["alignment_std"]}, name=name),
                      row=1, col=1)
    fig.add_trace(go.Scatter(x=frame["epsilon"], y=frame["chance"], mode="lines", name="chance (mask area)",
                             line={"dash": "dot"}), row=1, col=1)
    fig.add_trace(go.Scatter(x=frame["epsilon"], y=frame["clean_accuracy"], mode="markers+lines", text=text,
                             name="clean accuracy"), row=1, col=2)
    fig.update_xaxes(title_text="training ε")
    fig.update_yaxes(range=[0, 1.02])
    fig.update_layout(height=380, margin={"t": 40})
    return fig


def tradeoff_request(chosen: list, dataset: str, method: str, n: int):
    """The chosen checkpoints (loaded) of one input shape, and their stored-analysis request; a
    warning names the ones skipped for another input shape."""
    loaded = [common.load_checkpoint(p, sel.device) for p in chosen]
    size = tuple(loaded[0].card.input_shape)
    same = [c for c in loaded if tuple(c.card.input_shape) == size]
    if len(same) < len(loaded):
        st.warning(f"Skipped {len(loaded) - len(same)} checkpoint(s) whose input shape differs from {size}.")
    request = TradeoffRequest(models=tuple(ModelRef.from_loaded(c) for c in same), dataset=dataset, n=int(n),
                              method=method)
    return same, request


def linked_tradeoff():
    """The trade-off the URL names (a finished ``?job=``, progress while it runs, or a ``?result=``
    permalink); None when it names another view."""
    if URL_KIND != TRADEOFF:
        return None
    return analysis_ui.job_status(TRADEOFF) or analysis_ui.permalinked(TRADEOFF)


def show_tradeoff(result) -> None:
    """A stored (or just computed) trade-off: remembered for this session, put in the URL."""
    st.session_state["eps_frame"] = pd.DataFrame(stored_tradeoff.rows(result))
    analysis_ui.show_permalink(result)


def tradeoff_controls():
    """The dataset, checkpoints and method pickers; the result of **Measure** (stored, computed
    here, or None when queued, not clicked or nothing to measure)."""
    options = list(attr.ALIGNMENT_DATASETS)
    dataset = st.selectbox("Dataset", options, key="eps_dataset",
                           index=options.index(sel.dataset) if sel.dataset in options else 0)
    infos = epsilon_candidates(dataset)
    if not infos:
        st.info(f"No `{dataset}` checkpoints with a training ε in their model cards yet. Train a few at "
                "different ε on the **Training** page (or `python -m engine train`) to fill this view.")
        return None
    labels = {str(i.path): f"{i.name} ({selection.describe_recipe(i.card)})" for i in infos}
    chosen = st.multiselect("Checkpoints", list(labels), default=list(labels)[:8], format_func=labels.get,
                            key=f"eps_ckpts_{dataset}")
    cols = st.columns([1, 1, 1, 3])
    method = cols[0].selectbox("Method", list(attr.METHODS), format_func=lambda m: attr.METHODS[m].label,
                               key="eps_method")
    n = cols[1].select_slider("Images", [16, 32, 64, 128, 256], value=32, key="eps_n")
    mode = analysis_ui.mode_picker(cols[3], "eps_mode")
    if not (cols[2].button("Measure", type="primary", key="eps_run") and chosen):
        return None
    try:
        loaded, request = tradeoff_request(chosen, dataset, method, n)
        return analysis_ui.run_or_queue(request, loaded, mode, "checkpoints", sel.device)
    except RobustScopeError as exc:
        common.show_error(exc)
        return None


def tradeoff_section() -> None:
    st.subheader("ε vs interpretability")
    st.caption(
        "Across checkpoints trained at several ε: the share of attribution mass inside the object "
        "(alignment; exact masks on `shapes`, the non-zero pixels on MNIST and Fashion-MNIST) and clean "
        "accuracy. Kim & Seo 2019 find alignment rising and accuracy falling with ε."
    )
    found = tradeoff_controls() or linked_tradeoff()
    if found is not None:
        show_tradeoff(found)
    elif analysis_ui.job_pending(TRADEOFF):
        st.caption("The trade-off shows here when the background job is done.")
    show_tradeoff_frame(st.session_state.get("eps_frame"))


def show_tradeoff_frame(frame) -> None:
    """The trade-off's plot, table and CSV (nothing before a first measurement)."""
    if frame is not None and len(frame):
        st.plotly_chart(tradeoff_figure(frame), key="eps_chart")
        st.dataframe(frame.drop(columns=["path"]), hide_index=True)
        st.download_button("Download (CSV)", frame.to_csv(index=False), file_name="epsilon_interpretability.csv",
                           mime="text/csv", key="eps_csv")


def stored_view_only() -> bool:
    """Without models: the view the URL names (grid, curves or trade-off) from the result store;
    False when it names none that can be shown."""
    if URL_KIND == CURVES:
        found = linked_curves()
        if found:
            st.subheader("Keep / remove curves")
            st.markdown(f"**Stored curves** · {found[0].request.describe()}")
            show_curves(found)
            st.plotly_chart(curves_figure(st.session_state["curve_frame"]), key="curve_chart")
        return bool(found)
    if URL_KIND == TRADEOFF:
        found = linked_tradeoff()
        if found is not None:
            st.subheader("ε vs interpretability")
            st.markdown(f"**Stored trade-off** · {found.request.describe()}")
            show_tradeoff(found)
            show_tradeoff_frame(st.session_state["eps_frame"])
        return found is not None
    opened = url_grid()
    if opened is not None:
        stored_view(opened)
    return opened is not None


if not MODELS:  # a stored view (permalink, finished job) opens without models
    if stored_view_only():
        st.stop()
    common.require_models(sel, both=False)
common.require_compatible(sel, MODELS)
maps_section()
st.divider()
curves_section()
st.divider()
tradeoff_section()
