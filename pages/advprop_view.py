"""Models page part: an AdvProp model's two BatchNorm branches beside the standard and PGD-AT models
of its dataset (clean, PGD and distorted accuracy; Xie et al. 2019). Rendering only; the numbers
come from one ``engine.analysis`` request (:class:`~engine.analysis.AdvPropRequest`): a stored result
at once, else computed here or as a background job (measured estimate), reopened from
``?result=<key>``."""
from __future__ import annotations

import streamlit as st

from engine.analysis.kinds.advprop import AdvPropRequest
from engine.analysis.kinds.advprop import advprop_request, branches
from engine.errors import RobustScopeError
from pages import analysis_ui, common

KIND = AdvPropRequest.kind


def show_advprop_comparison(infos: list, device: str) -> None:
    """The section: its form when the listing holds an AdvProp checkpoint, and the comparison the
    form computed, a background job finished or the URL (``?result=<key>``) names."""
    advprop = [i for i in infos if i.card is not None and i.card.dual_bn and not i.error]
    linked = analysis_ui.linked(KIND)
    if not advprop and linked is None:
        return
    st.subheader("AdvProp: both BatchNorm branches")
    st.caption("AdvProp normalises clean images with the main BatchNorm and adversarial ones with an auxiliary "
               "BatchNorm. Compare both branches with the standard and PGD-AT models of the same dataset: "
               "clean, PGD and mean accuracy over the distortions at severity 3, on the same test images.")
    shown = (advprop_form(infos, advprop, device) if advprop else None) or linked
    if shown is not None:
        show_comparison(shown)
    elif analysis_ui.job_pending(KIND):
        st.caption("The comparison shows here when the background job is done.")


def advprop_form(infos: list, advprop: list, device: str):
    """The checkpoint, images and PGD steps, and **Compare branches**: the result when it is stored
    or computed here, None when queued, failed (the error shown) or not asked for."""
    with st.form("advprop_form", enter_to_submit=False):
        c1, c2, c3 = st.columns(3)
        choice = c1.selectbox("AdvProp checkpoint", [str(i.path) for i in advprop],
                              format_func=lambda p: next(i.name for i in advprop if str(i.path) == p))
        dataset = next((i.card.dataset for i in advprop if str(i.path) == choice), None) or "mnist"
        n = common.image_count(c2, "Test images", dataset, 16, 10000, 200, key="advprop_n")
        steps = c3.number_input("PGD steps", min_value=1, max_value=200, value=10, key="advprop_steps")
        mode = analysis_ui.mode_picker(st, "advprop_mode")
        asked = st.form_submit_button("Compare branches")
    if not asked:
        return None
    try:
        request = advprop_request(infos, choice, n=int(n), steps=int(steps))
        loaded = [common.load_checkpoint(ref.path, device, ref.branch) for ref in branches(request)]
        with common.stop_button(st, "advprop_stop"):
            return analysis_ui.run_or_queue(request, loaded, mode, "Evaluating…", device)
    except RobustScopeError as exc:
        common.show_error(exc)
        return None


def show_comparison(result) -> None:
    """The table of a stored (or just computed) comparison, its CSV and its permalink."""
    table = result.value()
    st.markdown(f"**{result.request.describe()}**")
    for note in result.meta.get("notes", []):
        st.warning(note)
    st.dataframe(table.drop(columns=["distortions"]), hide_index=True)
    st.download_button("Download CSV", table.to_csv(index=False), "advprop_branches.csv", "text/csv")
    analysis_ui.show_permalink(result)
