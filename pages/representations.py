"""Representations: layer-by-layer CKA (or another similarity measure) within and across models
(Cianfarani et al. 2022).

Heatmaps A×A, B×B and A×B (and B×A for an asymmetric measure) on one colour scale, clean or
adversarial inputs; minibatch unbiased CKA (Nguyen, Raghu & Kornblith 2021) by default, or a
measure of ``engine.similarity.measures.MEASURES``: one ``engine.analysis`` request (stored result,
background job when long, permalink ``?result=<key>``).
"""
from __future__ import annotations

from functools import partial

import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from engine.analysis.kinds.cka import DEFAULT_K, MEASURE_NAMES, CKARequest
from engine.analysis import ModelRef
from engine.errors import RobustScopeError
from engine.models import block_layers, default_layers, list_layers
from engine.paths import runs_dir
from engine.similarity import KERNELS, corresponding_depths
from engine.similarity.measures import MEASURES, get_measure
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
    measure = st.selectbox("Measure", list(MEASURES), key="cka_measure", format_func=lambda m: MEASURES[m].title,
                           help=" · ".join(f"**{m}**: {text}" for m, text in MEASURE_NAMES.items()))
    with st.form("cka_form", enter_to_submit=False):
        c1, c2, c3, c4 = st.columns(4)
        n = common.image_count(c1, "Images", sel.dataset, 8, 10000, 500, key="cka_n")
        batch_size = c2.number_input("Batch size", min_value=4, max_value=1000, value=100, step=50)
        if measure == "cka":
            kernel, k = c3.selectbox("Kernel", list(KERNELS)), DEFAULT_K
        else:
            kernel = "linear"
            k = c3.number_input("Neighbours k", min_value=1, max_value=1000, value=DEFAULT_K, key="cka_k") \
                if measure == "mknn" else DEFAULT_K
        inputs = c4.radio("Inputs", ["clean", "adversarial"], horizontal=True)
        craft_on = st.radio("Adversarial examples crafted on", ["A", "B"], horizontal=True)
        layers_a = st.multiselect("Layers of A", _layer_names(sel.a.model), default=pick(sel.a.model),
                                  key=f"cka_layers_a_{layer_set}")
        layers_b = st.multiselect("Layers of B", _layer_names(sel.b.model), default=pick(sel.b.model),
                                  key=f"cka_layers_b_{layer_set}")
        mode = analysis_ui.mode_picker(st, "cka_mode")
        submitted = st.form_submit_button(f"Compute {MEASURES[measure].title}", type="primary")


def cka_request() -> CKARequest:
    """The request of the form's settings (models by path + sha256 + BN branch)."""
    return CKARequest(
        a=ModelRef.from_loaded(sel.a), b=ModelRef.from_loaded(sel.b), dataset=sel.dataset, n=int(n),
        batch_size=int(batch_size), layers_a=tuple(layers_a), layers_b=tuple(layers_b), kernel=kernel,
        inputs="adv" if inputs == "adversarial" else "clean", craft_on=craft_on.lower(), measure=measure, k=int(k),
    )


def panels(comp) -> list[tuple[str, object]]:
    """``(title, map)`` of every map: A×A and B×B with their block-structure scores, A×B and (for
    an asymmetric measure) B×A, labelled with how to read them."""
    found = get_measure(comp.measure)
    scores = structure_view.block_structures(comp)
    reading = f" ({found.direction})" if found.direction else ""
    within = [(f"{slot} × {slot}" + (f" · block score {scores[slot].score:.2f}" if slot in scores else ""), res)
              for slot, res in (("A", comp.within_a), ("B", comp.within_b))]
    across = [(f"A × B{reading}", comp.across)]
    if comp.reverse is not None:
        across.append((f"B × A{reading}", comp.reverse))
    return within + across


def colour_scale(found) -> dict:
    """The colour axis of a measure's maps: its value range, bright = similar (reversed for a distance)."""
    low, high = found.value_range
    return dict(colorscale="Viridis", cmin=low, cmax=high, reversescale=found.distance)


def heatmaps(comp) -> go.Figure:
    """The maps side by side on one colour scale, hover naming both layers and the value."""
    found = get_measure(comp.measure)
    maps = panels(comp)
    fig = make_subplots(rows=1, cols=len(maps), subplot_titles=[t for t, _ in maps], horizontal_spacing=0.1)
    for i, (title, res) in enumerate(maps, start=1):
        fig.add_trace(go.Heatmap(
            z=res.matrix, x=list(res.cols), y=list(res.rows), coloraxis="coloraxis",
            hovertemplate=f"{title}<br>row: %{{y}}<br>col: %{{x}}<br>{found.title}: %{{z:.3f}}<extra></extra>",
        ), row=1, col=i)
        fig.update_yaxes(autorange="reversed", row=1, col=i)
    fig.update_layout(coloraxis=colour_scale(found), height=460)
    return fig


def depth_plot(comp) -> go.Figure:
    found = get_measure(comp.measure)
    depth, values, pairs = corresponding_depths(comp.across)
    fig = go.Figure(go.Scatter(x=depth, y=values, mode="lines+markers",
                               text=[f"{a} ↔ {b}" for a, b in pairs],
                               hovertemplate=f"%{{text}}<br>{found.title}: %{{y:.3f}}<extra></extra>"))
    low, high = found.value_range
    fig.update_layout(xaxis_title="relative depth", yaxis_title=f"{found.title}(A, B)",
                      yaxis_range=[low, high + 0.05 * (high - low)], height=320)
    return fig


def matrices_png(comp) -> bytes:
    """The maps rendered with matplotlib (plotly's PNG export needs kaleido)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    found, maps = get_measure(comp.measure), panels(comp)
    low, high = found.value_range
    fig, axes = plt.subplots(1, len(maps), figsize=(5 * len(maps), 5))
    for ax, (title, res) in zip(axes, maps):
        im = ax.imshow(res.matrix, vmin=low, vmax=high, cmap="viridis_r" if found.distance else "viridis")
        ax.set_title(title, fontsize=8)
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
            computed = analysis_ui.run_or_queue(cka_request(), [sel.a, sel.b], mode,
                                                f"Computing {MEASURES[measure].title}…", sel.device)
    except RobustScopeError as exc:
        common.show_error(exc)
        st.stop()
    if computed is not None:
        shown = computed
if shown is not None:
    analysis_ui.show_permalink(shown)
    comp = shown.value()
    st.subheader(f"{comp.inputs} inputs · {comp.within_a.n} images · {comp.seconds:.1f} s")
    options = "".join(f" · {name}={value}" for name, value in comp.options.items())
    st.caption(f"Measure: **{MEASURES[comp.measure].title}**{options} ({MEASURE_NAMES[comp.measure]})")
    request = shown.request
    st.caption(f"A: `{request.a.name}` · B: `{request.b.name}` · {request.dataset}")
    for warning in comp.warnings:
        st.warning(warning)
    fig = heatmaps(comp)
    st.plotly_chart(fig, width="stretch")
    structure_view.show_block_structure(comp)
    st.markdown(f"**{MEASURES[comp.measure].title} between corresponding depths of A and B**")
    st.plotly_chart(depth_plot(comp), width="stretch")
    csv = "".join(f"# {t}\n{r.to_csv()}" for t, r in
                  [("AxA", comp.within_a), ("BxB", comp.within_b), ("AxB", comp.across), ("BxA", comp.reverse)]
                  if r is not None)
    d1, d2, d3 = st.columns(3)
    d1.download_button("CSV", csv, "cka.csv", "text/csv")
    # made when clicked, not on every render (matplotlib took a permalink's server ~0.3 s per open)
    d2.download_button("PNG (matplotlib)", partial(matrices_png, comp), "cka.png", "image/png")
    d3.download_button("Interactive HTML", partial(fig.to_html, include_plotlyjs="cdn"), "cka.html", "text/html")
elif not st.query_params.get(analysis_ui.JOB_PARAM):
    st.info("Choose the measure and the layers and press **Compute**.")

structure_view.across_epochs_section(sel.dataset, sel.device, runs_dir())
