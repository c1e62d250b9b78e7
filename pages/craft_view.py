"""Attack Lab part: craft and compare — an adversarial example crafted on model A or B from one test
image (or an upload), and whether it fools **both** models: the images and the perturbation, top-k
probabilities before and after, and downloads (Szegedy et al. 2013, *Intriguing properties of neural
networks*; Goodfellow et al. 2015; Madry et al. 2018). Its form also picks the attack and parameters
the ε-sweep and the transfer matrix use. A dataset image is one ``engine.analysis`` request
(:class:`~engine.analysis.kinds.craft.CraftRequest`, the same as ``python -m engine attack``): a
stored result at once, reopened from ``?result=<key>``. An uploaded image has no request (it is not
a dataset image): it goes to ``engine.attacks.craft_and_compare`` directly."""
from __future__ import annotations

import json
from functools import partial

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from engine import attacks
from engine import data as edata
from engine import images as eimages
from engine.analysis import run_analysis
from engine.analysis.kinds._attacklab import attack_params
from engine.analysis.kinds.craft import CraftRequest
from engine.attacks.base import MAX_RESTARTS, MAX_SEARCH_STEPS, MAX_STEPS, max_eps
from engine.attacks.export import npz_bytes, result_arrays
from engine.catalogue import norm_symbol
from engine.errors import RobustScopeError
from pages import common

KIND = CraftRequest.kind
POOL = 256  # images the picker chooses from (first POOL of the test split)
TOP_K = 3
IMAGE_PX = 168  # rendered width of the image tiles
RUNNER_UP = -1  # target choice: the clean runner-up class


def class_name(page, index: int) -> str:
    """The name of class ``index`` of the page's dataset (its number when there is none)."""
    names = page.spec.class_names
    return names[index] if 0 <= index < len(names) else str(index)


@st.cache_data(show_spinner="Loading images…", max_entries=8)
def pool_size(dataset: str) -> int:
    return min(POOL, len(edata.load_dataset(dataset, split="test")))


def pick_image(page):
    """Dataset index / random / upload -> (x (1,C,H,W) tensor, dataset index or None, description) or None."""
    source = st.radio("Image", ["Dataset image", "Upload (PNG/JPEG)"], horizontal=True, key="atk_source")
    if source == "Dataset image":
        images, labels = common.dataset_sample(page.sel.dataset, pool_size(page.sel.dataset))
        cols = st.columns([2, 1, 3])
        if cols[1].button("Random image", key="atk_random"):
            st.session_state["atk_index"] = int(np.random.default_rng().integers(len(images)))
        index = int(cols[0].number_input("Image index (test split)", 0, len(images) - 1, key="atk_index"))
        cols[2].markdown(f"True label: **{class_name(page, int(labels[index]))}**")
        flag_misclassified(page, images[index:index + 1], int(labels[index]))
        return images[index:index + 1], index, f"{page.sel.dataset}_{index}"
    upload = st.file_uploader("PNG or JPEG (resized to the model's input "
                              f"{'×'.join(str(s) for s in page.spec.input_shape[1:])})",
                              type=["png", "jpg", "jpeg"], key="atk_upload")
    if upload is None:
        st.info("Upload an image, or switch to a dataset image.")
        return None
    try:
        x = eimages.decode_image(upload.getvalue(), tuple(page.spec.input_shape), name=upload.name)
    except RobustScopeError as exc:
        common.show_error(exc)
        return None
    st.caption("An upload has no true label: the attacked model's clean prediction is used as the label.")
    return x, None, "upload"


def flag_misclassified(page, x, label: int) -> None:
    """Before any attack: say which model already gets the clean image wrong (its "fooled" would
    then say little)."""
    from engine.models.state import predict_labels

    for slot, loaded in page.models.items():
        predicted = int(predict_labels(loaded.model, x)[0])
        if predicted != label:
            st.warning(f"{page.model_title(slot)} already misclassifies this clean image (it predicts "
                       f"{class_name(page, predicted)}): pick another image to see an attack change its answer.")


def param_widget(page, attack: str, name: str, default, norm: str):
    """One widget for an exposed attack parameter (keys include attack, dataset and norm, so the
    per-dataset default applies when they change)."""
    key = f"atk_{attack}_{name}_{page.sel.dataset}_{norm}"
    label = {"eps": "ε", "alpha": "step size α", "initial_const": "initial c", "kappa": "κ (confidence)",
             "lr": "learning rate", "early_stop": "early stop", "random_start": "random start",
             "n_target_classes": "target classes", "p_init": "p_init (window share)",
             "queries": "queries (Square)"}.get(name, name)
    if isinstance(default, bool):
        return st.checkbox(label, default, key=key)
    if name == "version":
        versions = list(attacks.AUTOATTACK_VERSIONS)
        return st.selectbox("AutoAttack version", versions, index=versions.index(default), key=key,
                            help="standard: APGD-CE → APGD-T → FAB-T → Square; plus: more restarts and attacks; "
                                 "rand: for randomised defences")
    if name == "seed":
        return int(st.number_input(label, 0, 2**31 - 1, int(default), key=key, help="seeds the random starts/search"))
    if name == "queries":
        return int(st.number_input(label, 1, 100_000, int(default), step=500, key=key,
                                   help="the black-box attack's budget of model queries"))
    if name == "p_init":
        return float(st.number_input(label, 0.01, 1.0, float(default), 0.05, key=key))
    if name == "eps":
        step = 1 / 255 if norm == "linf" else 0.05
        high = max_eps(norm or "linf", tuple(page.spec.input_shape))  # ℓ∞: 1; ℓ₂: sqrt(C·H·W)
        return float(st.number_input(label, 0.0, high, min(float(default), high), step, format="%.4f", key=key,
                                     help=f"default for {page.sel.dataset} ({norm}): {default:.4g}; "
                                          f"at most {high:.4g}"))
    if name == "alpha":
        value = st.number_input(label, 0.0, None, None, 0.001, format="%.4f", key=key,
                                placeholder="2.5·ε/steps", help="empty: 2.5·ε/steps")
        return None if value is None else float(value)
    if isinstance(default, int):
        high = {"restarts": MAX_RESTARTS, "search_steps": MAX_SEARCH_STEPS}.get(name, MAX_STEPS)
        return int(st.number_input(label, 1, high, min(int(default), high), key=key))
    return float(st.number_input(label, 0.0, None, float(default), format="%.4g", key=key))


def choose_attack(page):
    """Attack select box + its parameters -> (name, params dict, targets list or None)."""
    names = list(attacks.ATTACKS)
    cols = st.columns([2, 1, 3])
    name = cols[0].selectbox("Attack", names, index=names.index("pgd"), key="atk_name",
                             format_func=lambda n: attacks.ATTACKS[n].title)
    norm = None
    if "norm" in attacks.EXPOSED[name]:
        default_norm = attacks.default_params(name, page.sel.dataset)["norm"]
        norm = cols[1].selectbox("Norm", list(attacks.STEPS), index=list(attacks.STEPS).index(default_norm),
                                 key=f"atk_{name}_norm", format_func=norm_symbol)
    defaults = attacks.default_params(name, page.sel.dataset, norm)
    params = {"norm": norm} if norm else {}
    shown = [p for p in defaults if p != "norm"]
    widget_cols = st.columns(4)
    for i, pname in enumerate(shown):
        with widget_cols[i % 4]:
            params[pname] = param_widget(page, name, pname, defaults[pname], norm or "")
    targeted = params.get("targeted", getattr(attacks.ATTACKS[name], "targeted", False))
    targets = None
    if targeted:
        choice = st.selectbox("Target class", [RUNNER_UP] + list(range(len(page.spec.class_names))), key="atk_target",
                              format_func=lambda c: "runner-up (the clean 2nd most likely class)" if c == RUNNER_UP
                              else class_name(page, c))
        targets = None if choice == RUNNER_UP else [int(choice)]
    return name, params, targets


def craft_state(page, comparison, stem: str, stored=None) -> dict:
    """What the Craft view shows of a ``CraftComparison`` (its first image), the stored result, and
    each model's title and name (the stored request's names when the sidebar holds other models)."""
    slots = list(comparison.logits)
    if stored is None:
        titles = {slot: page.model_title(slot) for slot in slots}
        names = {slot: page.models[slot].name for slot in slots}
    else:
        titles = {slot: page.slot_title(stored.request, slot) for slot in slots}
        names = {slot: stored.request.models[stored.request.slots().index(slot)].name for slot in slots}
    return {"x": comparison.x[:1], "result": comparison.result, "probs": comparison.probabilities(0),
            "source": comparison.source, "label": int(comparison.result.labels[0]), "stem": stem, "stored": stored,
            "titles": titles, "names": names}


def stored_state(page, stored) -> dict:
    """The Craft view of a stored ``craft`` result."""
    return craft_state(page, stored.value(), f"{stored.request.dataset}_{stored.request.offset}", stored)


def linked_craft(page) -> dict | None:
    """The Craft view of a permalinked ``craft`` result, or None."""
    linked = page.linked.get(KIND)
    return None if linked is None else stored_state(page, linked)


def craft_stored(page, index: int, name: str, params: dict, source: str, targets) -> dict:
    """Craft on dataset image ``index``: one ``craft`` request (a stored result at once)."""
    request = CraftRequest(models=page.model_refs(), dataset=page.sel.dataset, attack=name,
                           params=attack_params(params), source="AB".index(source), offset=index,
                           target=targets[0] if targets else None)
    with st.spinner("Crafting…"):
        stored = run_analysis(request, loaded=list(page.models.values()), device=page.sel.device)
    return craft_state(page, stored.value(), f"{page.sel.dataset}_{index}", stored)


def craft_upload(page, x, name: str, params: dict, source: str, targets) -> dict:
    """Craft on an uploaded image (no label: the attacked model's prediction is used)."""
    attack = attacks.make_attack(name, page.sel.dataset, **params)
    comparison = attacks.craft_and_compare({slot: m.model for slot, m in page.models.items()}, source, x, None, attack,
                                           targets=targets,
                                           device=page.sel.device)
    return craft_state(page, comparison, "upload")


def verdicts(state: dict) -> dict:
    """Per model: clean and adversarial prediction and whether it was fooled (prediction changed)."""
    out = {}
    for slot, p in state["probs"].items():
        before, after = int(p["clean"].argmax()), int(p["adversarial"].argmax())
        out[slot] = {"clean": before, "adversarial": after, "fooled": before != after,
                     "correct_before": before == state["label"], "correct_after": after == state["label"]}
    return out


def verdict_text(page, v: dict) -> str:
    return "; ".join(f"{slot}: {class_name(page, r['clean'])} → {class_name(page, r['adversarial'])} "
                     f"({'fooled' if r['fooled'] else 'held'})" for slot, r in v.items())


def topk_frame(page, state: dict) -> pd.DataFrame:
    """Top-k classes per model and image (clean / adversarial) with their probabilities."""
    rows = []
    for slot, p in state["probs"].items():
        for image, probs in p.items():
            order = np.argsort(-probs)[:TOP_K]
            for rank, c in enumerate(order, start=1):
                rows.append({"model": state["titles"][slot], "image": image, "rank": rank,
                             "class": class_name(page, int(c)), "probability": float(probs[c])})
    return pd.DataFrame(rows)


def probability_figure(frame: pd.DataFrame) -> go.Figure:
    fig = px.bar(frame, x="class", y="probability", color="image", barmode="group", facet_col="model",
                 range_y=[0, 1.02], height=320)
    fig.update_xaxes(matches=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    fig.update_layout(margin={"t": 40})
    return fig


def summary_frame(page, state: dict, v: dict) -> pd.DataFrame:
    """One CSV row per model: crafted on, label, predictions, fooled, norms and the attack config."""
    result = state["result"]
    config = json.dumps(result.config)
    rows = []
    for slot, r in v.items():
        p = state["probs"][slot]
        rows.append({"model": slot, "name": state["names"][slot], "crafted_on": state["source"],
                     "label": class_name(page, state["label"]), "pred_clean": class_name(page, r["clean"]),
                     "p_clean": float(p["clean"].max()), "pred_adv": class_name(page, r["adversarial"]),
                     "p_adv": float(p["adversarial"].max()), "fooled": r["fooled"],
                     "linf": float(result.linf_norm[0]), "l2": float(result.l2_norm[0]), "attack": config})
        if result.queries is not None:
            rows[-1]["queries"] = int(result.queries[0])
    return pd.DataFrame(rows)


def npz_download(state: dict) -> bytes:
    arrays = result_arrays(state["result"], state["x"])
    for slot, p in state["probs"].items():
        for image, probs in p.items():
            arrays[f"probs_{slot}_{image}"] = probs.astype(np.float32)
    return npz_bytes(arrays)


def show_result(page, state: dict, stem: str) -> None:
    result = state["result"]
    v = verdicts(state)
    src, other = state["source"], "B" if state["source"] == "A" else "A"
    titles = state["titles"]
    headline = (f"Crafted on **{titles[src]}** — it "
                f"{'fools' if v[src]['fooled'] else 'does not fool'} {src}, and "
                f"{'transfers to' if v[other]['fooled'] else 'does not fool'} **{titles[other]}**.")
    st.markdown(headline)
    for slot, r in v.items():
        if not r["correct_before"]:
            st.warning(f"{titles[slot]} already misclassifies the clean image (it predicts "
                       f"{class_name(page, r['clean'])}, the label is {class_name(page, state['label'])}): "
                       "whether the attack \"fools\" it says little.")
    st.info(verdict_text(page, v))
    success = "reached" if bool(result.success[0]) else "did not reach"
    goal = "its target" if result.targets is not None else "a wrong class"
    st.caption(f"The attack {success} {goal} on {src} · ‖δ‖∞ = {float(result.linf_norm[0]):.4f} "
               f"({float(result.linf_norm[0]) * 255:.1f}/255) · ‖δ‖₂ = {float(result.l2_norm[0]):.4f}")
    if result.queries is not None:
        used = int(result.queries[0])
        st.caption(f"Black-box: the attack queried {src} **{used:,}** times (outputs only, no gradients; budget "
                   f"{result.config.get('queries', '?'):,})." if used else
                   f"Black-box: {src} already misclassifies this image, so the attack spent no queries.")
    if result.found_by is not None:
        index = int(result.found_by[0])
        names = result.config.get("attacks", [])
        found = names[index] if 0 <= index < len(names) else None
        st.caption(f"AutoAttack ({result.config.get('version')}): "
                   + (f"broken by **{found}**." if found else "no attack in the sequence broke it."))
    cols = st.columns(3)
    cols[0].image(eimages.to_uint8(state["x"][0]), caption=f"original (label {class_name(page, state['label'])})",
                  width=IMAGE_PX)
    cols[1].image(eimages.to_uint8(result.adv[0]), caption="adversarial", width=IMAGE_PX)
    cols[2].image(eimages.to_uint8(eimages.amplify(result.perturbation[0])),
                  caption="perturbation (amplified; grey = 0)", width=IMAGE_PX)
    frame = topk_frame(page, state)
    st.markdown(f"**Top-{TOP_K} probabilities before / after, both models**")
    st.plotly_chart(probability_figure(frame), key="atk_prob_chart")
    st.dataframe(frame, hide_index=True, key="atk_prob_table",
                 column_config={"probability": st.column_config.NumberColumn(format="%.3g")})
    summary = summary_frame(page, state, v)
    dl = st.columns(3)
    dl[0].download_button("Adversarial image (PNG)", partial(eimages.encode_png, result.adv[0]),  # made when clicked
                          file_name=f"adversarial_{stem}.png", mime="image/png", key="atk_dl_png")
    dl[1].download_button("Tensors (NPZ)", partial(npz_download, state), file_name=f"adversarial_{stem}.npz",
                          mime="application/octet-stream", key="atk_dl_npz")
    dl[2].download_button("Results (CSV)", summary.to_csv(index=False), file_name=f"attack_{stem}.csv",
                          mime="text/csv", key="atk_dl_csv")


def render(page):
    """Image, attack and Craft button, then the result: ``(attack name, params, stored result or None)``."""
    picked = pick_image(page)
    name, params, targets = choose_attack(page)
    source = st.radio("Craft against", ["A", "B"], horizontal=True, key="atk_against",
                      format_func=page.model_title)
    if picked is None:
        return name, params, None
    x, index, _ = picked
    if st.button("Craft", type="primary", key="atk_craft"):
        try:
            st.session_state["atk_state"] = (craft_upload(page, x, name, params, source, targets) if index is None
                                             else craft_stored(page, index, name, params, source, targets))
        except RobustScopeError as exc:
            common.show_error(exc)
    state = st.session_state.get("atk_state") or linked_craft(page)
    if state is not None:
        show_result(page, state, state["stem"])
    return name, params, state and state["stored"]


def render_stored(page, result) -> None:
    """A permalinked craft, shown without models A and B (nothing to run)."""
    state = stored_state(page, result)
    show_result(page, state, state["stem"])
