"""Saliency page: where models A and B look. Four views, each in its own module and each a stored
``engine.analysis`` request: the attribution maps grid of A and B side by side (Kim & Seo 2019;
:mod:`pages.saliency_maps_view`), the keep/remove curves with optional KAR/ROAR retraining (Hooker
et al. 2019; :mod:`pages.saliency_curves_view`), the explanation-quality metrics of A and B
(randomisation, faithfulness, localisation, robustness; :mod:`pages.saliency_metrics_view`) and the
ε-vs-interpretability trade-off across checkpoints (Kim & Seo 2019; :mod:`pages.tradeoff_view`).

This module holds the title, the sidebar's selection shared by the views and the choice of view: with
models chosen, all four one under the other; without, the one view the URL names (``?result=<key>``
reopens a stored result without computing anything or loading a model, ``?job=<id>`` follows a
background job from any session), else the sidebar's request for models. The URL names one view at a
time: the others leave it alone.
"""
import dataclasses

import streamlit as st

from engine import selection
from pages import analysis_ui, common, saliency_curves_view, saliency_maps_view, saliency_metrics_view, tradeoff_view


@dataclasses.dataclass(frozen=True)
class SaliencyPage:
    """What the views share: the sidebar's selection, its chosen models by slot ("A", "B") and the
    view the URL (``?result=`` / ``?job=``) names."""

    sel: object
    models: dict
    url_kind: str | None

    def model_title(self, slot: str) -> str:
        """The sidebar's title of model ``slot`` ("A: name (recipe)")."""
        return selection.model_title(slot, self.models[slot].card)

    def shown_names(self, result) -> dict:
        """Stored model names -> "A"/"B" when the result is about the sidebar's models (same weights
        and BN branches, in order); else {} (the stored names stay)."""
        mine = [(m.sha256, getattr(m, "branch", "main")) for m in self.models.values()]
        theirs = [(ref.sha256, ref.branch) for ref in result.request.models]
        return dict(zip(result.meta["names"], self.models)) if theirs == mine else {}


st.title("Saliency")
st.caption(
    "Where does each model look? Robust models' input gradients tend to look like the object, "
    "standard models' like noise (Kim & Seo 2019, *Bridging Adversarial Robustness and Gradient "
    "Interpretability*). Maps are computed with captum on the same image for A and B."
)
sel = common.current_selection()
page = SaliencyPage(sel=sel, models={slot: m for slot, m in (("A", sel.a), ("B", sel.b)) if m is not None},
                    url_kind=analysis_ui.url_kind())
saliency_maps_view.forget_live_grid()

if not page.models:  # a stored view (permalink, finished job) opens without models
    stored = {saliency_curves_view.KIND: saliency_curves_view, saliency_metrics_view.KIND: saliency_metrics_view,
              tradeoff_view.KIND: tradeoff_view}
    if stored.get(page.url_kind, saliency_maps_view).render_stored(page):
        st.stop()
    common.require_models(sel, both=False)
common.require_compatible(sel, page.models)
saliency_maps_view.render(page)
st.divider()
saliency_curves_view.render(page)
st.divider()
saliency_metrics_view.render(page)
st.divider()
tradeoff_view.render(page)
