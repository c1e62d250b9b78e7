"""Saliency page part: the ε-vs-interpretability trade-off — across checkpoints trained at several
ε, the share of attribution mass inside the object (alignment) and clean accuracy, which Kim & Seo
2019 (*Bridging Adversarial Robustness and Gradient Interpretability*) find rising and falling with
ε. Rendering only; the numbers come from one ``engine.analysis`` request
(:class:`~engine.analysis.kinds.tradeoff.TradeoffRequest`), run on **Measure** here or in the
background as the run picker says, followed with ``?job=<id>`` and reopened from ``?result=<key>``
(also without models chosen in the sidebar)."""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from engine import attribution as attr
from engine import selection
from engine.analysis import ModelRef
from engine.analysis.kinds import tradeoff as stored_tradeoff
from engine.analysis.kinds.tradeoff import TradeoffRequest
from engine.catalogue import norm_symbol
from engine.errors import RobustScopeError
from pages import analysis_ui, common

KIND = TradeoffRequest.kind
TITLE = "ε vs interpretability"


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
        label = norm_symbol(norm)
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


def tradeoff_request(chosen: list, dataset: str, method: str, n: int, device: str):
    """The chosen checkpoints (loaded) of one input shape, and their stored-analysis request; a
    warning names the ones skipped for another input shape."""
    loaded = [common.load_checkpoint(p, device) for p in chosen]
    size = tuple(loaded[0].card.input_shape)
    same = [c for c in loaded if tuple(c.card.input_shape) == size]
    if len(same) < len(loaded):
        st.warning(f"Skipped {len(loaded) - len(same)} checkpoint(s) whose input shape differs from {size}.")
    request = TradeoffRequest(models=tuple(ModelRef.from_loaded(c) for c in same), dataset=dataset, n=int(n),
                              method=method)
    return same, request


def linked_tradeoff(page):
    """The trade-off the URL names (a finished ``?job=``, progress while it runs, or a ``?result=``
    permalink); None when it names another view."""
    if page.url_kind != KIND:
        return None
    return analysis_ui.job_status(KIND) or analysis_ui.permalinked(KIND)


def show_tradeoff(result) -> None:
    """A stored (or just computed) trade-off: remembered for this session, put in the URL."""
    st.session_state["eps_frame"] = pd.DataFrame(stored_tradeoff.rows(result))
    analysis_ui.show_permalink(result)


def tradeoff_controls(sel):
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
        loaded, request = tradeoff_request(chosen, dataset, method, n, sel.device)
        return analysis_ui.run_or_queue(request, loaded, mode, "checkpoints", sel.device)
    except RobustScopeError as exc:
        common.show_error(exc)
        return None


def show_tradeoff_frame(frame) -> None:
    """The trade-off's plot, table and CSV (nothing before a first measurement)."""
    if frame is not None and len(frame):
        st.plotly_chart(tradeoff_figure(frame), key="eps_chart")
        st.dataframe(frame.drop(columns=["path"]), hide_index=True)
        st.download_button("Download (CSV)", frame.to_csv(index=False), file_name="epsilon_interpretability.csv",
                           mime="text/csv", key="eps_csv")


def render_stored(page) -> bool:
    """Without models: the trade-off the URL names, from the result store; False when there is none."""
    found = linked_tradeoff(page)
    if found is not None:
        st.subheader(TITLE)
        st.markdown(f"**Stored trade-off** · {found.request.describe()}")
        show_tradeoff(found)
        show_tradeoff_frame(st.session_state["eps_frame"])
    return found is not None


def render(page) -> None:
    """The trade-off's pickers and **Measure**, then the plot, table and CSV of the trade-off
    measured, queued and finished, or named by the URL."""
    st.subheader(TITLE)
    st.caption(
        "Across checkpoints trained at several ε: the share of attribution mass inside the object "
        "(alignment; exact masks on `shapes`, the non-zero pixels on MNIST and Fashion-MNIST) and clean "
        "accuracy. Kim & Seo 2019 find alignment rising and accuracy falling with ε."
    )
    found = tradeoff_controls(page.sel) or linked_tradeoff(page)
    if found is not None:
        show_tradeoff(found)
    elif analysis_ui.job_pending(KIND):
        st.caption("The trade-off shows here when the background job is done.")
    show_tradeoff_frame(st.session_state.get("eps_frame"))
