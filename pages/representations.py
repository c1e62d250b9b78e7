"""Representations: layer-by-layer CKA within and across models (Cianfarani et al. 2022).

Heatmaps A×A, B×B and A×B on one colour scale, clean or adversarial inputs, minibatch unbiased
CKA (Nguyen, Raghu & Kornblith 2021): one ``engine.analysis`` request (stored result, background job
when long, permalink ``?result=<key>``).
"""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from engine.analysis.kinds.cka import CKARequest
from engine.analysis import ModelRef
from engine.errors import RobustScopeError
from engine.models import block_layers, default_layers, list_layers
from engine.paths import runs_dir
from engine.similarity import KERNELS, corresponding_depths
from pages import analysis_ui, common, structure_view

st.header("Representations: CKA within and across models")
st.caption(
    "Standard networks show a block structure (groups of layers with near-identical "
    "representations); robust ones lose it (Cianfarani et al. 2022). Minibatch unbiased CKA "
    "(Nguyen, Raghu & Kornblith 2021): memory does not grow with the number of images."
)
sel = common.current_selection()
URL_KIND = analysis_ui.url_kind()  # the view the URL (?result= / ?job=) names: the maps or across epochs
if URL_KIND == structure_view.EPOCHS_KIND and (sel.a is None or sel.b is None):
    structure_view.across_epochs_section(sel.dataset, sel.device, runs_dir())  # needs no models A and B
    st.stop()
shown = None
if URL_KIND != structure_view.EPOCHS_KIND:
    shown = analysis_ui.permalinked("cka") or analysis_ui.job_status("cka")  # ?result=<key> / ?job=<id>
if shown is None or (sel.a is not None and sel.b is not None):
    common.require_models(sel, both=True)
    # CKA compares representations, not predictions: inputs must match the dataset, classes need not
    common.require_compatible(sel, {"A": sel.a, "B": sel.b}, classes=False)


def _layer_names(model) -> list[str]:
    return [info.name for info in list_layers(model)]


LAYER_SETS = {"every block": block_layers, "main blocks": default_layers}

submitted = False
if sel.a is not None and sel.b is not None:  # (a permalinked result shows without models)
    layer_set = st.radio("Layer set", list(LAYER_SETS), horizontal=True, key="cka_layer_set",
                         help="'every block' lists each residual block of a ResNet-style model: the finer "
                              "map on which block structure shows; 'main blocks' one layer per stage.")
    pick = LAYER_SETS[layer_set]
    with st.form("cka_form", enter_to_submit=False):
        c1, c2, c3, c4 = st.columns(4)
        n = common.image_count(c1, "Images", sel.dataset, 8, 10000, 500, key="cka_n")
        batch_size = c2.number_input("Batch size", min_value=4, max_value=1000, value=100, step=50)
        kernel = c3.selectbox("Kernel", list(KERNELS))
        inputs = c4.radio("Inputs", ["clean", "adversarial"], horizontal=True)
        craft_on = st.radio("Adversarial examples crafted on", ["A", "B"], horizontal=True)
        layers_a = st.multiselect("Layers of A", _layer_names(sel.a.model), default=pick(sel.a.model),
                                  key=f"cka_layers_a_{layer_set}")
        layers_b = st.multiselect("Layers of B", _layer_names(sel.b.model), default=pick(sel.b.model),
                                  key=f"cka_layers_b_{layer_set}")
        mode = analysis_ui.mode_picker(st, "cka_mode")
        submitted = st.form_submit_button("Compute CKA", type="primary")


def cka_request() -> CKARequest:
    """The request of the form's settings (models by path + sha256 + BN branch)."""
    return CKARequest(
        a=ModelRef.from_loaded(sel.a), b=ModelRef.from_loaded(sel.b), dataset=sel.dataset, n=int(n),
        batch_size=int(batch_size), layers_a=tuple(layers_a), layers_b=tuple(layers_b), kernel=kernel,
        inputs="adv" if inputs == "adversarial" else "clean", craft_on=craft_on.lower(),
    )


def heatmaps(comp) -> go.Figure:
    """Three heatmaps side by side on one colour scale, hover naming both layers and the value."""
    maps = [("A × A", comp.within_a), ("B × B", comp.within_b), ("A × B", comp.across)]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[t for t, _ in maps], horizontal_spacing=0.12)
    for i, (title, res) in enumerate(maps, start=1):
        fig.add_trace(go.Heatmap(
            z=res.matrix, x=list(res.cols), y=list(res.rows), zmin=0, zmax=1, coloraxis="coloraxis",
            hovertemplate=f"{title}<br>row: %{{y}}<br>col: %{{x}}<br>CKA: %{{z:.3f}}<extra></extra>",
        ), row=1, col=i)
        fig.update_yaxes(autorange="reversed", row=1, col=i)
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=0, cmax=1), height=460)
    return fig


def depth_plot(comp) -> go.Figure:
    depth, values, pairs = corresponding_depths(comp.across)
    fig = go.Figure(go.Scatter(x=depth, y=values, mode="lines+markers",
                               text=[f"{a} ↔ {b}" for a, b in pairs],
                               hovertemplate="%{text}<br>CKA: %{y:.3f}<extra></extra>"))
    fig.update_layout(xaxis_title="relative depth", yaxis_title="CKA(A, B)", yaxis_range=[0, 1.05], height=320)
    return fig


def matrices_png(comp) -> bytes:
    """The three maps rendered with matplotlib (plotly's PNG export needs kaleido)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 5))
    for ax, (title, res) in zip(axes, [("A × A", comp.within_a), ("B × B", comp.within_b), ("A × B", comp.across)]):
        im = ax.imshow(res.matrix, vmin=0, vmax=1, cmap="viridis")
        ax.set_title(title)
        ax.set_xticks(range(len(res.cols)), res.cols, rotation=90, fontsize=6)
        ax.set_yticks(range(len(res.rows)), res.rows, fontsize=6)
    fig.colorbar(im, ax=axes, shrink=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


if submitted:
    if not layers_a or not layers_b:
        st.warning("Choose at least one layer for each model.")
        st.stop()
    try:
        with common.stop_button(st, "cka_stop", "interrupts the computation (the last finished result stays)"):
            computed = analysis_ui.run_or_queue(cka_request(), [sel.a, sel.b], mode, "Computing CKA…", sel.device)
    except RobustScopeError as exc:
        common.show_error(exc)
        st.stop()
    if computed is not None:
        shown = computed
if shown is not None:
    analysis_ui.show_permalink(shown)
    comp = shown.value()
    st.subheader(f"{comp.inputs} inputs · {comp.within_a.n} images · {comp.seconds:.1f} s")
    request = shown.request
    st.caption(f"A: `{request.a.name}` · B: `{request.b.name}` · {request.dataset}")
    for warning in comp.warnings:
        st.warning(warning)
    fig = heatmaps(comp)
    st.plotly_chart(fig, width="stretch")
    structure_view.show_block_structure(comp)
    st.markdown("**CKA between corresponding depths of A and B**")
    st.plotly_chart(depth_plot(comp), width="stretch")
    csv = "".join(f"# {t}\n{r.to_csv()}" for t, r in
                  [("AxA", comp.within_a), ("BxB", comp.within_b), ("AxB", comp.across)])
    d1, d2, d3 = st.columns(3)
    d1.download_button("CSV", csv, "cka.csv", "text/csv")
    d2.download_button("PNG (matplotlib)", matrices_png(comp), "cka.png", "image/png")
    d3.download_button("Interactive HTML", fig.to_html(include_plotlyjs="cdn"), "cka.html", "text/html")
elif not st.query_params.get(analysis_ui.JOB_PARAM):
    st.info("Choose the layers and press **Compute CKA**.")

structure_view.across_epochs_section(sel.dataset, sel.device, runs_dir())
