"""Saliency page part: the keep/remove curves — accuracy when only the top-attributed pixels of
each model's own map are kept, or when they are removed — optionally with a fresh model retrained on
masked training images at each fraction (KAR/ROAR, Hooker et al. 2019, *A Benchmark for
Interpretability Methods in Deep Neural Networks*). Rendering only; the numbers come from
``engine.analysis`` requests (:class:`~engine.analysis.kinds.curves.SaliencyCurvesRequest`: one for
the plain curves, one more for KAR/ROAR), run on a button here or in the background as the run
picker says, followed with ``?job=<id>`` and reopened from ``?result=<key>[,<key>]``."""
from __future__ import annotations

import dataclasses

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine import attribution as attr
from engine.analysis import ModelRef
from engine.analysis.kinds import curves as stored_curves
from engine.analysis.kinds.curves import SaliencyCurvesRequest
from engine.errors import RobustScopeError
from pages import analysis_ui, common

KIND = SaliencyCurvesRequest.kind
TITLE = "Keep / remove curves"
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


def retrain_options(page, n_models: int, n_modes: int, n_fractions: int) -> dict | None:
    """The opt-in KAR/ROAR controls and a cost hint: ``{"epochs", "n_train"}``, or ``None`` when
    retraining is off."""
    if not st.checkbox("Retrain at each fraction (KAR/ROAR, slow)", key="curve_retrain",
                       help="Hooker et al. 2019: at each fraction, train a fresh model of the same architecture "
                            "on training images masked the same way, and evaluate that model instead"):
        return None
    sel = page.sel
    cols = st.columns([1, 1, 3])
    epochs = int(cols[0].number_input("Retrain epochs", 1, 50, 4, key="curve_retrain_epochs"))
    n_train = cols[1].select_slider("Training images", RETRAIN_SIZES, value=2048, key="curve_retrain_n")
    config = attr.retrain_config(sel.dataset, epochs=epochs)
    runs = n_models * n_modes * n_fractions
    arch = next(iter(page.models.values())).card.arch
    cost = attr.retrain_cost(config, n_train, runs, sel.device, arch)
    cols[2].caption(
        f"**{runs} trainings from scratch** ({n_models} model(s) × {n_modes} curve(s) × {n_fractions} fractions), "
        f"{epochs} epoch(s) on {n_train} training images each (standard training, AdamW) on {sel.device}: "
        f"{cost.describe()}, plus masking the training images. "
        "The curves without retraining are drawn too, for comparison."
    )
    return {"epochs": epochs, "n_train": int(n_train)}


def curve_requests(page, modes, method, replacement, n, fractions, retrain: dict | None) -> list[SaliencyCurvesRequest]:
    """The stored-analysis requests of the curves on the sidebar's models: the plain curves, and
    with ``retrain`` their KAR/ROAR twins (one request each, so the plain ones are shared)."""
    plain = SaliencyCurvesRequest(
        models=tuple(ModelRef.from_loaded(m) for m in page.models.values()), dataset=page.sel.dataset,
        modes=tuple(m for m in attr.MODES if m in modes), method=method, fractions=tuple(sorted(fractions)),
        replacement=replacement, n=int(n))
    if retrain is None:
        return [plain]
    return [plain, dataclasses.replace(plain, retrain=True, retrain_epochs=retrain["epochs"],
                                       retrain_n=retrain["n_train"])]


def curves_frame(page, results: list) -> pd.DataFrame:
    """One table row per curve point of every result (the chart's and the CSV's data); the
    sidebar's models named by their titles."""
    rows = []
    for result in results:
        names = {stored: page.model_title(slot) for stored, slot in page.shown_names(result).items()}
        rows += stored_curves.rows(result, names=names)
    return pd.DataFrame(rows)


def compute_curves(page, modes, method, replacement, n, fractions, retrain: dict | None, mode: str,
                   where) -> list | None:
    """The curves of the settings: stored, computed here (a Stop button in ``where`` while they
    run) or queued as background jobs (then None), as the run picker's ``mode`` says."""
    requests = curve_requests(page, modes, method, replacement, n, fractions, retrain)
    labels = ["keep/remove curves", "KAR/ROAR curves (retraining)"][: len(requests)]
    loaded = list(page.models.values())
    with common.stop_button(where, "curve_stop"):
        return analysis_ui.run_or_queue_all(requests, [loaded] * len(requests), mode, labels, page.sel.device)


def linked_curves(page) -> list | None:
    """The curves the URL names (a finished ``?job=``, progress while it runs, or a ``?result=``
    permalink); None when it names another view."""
    if page.url_kind != KIND:
        return None
    return analysis_ui.job_statuses(KIND) or analysis_ui.permalinked_all(KIND) or None


def show_curves(page, results: list) -> None:
    """Curves of stored (or just computed) results: remembered for this session, put in the URL."""
    if not page.shown_names(results[0]):
        st.info("These curves are for " + ", ".join(f"`{ref.name}`" for ref in results[0].request.models)
                + (", not the sidebar's models." if page.models else "."))
    st.session_state["curve_frame"] = curves_frame(page, results)
    analysis_ui.show_permalink(*results)


def render_stored(page) -> bool:
    """Without models: the curves the URL names, from the result store; False when there are none."""
    found = linked_curves(page)
    if found:
        st.subheader(TITLE)
        st.markdown(f"**Stored curves** · {found[0].request.describe()}")
        show_curves(page, found)
        st.plotly_chart(curves_figure(st.session_state["curve_frame"]), key="curve_chart")
    return bool(found)


def render(page) -> None:
    """The curves' settings and **Compute curves**, then the chart and CSV of the curves computed,
    queued and finished, or named by the URL."""
    st.subheader(TITLE)
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
    n = common.image_slider(cols[3], "Images", page.sel.dataset, [16, 32, 64, 128, 256], 32, key="curve_n")
    fractions = st.multiselect("Fractions of pixels", list(attr.DEFAULT_FRACTIONS), default=list(attr.DEFAULT_FRACTIONS),
                               format_func=lambda f: f"{f:.0%}", key="curve_fractions")
    try:
        retrain = retrain_options(page, len(page.models), len(modes), len(fractions))
    except RobustScopeError as exc:
        common.show_error(exc)
        return
    run_cols = st.columns([1, 1, 4])
    mode = analysis_ui.mode_picker(run_cols[2], "curve_mode")
    found = None
    if run_cols[0].button("Compute curves", type="primary", key="curve_run") and modes and fractions:
        try:
            found = compute_curves(page, modes, method, replacement, n, fractions, retrain, mode, run_cols[1])
        except RobustScopeError as exc:
            common.show_error(exc)
    found = found or linked_curves(page)
    if found:
        show_curves(page, found)
    elif analysis_ui.job_pending(KIND):
        st.caption("The curves show here when the background job is done.")
    frame = st.session_state.get("curve_frame")
    if frame is not None and len(frame):
        st.plotly_chart(curves_figure(frame), key="curve_chart")
        st.download_button("Download curves (CSV)", frame.to_csv(index=False), file_name="keep_remove_curves.csv",
                           mime="text/csv", key="curve_csv")
