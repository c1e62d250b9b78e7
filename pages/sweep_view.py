"""Attack Lab part: the ε-sweep — robust accuracy of models A and B against the chosen attack at
several ε, one curve per model (the accuracy-vs-budget curve of Madry et al. 2018, *Towards Deep
Learning Models Resistant to Adversarial Attacks*). Rendering only; the numbers come from one
``engine.analysis`` request (:class:`~engine.analysis.kinds.sweep.EpsSweepRequest`, the same as
``python -m engine sweep``), run here or as a background job (measured estimate), followed with
``?job=<id>`` and reopened from ``?result=<key>``."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import streamlit as st

from engine import attacks
from engine.analysis.kinds._attacklab import attack_params
from engine.analysis.kinds.sweep import EpsSweepRequest
from engine.errors import RobustScopeError
from pages import analysis_ui, common

KIND = EpsSweepRequest.kind


def parse_eps(text: str) -> list:
    """The ε values of a comma- (or semicolon-) separated text; ValueError names what it could not read."""
    try:
        values = [float(t) for t in text.replace(";", ",").split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"could not read {text!r} as comma-separated numbers") from None
    return values


def render(page, name: str, params: dict):
    """The ε-sweep of attack ``name`` with ``params`` (here or in the background): its stored
    result or None."""
    sel = page.sel
    with st.expander("ε-sweep: robust accuracy of A vs B", expanded=KIND in page.linked):
        norm = params.get("norm") or getattr(attacks.ATTACKS[name], "norm", "l2")
        base = attacks.default_eps(sel.dataset, norm)
        default = ", ".join(f"{base * f:.4g}" for f in (0, 0.25, 0.5, 1, 1.5, 2))
        st.caption(f"Attack: {attacks.ATTACKS[name].title} ({norm}) with the parameters above. Bounded attacks "
                   "rerun at each ε; minimal-norm attacks run once and count an image robust at ε when no "
                   "adversarial was found within ε.")
        cols = st.columns([3, 1, 1, 1])
        text = cols[0].text_input("ε values", default, key=f"atk_sweep_eps_{name}_{sel.dataset}_{norm}")
        n = common.image_slider(cols[1], "Images", page.sel.dataset, page.SIZES, 64, key="atk_sweep_n")
        mode = analysis_ui.mode_picker(st, "atk_sweep_mode")
        shown = page.shown(KIND, "atk_sweep_result")
        if cols[2].button("Run sweep", type="primary", key="atk_sweep_run"):
            try:
                swept = {k: v for k, v in params.items() if k != "eps"}
                request = EpsSweepRequest(models=page.model_refs(), dataset=sel.dataset, eps=tuple(parse_eps(text)),
                                          attack=name, params=attack_params(swept), n=int(n))
                with common.stop_button(cols[3], "atk_sweep_stop", "interrupts the sweep"):
                    shown = analysis_ui.run_or_queue(request, list(page.models.values()), mode, "ε-sweep", sel.device)
            except RobustScopeError as exc:
                common.show_error(exc)
            except ValueError as exc:
                st.error(str(exc))
        if shown is not None:
            show_sweep(page, shown)
    return shown


def render_stored(page, result) -> None:
    """A permalinked ε-sweep, shown without models A and B (nothing to run)."""
    st.subheader("ε-sweep: robust accuracy")
    show_sweep(page, result)


def show_sweep(page, shown) -> None:
    """The ε-sweep chart and CSV of a stored ``eps_sweep`` result."""
    st.session_state["atk_sweep_result"] = shown
    frame = pd.DataFrame(shown.value().rows())
    frame["model"] = frame["model"].map(lambda slot: page.slot_title(shown.request, slot))
    st.session_state["atk_sweep"] = frame
    fig = px.line(frame, x="eps", y="robust_acc", color="model", markers=True, range_y=[0, 1.02],
                  labels={"eps": "ε", "robust_acc": "robust accuracy"}, height=360)
    st.plotly_chart(fig, key="atk_sweep_chart")
    st.download_button("Sweep (CSV)", frame.to_csv(index=False), file_name="eps_sweep.csv",
                       mime="text/csv", key="atk_sweep_csv")

