"""View of a stored layer-activation-statistics result (``engine.analysis.kinds.activations``):
per model and layer, the mean activation, the mean |activation| and the share of positive entries,
as a table and one line chart per statistic (models side by side). Rendered by the Results page;
``/results?result=<key>`` is its permalink."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from engine.analysis.kinds.activations import STATISTICS, rows

LABELS = {"mean": "mean activation", "mean_abs": "mean |activation|", "positive_share": "share of positive entries"}


def render(result) -> None:
    """The table and the charts of ``result`` (a ``layer_activations`` result)."""
    table = pd.DataFrame(rows(result))
    st.subheader("Layer activation statistics")
    st.caption(f"{result.request.n} {result.request.dataset} test images per model; layers in network order.")
    for statistic in STATISTICS:
        figure = px.line(table, x="layer", y=statistic, color="model", markers=True,
                         labels={statistic: LABELS[statistic], "layer": "layer"})
        st.plotly_chart(figure, key=f"activations_{statistic}")
    st.dataframe(table.rename(columns=LABELS), hide_index=True, width="stretch")
    st.download_button("Download (CSV)", table.to_csv(index=False), f"activations-{result.key}.csv", "text/csv",
                       key="activations_csv")
