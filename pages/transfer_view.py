"""Attack Lab part: the transfer matrix — examples crafted on A and on B, each evaluated on both
models: accuracy or fooling rate, white-box on the diagonal, transfer off it (Szegedy et al. 2013,
*Intriguing properties of neural networks*). Rendering only; the numbers come from one
``engine.analysis`` request (:class:`~engine.analysis.kinds.transfer.TransferRequest`, the same as
``python -m engine transfer``), run here or as a background job (measured estimate), followed with
``?job=<id>`` and reopened from ``?result=<key>``."""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from engine.analysis.kinds._attacklab import attack_params
from engine.analysis.kinds.transfer import TransferRequest
from engine.errors import RobustScopeError
from pages import analysis_ui, common

KIND = TransferRequest.kind


def render(page, name: str, params: dict):
    """The transfer matrix of attack ``name`` with ``params`` (here or in the background): its
    stored result or None."""
    with st.expander("Transfer: crafted on A / B, evaluated on A / B", expanded=KIND in page.linked):
        st.caption("Rows: the model the examples were crafted on; columns: the model evaluated. The diagonal is "
                   "white-box; off-diagonal cells show how well examples transfer (Szegedy et al. 2013).")
        cols = st.columns([1, 1, 1, 3])
        n = common.image_slider(cols[0], "Images", page.sel.dataset, page.SIZES, 64, key="atk_transfer_n")
        mode = analysis_ui.mode_picker(cols[3], "atk_transfer_mode")
        shown = page.shown(KIND, "atk_transfer_result")
        if cols[1].button("Run transfer", type="primary", key="atk_transfer_run"):
            try:
                request = TransferRequest(models=page.model_refs(), dataset=page.sel.dataset, attack=name,
                                          params=attack_params(params), n=int(n))
                with common.stop_button(cols[2], "atk_transfer_stop"):
                    shown = analysis_ui.run_or_queue(request, list(page.models.values()), mode, "transfer",
                                                     page.sel.device)
            except RobustScopeError as exc:
                common.show_error(exc)
        if shown is not None:
            show_transfer(page, shown)
    return shown


def show_transfer(page, shown) -> None:
    """The transfer heatmap (accuracy or fooling rate) and CSV of a stored ``transfer`` result."""
    st.session_state["atk_transfer_result"] = shown
    res = shown.value()
    st.session_state["atk_transfer"] = res
    titles = [page.slot_title(shown.request, slot) for slot in res.names]
    metric = st.radio("Show", ["accuracy", "fooling rate"], horizontal=True, key="atk_transfer_metric")
    z = np.asarray(res.accuracy if metric == "accuracy" else res.fooling)
    fig = go.Figure(go.Heatmap(z=z, x=[f"evaluated on {s}" for s in titles],
                               y=[f"crafted on {s}" for s in titles], zmin=0, zmax=1,
                               colorscale="Viridis", text=np.round(z, 3), texttemplate="%{text}"))
    fig.update_layout(height=340, margin={"t": 30}, yaxis_autorange="reversed")
    st.plotly_chart(fig, key="atk_transfer_chart")
    frame = pd.DataFrame([{"crafted_on": src, "evaluated_on": dst, "accuracy": res.accuracy[i][j],
                           "fooling_rate": res.fooling[i][j], "n": res.n}
                          for i, src in enumerate(res.names) for j, dst in enumerate(res.names)])
    st.download_button("Transfer (CSV)", frame.to_csv(index=False), file_name="transfer_matrix.csv",
                       mime="text/csv", key="atk_transfer_csv")


def render_stored(page, result) -> None:
    """A permalinked transfer matrix, shown without models A and B (nothing to run)."""
    st.subheader("Transfer: crafted on / evaluated on")
    show_transfer(page, result)
