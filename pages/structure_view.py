"""Representations page parts: the block-structure reading of the maps (CKA or another measure),
and CKA across the epochs of training runs (Cianfarani et al. 2022). Rendering only; the numbers
come from ``engine.similarity.structure`` (across epochs: the stored ``cka_epochs`` analysis)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

import engine
from engine.analysis import ModelRef
from engine.analysis.kinds.cka_epochs import CKARunRequest
from engine.catalogue import CKA_REFERENCES
from engine.errors import RobustScopeError
from engine.models import block_layers
from engine.similarity.measures import get_measure
from engine.similarity.structure import block_structure
from engine.training.state import list_snapshots
from pages import analysis_ui, common

EPOCHS_KIND = CKARunRequest.kind


def value_label(comp) -> str:
    """How the tables name the maps' values: "CKA", or "similarity" for the other measures."""
    return "CKA" if getattr(comp, "measure", "cka") == "cka" else "similarity"


def block_structures(comp) -> dict:
    """``{"A": BlockStructure, "B": ...}`` of the within maps, read on the measure's similarity
    form (cos θ for the Procrustes angle); empty when a map has too few layers."""
    found = get_measure(getattr(comp, "measure", "cka"))
    try:
        return {slot: block_structure(found.similarity(result.matrix))
                for slot, result in (("A", comp.within_a), ("B", comp.within_b))}
    except RobustScopeError:
        return {}


def block_structure_table(comp) -> pd.DataFrame | None:
    """Block-structure score and mean off-diagonal value of A×A and B×B (None: too few layers)."""
    found, label = block_structures(comp), value_label(comp)
    if not found:
        return None
    return pd.DataFrame([{"model": slot, "block-structure score": one.score,
                          "blocks (layers each)": " + ".join(map(str, one.blocks)),
                          f"within-block {label}": one.within, f"between-block {label}": one.between,
                          f"mean off-diagonal {label}": one.mean_off_diagonal} for slot, one in found.items()])


def show_block_structure(comp) -> None:
    """The table under the heatmaps, with what the score means."""
    table = block_structure_table(comp)
    if table is None:
        st.caption("Choose at least four layers per model for a block-structure score.")
        return
    found = get_measure(getattr(comp, "measure", "cka"))
    form = " (on cos θ, the angle's similarity form)" if found.distance else ""
    st.markdown(f"**Block structure** — best split of the layers into 2–4 contiguous blocks: "
                f"mean {value_label(comp)} within blocks minus between them{form} (higher = more block "
                "structure; robust models are expected to score lower).")
    st.dataframe(table, hide_index=True)


SNAPSHOTS_FOLDER = "snapshots"


@st.cache_data(ttl=30, show_spinner=False)
def _runs(roots: tuple[str, ...]) -> dict[str, str | None]:
    """Run folders under the roots that keep at least two epoch snapshots -> the dataset their
    final snapshot was trained on (its card, read without torch; None when unreadable)."""
    found = {p.parent for root in roots for p in Path(root).glob("**/state.json") if len(list_snapshots(p.parent)) >= 2}
    return {str(p): _run_dataset(p) for p in sorted(found)}


def _run_dataset(folder: Path) -> str | None:
    from engine.checkpoints.files import checkpoint_files, read_card_file

    try:
        return read_card_file(checkpoint_files(list_snapshots(folder)[-1][1])[1]).dataset
    except RobustScopeError:
        return None


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
    ``checkpoints/snapshots/``) and show each layer's CKA across epochs: one ``engine.analysis``
    request (:class:`~engine.analysis.CKARunRequest`), stored, run here or in the background, and
    reopened from ``?result=<key>``."""
    st.subheader("Across epochs")
    st.caption("Runs trained with `\"snapshot_every\": k` keep every k-th epoch. Each layer's CKA between an "
               "epoch and the final one (or the previous one): robust overfitting is expected to move the "
               "deeper layers most (Cianfarani et al. 2022).")
    from engine.checkpoints import checkpoints_root

    every = _runs((str(runs_root), str(checkpoints_root() / SNAPSHOTS_FOLDER)))
    runs = [folder for folder, trained_on in every.items() if trained_on == dataset]
    if not every:
        st.info(f"No training run with at least two kept epochs under `{runs_root}`. Train with "
                "`\"snapshot_every\": 1` (Training page or `python -m engine train`), then come back.")
    elif not runs:
        others = sorted({d for d in every.values() if d})
        st.info(f"No training run with kept epochs on `{dataset}`; there are runs on "
                f"{', '.join(f'`{d}`' for d in others) or 'other data'} (choose that dataset in the sidebar).")
    shown = (epochs_form(runs, dataset, device) if runs else None) or analysis_ui.linked(EPOCHS_KIND)
    if shown is not None:
        show_epochs(shown)
    elif analysis_ui.job_pending(EPOCHS_KIND):
        st.caption("The CKA across epochs shows here when the background job is done.")


def epochs_form(runs: list[str], dataset: str, device: str):
    """The runs, images and reference, and **Compute CKA across epochs**: the result when it is
    stored or computed here, None when queued, failed (the error shown) or not asked for."""
    with st.form("epochs_form", enter_to_submit=False):
        chosen = st.multiselect("Runs (standard and robust side by side)", runs, default=runs[-2:], max_selections=2,
                                format_func=lambda p: f"{Path(p).parent.name}/{Path(p).name}")
        c1, c2 = st.columns(2)
        n = c1.number_input("Images", min_value=8, max_value=5000, value=300, step=100, key="epochs_n")
        reference = c2.radio("Compare each epoch with", list(CKA_REFERENCES), horizontal=True)
        mode = analysis_ui.mode_picker(st, "epochs_mode")
        asked = st.form_submit_button("Compute CKA across epochs")
    if not (asked and chosen):
        return None
    try:
        loaded, request = epochs_request(chosen, dataset, int(n), reference, device)
        with common.stop_button(st, "epochs_stop"):
            return analysis_ui.run_or_queue(request, loaded, mode, "CKA across epochs…", device)
    except RobustScopeError as exc:
        common.show_error(exc)
        return None


def epochs_request(folders: list[str], dataset: str, n: int, reference: str, device: str):
    """``(every snapshot loaded, the request)`` of the chosen runs: each run's kept snapshots, its
    final snapshot's block layers, on the first ``n`` test images."""
    fields, loaded = {}, []
    for slot, folder in zip("ab", folders):
        snapshots = list_snapshots(Path(folder))
        models = [engine.load(stem, device=device) for _, stem in snapshots]  # not cached: runs keep many
        loaded += models
        fields |= {f"run_{slot}": tuple(ModelRef.from_loaded(m) for m in models),
                   f"epochs_{slot}": tuple(epoch for epoch, _ in snapshots),
                   f"layers_{slot}": tuple(block_layers(models[-1].model))}
    return loaded, CKARunRequest(dataset=dataset, reference=reference, n=n, batch_size=min(100, n), **fields)


def show_epochs(result) -> None:
    """One heatmap per run of a stored (or just computed) result, its CSV and its permalink."""
    runs = [(f"{Path(r.run).name} ({r.method})", r.cka) for r in result.value()]
    st.markdown(f"**{result.request.describe()}**")
    for note in result.meta.get("notes", []):
        st.warning(note)
    st.plotly_chart(epochs_figure(runs), width="stretch")
    frame = pd.concat([pd.DataFrame(res.matrix, index=[f"{t} · epoch {e}" for e in res.epochs],
                                    columns=list(res.layers)) for t, res in runs])
    st.download_button("CSV", frame.to_csv(), "cka_epochs.csv", "text/csv")
    analysis_ui.show_permalink(result)
