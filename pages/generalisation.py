"""Generalisation page: OOD accuracy, shape bias and unit simplicity, robust vs standard
(Agarwal & Chen 2020, docs/SCIENCE.md, "Generalisation and simplicity")."""
import json

import numpy as np
import pandas as pd
import plotly.express as px
import streamlit as st

from engine import generalisation as gen
from engine import models as emodels
from engine.analysis import ModelRef
from engine.analysis.kinds.ood import OODRequest
from engine.analysis.kinds.units import UnitsRequest
from engine.data import distortions as dist
from engine.errors import RobustScopeError
from pages import analysis_ui, common

st.title("Generalisation")
st.caption(
    "Agarwal & Chen 2020: robust models do better on texture-less images (silhouettes, edges, "
    "cue-conflict), no better where texture survives, and their units are smoother and simpler."
)
sel = common.current_selection()
common.require_models(sel, both=True)
common.require_compatible(sel, {"A": sel.a, "B": sel.b})

cards = {"A": sel.a.card, "B": sel.b.card}
robust, standard, note = gen.robust_and_standard(cards)
names = {"A": f"A: {cards['A'].name or 'model A'}", "B": f"B: {cards['B'].name or 'model B'}"}
if note:
    st.info(note)
st.markdown(f"Robust model: **{names[robust]}** · standard model: **{names[standard]}**")


robust_name, standard_name = names[robust], names[standard]

with st.sidebar.expander("Generalisation settings", expanded=True):
    n = common.image_count(st, "Test images", sel.dataset, 16, 5000, 200, key="gen_n", step=16)
    chosen = st.multiselect("Distortions", list(dist.DISTORTIONS), list(dist.DISTORTIONS), key="gen_dist")
    severities = st.multiselect("Severities", list(dist.SEVERITIES), [1, 3, 5], key="gen_sev")
    seed = st.number_input("Seed", 0, 10_000, 0, key="gen_seed")

# ----------------------------------------------------------------------------- OOD accuracy
st.header("Accuracy under distortions")


def ood_result():
    """The OOD suite of the sidebar's settings (one ``engine.analysis`` request: stored, run here
    when short, else offered as a background job), or the permalinked one (``?result=<key>``)."""
    request = None
    if chosen and severities:
        request = OODRequest(models=(ModelRef.from_loaded(sel.a), ModelRef.from_loaded(sel.b)), dataset=sel.dataset,
                             n=int(n), seed=int(seed), distortions=tuple(chosen),
                             severities=tuple(sorted(severities)))
    linked = analysis_ui.permalinked("ood")
    if linked is not None:
        if request is None or linked.key == request.key():
            return linked
        notice = st.empty()
        with notice.container():
            st.info(f"Showing the stored result of the link ({linked.request.describe()}); the settings here differ.")
            leave = st.button("Compute for the settings here instead", key="ood_leave_link")
        if not leave:
            return linked
        notice.empty()
        st.query_params.pop(analysis_ui.RESULT_PARAM, None)
    if request is None:
        st.warning("Choose at least one distortion and one severity.")
        return None
    try:
        return analysis_ui.auto_run(request, [sel.a, sel.b], "Evaluating distortions", sel.device, key="ood")
    except RobustScopeError as exc:
        common.show_error(exc)
        st.stop()


def shown_names(result) -> dict:
    """Stored model names -> this page's "A: ..."/"B: ..." when the result is for the sidebar's
    models (else the stored names stay)."""
    mine = [(sel.a.sha256, sel.a.branch), (sel.b.sha256, sel.b.branch)]
    theirs = [(r.sha256, r.branch) for r in result.request.models]
    if theirs != mine:
        st.info("This OOD result is for other models than the sidebar's: "
                + ", ".join(f"`{r.name}`" for r in result.request.models))
        return {}
    return dict(zip(result.meta["names"], [names["A"], names["B"]]))


ood = ood_result()
table, bias = None, {}
if ood is not None:
    analysis_ui.show_permalink(ood)
    report = ood.value(names=shown_names(ood))
    table, bias = report.table, report.shape_bias
if table is not None:
    st.caption("`keeps` says which cue survives: shape (texture removed), texture (shape destroyed) "
               "or both (common corruptions). Severity 0 = clean images or a fixed image set.")
    per_distortion = table.groupby(["distortion", "model", "keeps"], sort=False)["accuracy"].mean().reset_index()
    st.plotly_chart(px.bar(per_distortion, x="distortion", y="accuracy", color="model", barmode="group",
                           hover_data=["keeps"], title="Mean accuracy per distortion (over severities)",
                           range_y=[0, 1]), width="stretch")
    curves = table[table["severity"] > 0]
    if len(curves):
        st.plotly_chart(px.line(curves, x="severity", y="accuracy", color="model", facet_col="distortion",
                                facet_col_wrap=4, markers=True, range_y=[0, 1], title="Severity curves"),
                        width="stretch")
    st.dataframe(table.pivot_table(index=["distortion", "severity", "keeps"], columns="model",
                                   values="accuracy", sort=False), width="stretch")
    st.download_button("Download accuracy table (CSV)", table.to_csv(index=False), "ood_accuracy.csv", "text/csv")

st.subheader("Example images")
example_severity = st.select_slider("Severity of the examples", list(dist.SEVERITIES), 3, key="gen_ex_sev")
images, _labels = common.dataset_sample(sel.dataset, 1)  # the one image the examples show
columns = st.columns(4)
for i, name in enumerate(["clean", *chosen]):
    shown = images[:1] if name == "clean" else dist.apply(name, images[:1], example_severity, int(seed))
    columns[i % 4].image(np.ascontiguousarray(shown[0].permute(1, 2, 0).numpy()), caption=name,
                         clamp=True, width="stretch")

# ----------------------------------------------------------------------------- shape bias
st.header("Shape bias on cue-conflict images")
if bias:
    bias_rows = pd.DataFrame([{"model": k, **r._asdict()} for k, r in bias.items()])
    st.plotly_chart(px.bar(bias_rows, x="model", y=["shape_fraction", "texture_fraction", "other_fraction"],
                           title="Decisions on cue-conflict images (shape bias = shape / (shape + texture))"),
                    width="stretch")
    st.dataframe(bias_rows, width="stretch")
elif ood is None:
    st.info("Shape bias comes with the accuracy result above.")
else:
    st.info(report.shape_bias_note or gen.CUE_CONFLICT_UNAVAILABLE.format(dataset=ood.request.dataset))

# ----------------------------------------------------------------------------- unit statistics
st.header("Unit statistics")
st.caption("Roughness: total variation of a unit's activation maps per unit of activation; "
           "high-frequency share: spectral energy above 0.25 cycles/pixel; complexity: distinct "
           "labels and label entropy among the unit's top-k images. Lower = smoother / simpler.")
layers_a, layers_b = emodels.default_layers(sel.a.model), emodels.default_layers(sel.b.model)
common_layers = [layer for layer in layers_a if layer in layers_b]
layers = st.multiselect("Layers", common_layers, common_layers[:3], key="gen_layers")
top_k = st.number_input("Top-k images per unit", 2, 100, 10, key="gen_topk")
units = None
if layers:
    unit_request = UnitsRequest(models=(ModelRef.from_loaded(sel.a), ModelRef.from_loaded(sel.b)),
                                dataset=sel.dataset, n=int(n), layers=tuple(layers), top_k=int(min(top_k, n)))
    try:
        unit_result = analysis_ui.auto_run(unit_request, [sel.a, sel.b], "Unit statistics", sel.device, key="units")
    except RobustScopeError as exc:
        common.show_error(exc)
        st.stop()
    if unit_result is not None:
        units = gen.units_frame(unit_result.value(names=dict(zip(unit_result.meta["names"], [names["A"], names["B"]]))))
if units is not None:
    statistic = st.selectbox("Statistic", list(gen.units.STATISTICS), key="gen_stat")
    active = units[units["active"]]
    st.plotly_chart(px.histogram(active, x=statistic, color="model", barmode="overlay", facet_col="layer",
                                 facet_col_wrap=3, title=f"{statistic} per unit, A vs B"),
                    width="stretch")
    st.download_button("Download unit statistics (CSV)", units.to_csv(index=False), "unit_statistics.csv",
                       "text/csv")
elif not layers:
    st.info("Choose at least one layer to compute unit statistics.")

# ----------------------------------------------------------------------------- verdict
st.header("Does this pair reproduce the paper?")
findings = gen.paper_findings(robust_name, standard_name, table, bias, units)
st.markdown(f"**{gen.findings_line(findings)}**")
for f in findings:
    mark = {True: "✅", False: "❌", None: "➖"}[f.holds]
    st.markdown(f"{mark} {f.claim} — {f.detail}")
st.download_button("Download findings (JSON)", json.dumps([f._asdict() for f in findings], indent=2),
                   "generalisation_findings.json", "application/json")
