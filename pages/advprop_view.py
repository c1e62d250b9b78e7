"""Models page part: an AdvProp model's two BatchNorm branches beside the standard and PGD-AT
models of its dataset (clean, PGD and distorted accuracy; Xie et al. 2019). Rendering only; the
numbers come from ``engine.generalisation.advprop``."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from engine.attacks import make_attack
from engine.errors import RobustScopeError
from engine.generalisation.advprop import compare_branches, comparison_entries
from pages import common


def show_advprop_comparison(infos: list, device: str) -> None:
    """The section (only when the listing holds an AdvProp checkpoint)."""
    advprop = [i for i in infos if i.card is not None and i.card.dual_bn and not i.error]
    if not advprop:
        return
    st.subheader("AdvProp: both BatchNorm branches")
    st.caption("AdvProp normalises clean images with the main BatchNorm and adversarial ones with an auxiliary "
               "BatchNorm. Compare both branches with the standard and PGD-AT models of the same dataset: "
               "clean, PGD and mean accuracy over the distortions at severity 3, on the same test images.")
    with st.form("advprop_form"):
        c1, c2, c3 = st.columns(3)
        choice = c1.selectbox("AdvProp checkpoint", [str(i.path) for i in advprop],
                              format_func=lambda p: next(i.name for i in advprop if str(i.path) == p))
        n = c2.number_input("Test images", min_value=16, max_value=10000, value=200, step=100, key="advprop_n")
        steps = c3.number_input("PGD steps", min_value=1, max_value=200, value=10, key="advprop_steps")
        go_button = st.form_submit_button("Compare branches")
    if go_button:
        try:
            entries = comparison_entries(infos, choice)
            dataset = next(i.card.dataset for i in advprop if str(i.path) == choice)
            models = {e.label: common.load_checkpoint(e.path, device, e.branch).model for e in entries}
            images, labels = common.dataset_sample(dataset, int(n))
            progress, finish = common.progress_callback("Evaluating…")
            with common.stop_button(st, "advprop_stop"):
                table = compare_branches(models, images, labels, make_attack("pgd", dataset, steps=int(steps)),
                                         progress=progress)
            finish()
            st.session_state["advprop_table"] = table
        except RobustScopeError as exc:
            common.show_error(exc)
            return
    table = st.session_state.get("advprop_table")
    if isinstance(table, pd.DataFrame):
        st.dataframe(table.drop(columns=["distortions"]), hide_index=True)
        st.download_button("Download CSV", table.to_csv(index=False), "advprop_branches.csv", "text/csv")
