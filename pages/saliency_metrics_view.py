"""Saliency page part: explanation-quality metrics — how good each attribution method's maps are for
models A and B, by randomisation (Adebayo et al. 2018), faithfulness (ROAD, Rong et al. 2022; pixel
flipping, Bach et al. 2015), localisation on the dataset's foreground masks (pointing game, Zhang et
al. 2018; relevance mass, Arras et al. 2022) and robustness (max-/average-sensitivity, Yeh et al.
2019). Rendering only; the numbers come from one ``engine.analysis`` request
(:class:`~engine.analysis.kinds.saliency_metrics.SaliencyMetricsRequest`), run on **Compute
metrics** here or in the background as the run picker says, followed with ``?job=<id>`` and
reopened from ``?result=<key>`` (also without models chosen in the sidebar)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine import attribution as attr
from engine.analysis import ModelRef
from engine.analysis.kinds import saliency_metrics as stored_metrics
from engine.analysis.kinds.saliency_metrics import LOCALISATION, METRICS, SCORES, SaliencyMetricsRequest, expand_metrics
from engine.errors import RobustScopeError
from pages import analysis_ui, common

KIND = SaliencyMetricsRequest.kind
TITLE = "Explanation metrics"
FRAME = "metrics_frame"  # session: the table shown (A and B side by side)
NOTES = "metrics_notes"  # session: the scores shown and the methods a model refused


@st.cache_data(show_spinner=False, max_entries=16)
def has_masks(dataset: str) -> bool:
    """Whether ``dataset``'s test images come with foreground masks (the localisation metrics)."""
    from engine import data as edata
    from engine.attribution.metrics import dataset_masks

    try:
        return dataset_masks(edata.load_dataset(dataset, split="test"), [0]) is not None
    except RobustScopeError:
        return False


def metrics_table(page, result) -> pd.DataFrame:
    """One row per method and score, the models' means side by side (the sidebar's models named by
    their titles), with the direction that is better."""
    names = {stored: page.model_title(slot) for stored, slot in page.shown_names(result).items()}
    long = pd.DataFrame(stored_metrics.rows(result, names=names))
    if long.empty:
        return long
    long["method"] = long["method"].map(lambda m: attr.METHODS[m].label if m in attr.METHODS else m)
    index = ["method", "label", "better"]
    order = list(dict.fromkeys(zip(*(long[c] for c in index))))
    wide = long.pivot(index=index, columns="model", values="mean")
    wide = wide.reindex(index=pd.MultiIndex.from_tuples(order, names=index),
                        columns=list(dict.fromkeys(long["model"]))).reset_index()
    return wide.rename(columns={"label": "metric"})


def metrics_request(page, metrics: list, methods: list, n: int, options: dict) -> SaliencyMetricsRequest:
    """The stored-analysis request of the chosen metrics and methods on the sidebar's models."""
    return SaliencyMetricsRequest(
        models=tuple(ModelRef.from_loaded(m) for m in page.models.values()), dataset=page.sel.dataset,
        metrics=expand_metrics(metrics), methods=tuple(methods), n=int(n), **options)


def options_widgets() -> dict:
    """The metrics' main parameters (ROAD's noise, pixel flipping's steps, the sensitivity's
    radius and samples), in an expander."""
    with st.expander("Parameters"):
        cols = st.columns(4)
        return {
            "road_noise": float(cols[0].number_input("ROAD imputation noise", 0.0, 1.0, 0.01, step=0.01,
                                                     key="metrics_road_noise")),
            "flip_steps": int(cols[1].number_input("Pixel-flipping steps", 1, 1000, 50, key="metrics_flip_steps")),
            "radius": float(cols[2].number_input("Sensitivity radius (ℓ∞)", 0.001, 1.0, 0.05, step=0.01,
                                                 key="metrics_radius")),
            "samples": int(cols[3].number_input("Sensitivity samples", 1, 100, 10, key="metrics_samples")),
        }


def linked_metrics(page):
    """The metrics the URL names (a finished ``?job=``, progress while it runs, or a ``?result=``
    permalink); None when it names another view."""
    if page.url_kind != KIND:
        return None
    return analysis_ui.job_status(KIND) or analysis_ui.permalinked(KIND)


def show_metrics(page, result) -> None:
    """Metrics of a stored (or just computed) result: remembered for this session, put in the URL."""
    if not page.shown_names(result):
        st.info("These metrics are for " + ", ".join(f"`{ref.name}`" for ref in result.request.models)
                + (", not the sidebar's models." if page.models else "."))
    st.session_state[FRAME] = metrics_table(page, result)
    st.session_state[NOTES] = {"scores": [s for m in result.request.metrics for s in METRICS[m][1]],
                               "errors": list(result.meta["errors"])}
    analysis_ui.show_permalink(result)


def show_table() -> None:
    """The table remembered for this session, its CSV, what each score means and which methods a
    model refused."""
    notes = st.session_state.get(NOTES, {})
    for error in notes.get("errors", []):
        st.warning(f"{error['model']} · {error['method']}: {error['error']}")
    frame = st.session_state.get(FRAME)
    if frame is None or not len(frame):
        return
    st.dataframe(frame, hide_index=True)
    st.download_button("Download metrics (CSV)", frame.to_csv(index=False), file_name="explanation_metrics.csv",
                       mime="text/csv", key="metrics_csv")
    with st.expander("What the metrics mean"):
        st.markdown("\n".join(f"- **{SCORES[s].label}** ({SCORES[s].better} is better): {SCORES[s].explanation}"
                              for s in notes.get("scores", [])))


def render_stored(page) -> bool:
    """Without models: the metrics the URL names, from the result store; False when there are none."""
    found = linked_metrics(page)
    if found:
        st.subheader(TITLE)
        st.markdown(f"**Stored metrics** · {found.request.describe()}")
        show_metrics(page, found)
        show_table()
    return bool(found)


def render(page) -> None:
    """The metrics' settings and **Compute metrics**, then the table of the metrics computed, queued
    and finished, or named by the URL."""
    st.subheader(TITLE)
    st.caption(
        "How good is each method's map, for each model? Each map explains the true label; every metric says "
        "below whether higher or lower is better. Localisation needs the objects' foreground masks, which the "
        "synthetic `shapes` dataset has. Kim & Seo 2019 predict that robust models' gradients localise better."
    )
    masks = has_masks(page.sel.dataset)
    offered = [m for m in METRICS if masks or m not in LOCALISATION]
    if not masks:
        st.caption(f"`{page.sel.dataset}` has no foreground masks: the localisation metrics are not offered.")
    cols = st.columns([3, 2, 1])
    metrics = cols[0].multiselect("Metrics", offered, default=offered, key="metrics_names")
    methods = cols[1].multiselect("Methods", list(attr.METHODS), default=["saliency"], key="metrics_methods",
                                  format_func=lambda m: attr.METHODS[m].label)
    n = common.image_slider(cols[2], "Images", page.sel.dataset, [16, 32, 64, 128, 200], 32, key="metrics_n")
    options = options_widgets()
    run_cols = st.columns([1, 1, 4])
    mode = analysis_ui.mode_picker(run_cols[2], "metrics_mode")
    found = None
    if run_cols[0].button("Compute metrics", type="primary", key="metrics_run") and metrics and methods:
        try:
            request = metrics_request(page, metrics, methods, n, options)
            with common.stop_button(run_cols[1], "metrics_stop"):
                found = analysis_ui.run_or_queue(request, list(page.models.values()), mode, "explanation metrics",
                                                 page.sel.device)
        except RobustScopeError as exc:
            common.show_error(exc)
    found = found or linked_metrics(page)
    if found:
        show_metrics(page, found)
    elif analysis_ui.job_pending(KIND):
        st.caption("The metrics show here when the background job is done.")
    show_table()
