"""Attack Lab: craft an adversarial example on model A or B in one click and see whether it fools
both models (Szegedy et al. 2013; Goodfellow et al. 2015; Madry et al. 2018), plus an ε-sweep of
robust accuracy (A vs B) and the cross-model transfer matrix. Three views, each in its own module:
craft and compare (:mod:`pages.craft_view`, whose form also picks the attack the other two use),
the ε-sweep (:mod:`pages.sweep_view`) and the transfer matrix (:mod:`pages.transfer_view`).

This module holds the title, the sidebar's selection shared by the views and the choice of what to
show: with models A and B chosen, the three views one under the other and one permalink for all
their results; with fewer, the stored results the URL names (``?result=<key>[,<key>…]``, nothing to
run), else the sidebar's request for models A and B. A background ε-sweep or transfer is followed
with ``?job=<id>`` in its view.
"""
import dataclasses
from typing import ClassVar

import streamlit as st

from engine import data as edata
from engine import selection
from engine.analysis import ModelRef
from pages import analysis_ui, common, craft_view, sweep_view, transfer_view


@dataclasses.dataclass(frozen=True)
class AttackLab:
    """What the views share: the sidebar's selection, its chosen models by slot ("A", "B"), the
    results the URL names by kind and the dataset's spec."""

    SIZES: ClassVar[list] = [16, 32, 64, 128, 256]  # image counts the ε-sweep and the transfer offer
    sel: object
    models: dict
    linked: dict
    spec: object

    def model_title(self, slot: str) -> str:
        """The sidebar's title of model ``slot``."""
        return selection.model_title(slot, self.models[slot].card)

    def slot_title(self, request, slot: str) -> str:
        """How a stored result's model ``slot`` is named: the sidebar's title when it is that model."""
        ref = request.models[request.slots().index(slot)]
        current = self.models.get(slot)
        same = current is not None and (
            (str(current.sha256), str(getattr(current, "branch", "main"))) == (ref.sha256, ref.branch))
        return self.model_title(slot) if same else f"{slot}: {ref.name}"

    def model_refs(self) -> tuple[ModelRef, ...]:
        """The sidebar's models A and B as a request names them."""
        return tuple(ModelRef.from_loaded(m) for m in self.models.values())

    def shown(self, kind: str, session_key: str):
        """The result a view of ``kind`` shows before its button: the URL's (``?result=``), a
        finished background job's (``?job=``; progress while it runs), else this session's last."""
        return self.linked.get(kind) or analysis_ui.job_status(kind) or st.session_state.get(session_key)


st.title("Attack Lab")
st.caption(
    "Pick an image, craft an adversarial example against model A or B, and see whether it fools "
    "**both** models: standard models fall to tiny perturbations, adversarially trained ones hold "
    "(Szegedy et al. 2013, Goodfellow et al. 2015, Madry et al. 2018)."
)
sel = common.current_selection()
VIEWS = (craft_view, sweep_view, transfer_view)
LINKED = analysis_ui.permalinked_by_kind(tuple(view.KIND for view in VIEWS))  # ?result=<key>[,<key>…]
MODELS = {slot: m for slot, m in (("A", sel.a), ("B", sel.b)) if m is not None}
STORED_ONLY = len(MODELS) < 2 and bool(LINKED)  # a permalink opens without the sidebar's models
if not STORED_ONLY:
    common.require_models(sel, both=True)
    SPEC = common.require_compatible(sel, MODELS)
else:
    SPEC = edata.get_spec(next(iter(LINKED.values())).request.dataset)
page = AttackLab(sel=sel, models=MODELS, linked=LINKED, spec=SPEC)

if STORED_ONLY:
    st.info("Showing stored results. Choose models A and B in the sidebar to craft, sweep or transfer anew.")
    for view in VIEWS:
        if view.KIND in LINKED:
            view.render_stored(page, LINKED[view.KIND])
    analysis_ui.show_permalink(*LINKED.values())
    st.stop()
attack_name, chosen_params, crafted = craft_view.render(page)
st.divider()
shown = [crafted, sweep_view.render(page, attack_name, chosen_params),
         transfer_view.render(page, attack_name, chosen_params)]
if any(result is not None for result in shown):
    analysis_ui.show_permalink(*[result for result in shown if result is not None])
