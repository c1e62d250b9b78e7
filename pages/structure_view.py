"""Representations page parts: the block-structure reading of the CKA maps, and CKA across the
epochs of training runs (Cianfarani et al. 2022). Rendering only; the numbers come from
``engine.similarity.structure``."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import engine
from engine.models import block_layers
from engine.errors import RobustScopeError
from engine.similarity.structure import block_structure, cka_across_epochs
from engine.training.state import list_snapshots
from pages import common


def block_structure_table(comp) -> pd.DataFrame | None:
    """Block-structure score and mean off-diagonal CKA of A×A and B×B (None: too few layers)."""
    rows = []
    for slot, result in (("A", comp.within_a), ("B", comp.within_b)):
        try:
            found = block_structure(result.matrix)
        except RobustScopeError:
            return None
        rows.append({"model": slot, "block-structure score": found.score,
                     "blocks (layers each)": " + ".join(map(str, found.blocks)),
                     "within-block CKA": found.within, "between-block CKA": found.between,
                     "mean off-diagonal CKA": found.mean_off_diagonal})
    return pd.DataFrame(rows)


def show_block_structure(comp) -> None:
    """The table under the heatmaps, with what the score means."""
    table = block_structure_table(comp)
    if table is None:
        st.caption("Choose at least four layers per model for a block-structure score.")
        return
    st.markdown("**Block structure** — best split of the layers into 2–4 contiguous blocks: "
                "mean CKA within blocks minus mean CKA between them (higher = more block structure; "
                "robust models are expected to score lower).")
    st.dataframe(table, hide_index=True)


SNAPSHOTS_FOLDER = "snapshots"


@st.cache_data(ttl=30, show_spinner=False)
def _runs(roots: tuple[str, ...]) -> list[str]:
    """Run folders under the roots that keep at least two epoch snapshots."""
    found = {p.parent for root in roots for p in Path(root).glob("**/state.json") if len(list_snapshots(p.parent)) >= 2}
    return sorted(str(p) for p in found)


def _epoch_map(folder: str, dataset: str, n: int, reference: str, device: str):
    snapshots = [(epoch, engine.load(stem, device=device)) for epoch, stem in list_snapshots(Path(folder))]
    images, labels = common.dataset_sample(dataset, n)
    progress, finish = common.progress_callback(f"CKA across epochs of {Path(folder).name}…")
    try:
        return snapshots[-1][1].card, cka_across_epochs([(e, s.model) for e, s in snapshots], (images, labels),
                                                         layers=block_layers(snapshots[-1][1].model),
                                                         reference=reference, n=n, batch_size=min(100, n),
                                                         progress=progress)
    finally:
        finish()


def epochs_figure(results) -> go.Figure:
    """One heatmap per run: epochs × layers, CKA to the reference epoch."""
    fig = make_subplots(rows=1, cols=len(results), subplot_titles=[title for title, _ in results],
                        horizontal_spacing=0.15)
    for i, (title, res) in enumerate(results, start=1):
        fig.add_trace(go.Heatmap(z=res.matrix, x=list(res.layers), y=[f"epoch {e}" for e in res.epochs],
                                 zmin=0, zmax=1, coloraxis="coloraxis",
                                 hovertemplate="%{y} · %{x}<br>CKA: %{z:.3f}<extra></extra>"), row=1, col=i)
    fig.update_layout(coloraxis=dict(colorscale="Viridis", cmin=0, cmax=1), height=420)
    return fig


def across_epochs_section(dataset: str, device: str, runs_root: Path) -> None:
    """Pick one or two training runs with snapshots (under the runs folder, or shipped under
    ``checkpoints/snapshots/``) and show each layer's CKA across epochs."""
    st.subheader("Across epochs")
    st.caption("Runs trained with `\"snapshot_every\": k` keep every k-th epoch. Each layer's CKA between an "
               "epoch and the final one (or the previous one): robust overfitting is expected to move the "
               "deeper layers most (Cianfarani et al. 2022).")
    from engine.checkpoints import checkpoints_root

    runs = _runs((str(runs_root), str(checkpoints_root() / SNAPSHOTS_FOLDER)))
    if not runs:
        st.info(f"No training run with at least two kept epochs under `{runs_root}`. Train with "
                "`\"snapshot_every\": 1` (Training page or `python -m engine train`), then come back.")
        return
    with st.form("epochs_form"):
        chosen = st.multiselect("Runs (standard and robust side by side)", runs, default=runs[-2:], max_selections=2,
                                format_func=lambda p: f"{Path(p).parent.name}/{Path(p).name}")
        c1, c2 = st.columns(2)
        n = c1.number_input("Images", min_value=8, max_value=5000, value=300, step=100, key="epochs_n")
        reference = c2.radio("Compare each epoch with", ["final", "consecutive"], horizontal=True)
        go_button = st.form_submit_button("Compute CKA across epochs")
    if not go_button:
        return
    try:
        results = []
        with common.stop_button(st, "epochs_stop"):
            for folder in chosen:
                card, res = _epoch_map(folder, dataset, int(n), reference, device)
                results.append((f"{Path(folder).name} ({card.training.method})", res))
    except RobustScopeError as exc:
        common.show_error(exc)
        return
    if results:
        st.plotly_chart(epochs_figure(results), width="stretch")
        frame = pd.concat([pd.DataFrame(res.matrix, index=[f"{t} · epoch {e}" for e in res.epochs],
                                        columns=list(res.layers)) for t, res in results])
        st.download_button("CSV", frame.to_csv(), "cka_epochs.csv", "text/csv")
