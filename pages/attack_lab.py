"""Attack Lab: craft an adversarial example on model A or B in one click and see whether it fools
both models (Szegedy et al. 2013; Goodfellow et al. 2015; Madry et al. 2018), plus an ε-sweep of
robust accuracy (A vs B) and the cross-model transfer matrix.

Each capability is one ``engine.analysis`` request, the same as ``python -m engine attack`` /
``sweep`` / ``transfer``: the craft of a dataset image runs here (a stored result at once); the
ε-sweep and the transfer matrix run here or as background jobs (measured estimate); every result
reopens from ``?result=<key>[,<key>…]``, also with no models chosen in the sidebar. An uploaded image has no request (it is not a dataset
image): it goes to ``engine.attacks.craft_and_compare`` directly."""
import json

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from engine import attacks
from engine import data as edata
from engine.analysis import CraftRequest, EpsSweepRequest, ModelRef, TransferRequest, attack_params, run_analysis
from engine import images as eimages
from engine.attacks.base import MAX_RESTARTS, MAX_SEARCH_STEPS, MAX_STEPS, max_eps
from engine.attacks.export import npz_bytes, result_arrays
from engine.errors import RobustScopeError
from engine import selection
from pages import analysis_ui, common

POOL = 256  # images the picker chooses from (first POOL of the test split)
TOP_K = 3
IMAGE_PX = 168  # rendered width of the image tiles
RUNNER_UP = -1  # target choice: the clean runner-up class
SIZES = [16, 32, 64, 128, 256]

st.title("Attack Lab")
st.caption(
    "Pick an image, craft an adversarial example against model A or B, and see whether it fools "
    "**both** models: standard models fall to tiny perturbations, adversarially trained ones hold "
    "(Szegedy et al. 2013, Goodfellow et al. 2015, Madry et al. 2018)."
)
sel = common.current_selection()
KINDS = (CraftRequest.kind, EpsSweepRequest.kind, TransferRequest.kind)
LINKED = analysis_ui.permalinked_by_kind(KINDS)  # ?result=<key>[,<key>…]
MODELS = {slot: m for slot, m in (("A", sel.a), ("B", sel.b)) if m is not None}
STORED_ONLY = len(MODELS) < 2 and bool(LINKED)  # a permalink opens without the sidebar's models
if not STORED_ONLY:
    common.require_models(sel, both=True)
    SPEC = common.require_compatible(sel, MODELS)
else:
    SPEC = edata.get_spec(next(iter(LINKED.values())).request.dataset)
CLASS_NAMES = list(SPEC.class_names)


def class_name(index: int) -> str:
    return CLASS_NAMES[index] if 0 <= index < len(CLASS_NAMES) else str(index)


def model_title(slot: str) -> str:
    """The sidebar's title of model ``slot``."""
    return selection.model_title(slot, MODELS[slot].card)


def slot_title(request, slot: str) -> str:
    """How a stored result's model ``slot`` is named: the sidebar's title when it is that model."""
    ref = request.models[request.slots().index(slot)]
    current = MODELS.get(slot)
    same = current is not None and (str(current.sha256), str(getattr(current, "branch", "main"))) == (ref.sha256, ref.branch)
    return model_title(slot) if same else f"{slot}: {ref.name}"


def model_refs() -> tuple[ModelRef, ...]:
    """The sidebar's models A and B as a request names them."""
    return tuple(ModelRef.from_loaded(m) for m in MODELS.values())


@st.cache_data(show_spinner="Loading images…", max_entries=8)
def pool_size(dataset: str) -> int:
    return min(POOL, len(edata.load_dataset(dataset, split="test")))


def pick_image():
    """Dataset index / random / upload -> (x (1,C,H,W) tensor, dataset index or None, description) or None."""
    source = st.radio("Image", ["Dataset image", "Upload (PNG/JPEG)"], horizontal=True, key="atk_source")
    if source == "Dataset image":
        images, labels = common.dataset_sample(sel.dataset, pool_size(sel.dataset))
        cols = st.columns([2, 1, 3])
        if cols[1].button("Random image", key="atk_random"):
            st.session_state["atk_index"] = int(np.random.default_rng().integers(len(images)))
        index = int(cols[0].number_input("Image index (test split)", 0, len(images) - 1, key="atk_index"))
        cols[2].markdown(f"True label: **{class_name(int(labels[index]))}**")
        return images[index:index + 1], index, f"{sel.dataset}_{index}"
    upload = st.file_uploader("PNG or JPEG (resized to the model's input "
                              f"{'×'.join(str(s) for s in SPEC.input_shape[1:])})",
                              type=["png", "jpg", "jpeg"], key="atk_upload")
    if upload is None:
        st.info("Upload an image, or switch to a dataset image.")
        return None
    try:
        x = eimages.decode_image(upload.getvalue(), tuple(SPEC.input_shape), name=upload.name)
    except RobustScopeError as exc:
        common.show_error(exc)
        return None
    st.caption("An upload has no true label: the attacked model's clean prediction is used as the label.")
    return x, None, "upload"


def param_widget(attack: str, name: str, default, norm: str):
    """One widget for an exposed attack parameter (keys include attack, dataset and norm, so the
    per-dataset default applies when they change)."""
    key = f"atk_{attack}_{name}_{sel.dataset}_{norm}"
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
        high = max_eps(norm or "linf", tuple(SPEC.input_shape))  # ℓ∞: 1; ℓ₂: sqrt(C·H·W)
        return float(st.number_input(label, 0.0, high, min(float(default), high), step, format="%.4f", key=key,
                                     help=f"default for {sel.dataset} ({norm}): {default:.4g}; at most {high:.4g}"))
    if name == "alpha":
        value = st.number_input(label, 0.0, None, None, 0.001, format="%.4f", key=key,
                                placeholder="2.5·ε/steps", help="empty: 2.5·ε/steps")
        return None if value is None else float(value)
    if isinstance(default, int):
        high = {"restarts": MAX_RESTARTS, "search_steps": MAX_SEARCH_STEPS}.get(name, MAX_STEPS)
        return int(st.number_input(label, 1, high, min(int(default), high), key=key))
    return float(st.number_input(label, 0.0, None, float(default), format="%.4g", key=key))


def choose_attack():
    """Attack select box + its parameters -> (name, params dict, targets list or None)."""
    names = list(attacks.ATTACKS)
    cols = st.columns([2, 1, 3])
    name = cols[0].selectbox("Attack", names, index=names.index("pgd"), key="atk_name",
                             format_func=lambda n: attacks.ATTACKS[n].title)
    norm = None
    if "norm" in attacks.EXPOSED[name]:
        default_norm = attacks.default_params(name, sel.dataset)["norm"]
        norm = cols[1].selectbox("Norm", list(attacks.STEPS), index=list(attacks.STEPS).index(default_norm),
                                 key=f"atk_{name}_norm", format_func={"linf": "ℓ∞", "l2": "ℓ₂"}.get)
    defaults = attacks.default_params(name, sel.dataset, norm)
    params = {"norm": norm} if norm else {}
    shown = [p for p in defaults if p != "norm"]
    widget_cols = st.columns(4)
    for i, pname in enumerate(shown):
        with widget_cols[i % 4]:
            params[pname] = param_widget(name, pname, defaults[pname], norm or "")
    targeted = params.get("targeted", getattr(attacks.ATTACKS[name], "targeted", False))
    targets = None
    if targeted:
        choice = st.selectbox("Target class", [RUNNER_UP] + list(range(len(CLASS_NAMES))), key="atk_target",
                              format_func=lambda c: "runner-up (the clean 2nd most likely class)" if c == RUNNER_UP
                              else class_name(c))
        targets = None if choice == RUNNER_UP else [int(choice)]
    return name, params, targets


def craft_state(comparison, stem: str, stored=None) -> dict:
    """What the Craft view shows of a ``CraftComparison`` (its first image), the stored result, and
    each model's title and name (the stored request's names when the sidebar holds other models)."""
    slots = list(comparison.logits)
    if stored is None:
        titles = {slot: model_title(slot) for slot in slots}
        names = {slot: MODELS[slot].name for slot in slots}
    else:
        titles = {slot: slot_title(stored.request, slot) for slot in slots}
        names = {slot: stored.request.models[stored.request.slots().index(slot)].name for slot in slots}
    return {"x": comparison.x[:1], "result": comparison.result, "probs": comparison.probabilities(0),
            "source": comparison.source, "label": int(comparison.result.labels[0]), "stem": stem, "stored": stored,
            "titles": titles, "names": names}


def linked_craft() -> dict | None:
    """The Craft view of a permalinked ``craft`` result, or None."""
    linked = LINKED.get(CraftRequest.kind)
    if linked is None:
        return None
    return craft_state(linked.value(), f"{linked.request.dataset}_{linked.request.offset}", linked)


def craft_stored(index: int, name: str, params: dict, source: str, targets) -> dict:
    """Craft on dataset image ``index``: one ``craft`` request (a stored result at once)."""
    request = CraftRequest(models=model_refs(), dataset=sel.dataset, attack=name, params=attack_params(params),
                           source="AB".index(source), offset=index, target=targets[0] if targets else None)
    with st.spinner("Crafting…"):
        stored = run_analysis(request, loaded=list(MODELS.values()), device=sel.device)
    return craft_state(stored.value(), f"{sel.dataset}_{index}", stored)


def craft_upload(x, name: str, params: dict, source: str, targets) -> dict:
    """Craft on an uploaded image (no label: the attacked model's prediction is used)."""
    attack = attacks.make_attack(name, sel.dataset, **params)
    comparison = attacks.craft_and_compare({slot: m.model for slot, m in MODELS.items()}, source, x, None, attack,
                                           targets=targets,
                                           device=sel.device)
    return craft_state(comparison, "upload")


def verdicts(state: dict) -> dict:
    """Per model: clean and adversarial prediction and whether it was fooled (prediction changed)."""
    out = {}
    for slot, p in state["probs"].items():
        before, after = int(p["clean"].argmax()), int(p["adversarial"].argmax())
        out[slot] = {"clean": before, "adversarial": after, "fooled": before != after,
                     "correct_before": before == state["label"], "correct_after": after == state["label"]}
    return out


def verdict_text(v: dict) -> str:
    return "; ".join(f"{slot}: {class_name(r['clean'])} → {class_name(r['adversarial'])} "
                     f"({'fooled' if r['fooled'] else 'held'})" for slot, r in v.items())


def topk_frame(state: dict) -> pd.DataFrame:
    """Top-k classes per model and image (clean / adversarial) with their probabilities."""
    rows = []
    for slot, p in state["probs"].items():
        for image, probs in p.items():
            order = np.argsort(-probs)[:TOP_K]
            for rank, c in enumerate(order, start=1):
                rows.append({"model": state["titles"][slot], "image": image, "rank": rank,
                             "class": class_name(int(c)), "probability": float(probs[c])})
    return pd.DataFrame(rows)


def probability_figure(frame: pd.DataFrame) -> go.Figure:
    fig = px.bar(frame, x="class", y="probability", color="image", barmode="group", facet_col="model",
                 range_y=[0, 1.02], height=320)
    fig.update_xaxes(matches=None)
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]))
    fig.update_layout(margin={"t": 40})
    return fig


def summary_frame(state: dict, v: dict) -> pd.DataFrame:
    """One CSV row per model: crafted on, label, predictions, fooled, norms and the attack config."""
    result = state["result"]
    config = json.dumps(result.config)
    rows = []
    for slot, r in v.items():
        p = state["probs"][slot]
        rows.append({"model": slot, "name": state["names"][slot], "crafted_on": state["source"],
                     "label": class_name(state["label"]), "pred_clean": class_name(r["clean"]),
                     "p_clean": float(p["clean"].max()), "pred_adv": class_name(r["adversarial"]),
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


def show_result(state: dict, stem: str) -> None:
    result = state["result"]
    v = verdicts(state)
    src, other = state["source"], "B" if state["source"] == "A" else "A"
    titles = state["titles"]
    headline = (f"Crafted on **{titles[src]}** — it "
                f"{'fools' if v[src]['fooled'] else 'does not fool'} {src}, and "
                f"{'transfers to' if v[other]['fooled'] else 'does not fool'} **{titles[other]}**.")
    st.markdown(headline)
    (st.error if any(r["fooled"] for r in v.values()) else st.success)(verdict_text(v))
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
    cols[0].image(eimages.to_uint8(state["x"][0]), caption=f"original (label {class_name(state['label'])})",
                  width=IMAGE_PX)
    cols[1].image(eimages.to_uint8(result.adv[0]), caption="adversarial", width=IMAGE_PX)
    cols[2].image(eimages.to_uint8(eimages.amplify(result.perturbation[0])),
                  caption="perturbation (amplified; grey = 0)", width=IMAGE_PX)
    frame = topk_frame(state)
    st.markdown(f"**Top-{TOP_K} probabilities before / after, both models**")
    st.plotly_chart(probability_figure(frame), key="atk_prob_chart")
    st.dataframe(frame, hide_index=True, key="atk_prob_table")
    summary = summary_frame(state, v)
    dl = st.columns(3)
    dl[0].download_button("Adversarial image (PNG)", eimages.encode_png(result.adv[0]),
                          file_name=f"adversarial_{stem}.png", mime="image/png", key="atk_dl_png")
    dl[1].download_button("Tensors (NPZ)", npz_download(state), file_name=f"adversarial_{stem}.npz",
                          mime="application/octet-stream", key="atk_dl_npz")
    dl[2].download_button("Results (CSV)", summary.to_csv(index=False), file_name=f"attack_{stem}.csv",
                          mime="text/csv", key="atk_dl_csv")


def craft_section():
    """Image, attack and Craft button, then the result: ``(attack name, params, stored result or None)``."""
    picked = pick_image()
    name, params, targets = choose_attack()
    source = st.radio("Craft against", ["A", "B"], horizontal=True, key="atk_against", format_func=model_title)
    if picked is None:
        return name, params, None
    x, index, _ = picked
    if st.button("Craft", type="primary", key="atk_craft"):
        try:
            st.session_state["atk_state"] = (craft_upload(x, name, params, source, targets) if index is None
                                             else craft_stored(index, name, params, source, targets))
        except RobustScopeError as exc:
            common.show_error(exc)
    state = st.session_state.get("atk_state") or linked_craft()
    if state is not None:
        show_result(state, state["stem"])
    return name, params, state and state["stored"]


def parse_eps(text: str) -> list:
    try:
        values = [float(t) for t in text.replace(";", ",").split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"could not read {text!r} as comma-separated numbers") from None
    return values


def sweep_section(name: str, params: dict):
    """The ε-sweep (one ``eps_sweep`` request, here or in the background): its stored result or None."""
    with st.expander("ε-sweep: robust accuracy of A vs B", expanded=EpsSweepRequest.kind in LINKED):
        norm = params.get("norm") or getattr(attacks.ATTACKS[name], "norm", "l2")
        base = attacks.default_eps(sel.dataset, norm)
        default = ", ".join(f"{base * f:.4g}" for f in (0, 0.25, 0.5, 1, 1.5, 2))
        st.caption(f"Attack: {attacks.ATTACKS[name].title} ({norm}) with the parameters above. Bounded attacks "
                   "rerun at each ε; minimal-norm attacks run once and count an image robust at ε when no "
                   "adversarial was found within ε.")
        cols = st.columns([3, 1, 1, 1])
        text = cols[0].text_input("ε values", default, key=f"atk_sweep_eps_{name}_{sel.dataset}_{norm}")
        n = cols[1].select_slider("Images", SIZES, value=64, key="atk_sweep_n")
        mode = analysis_ui.mode_picker(st, "atk_sweep_mode")
        shown = (LINKED.get(EpsSweepRequest.kind) or analysis_ui.job_status(EpsSweepRequest.kind)
                 or st.session_state.get("atk_sweep_result"))
        if cols[2].button("Run sweep", type="primary", key="atk_sweep_run"):
            try:
                swept = {k: v for k, v in params.items() if k != "eps"}
                request = EpsSweepRequest(models=model_refs(), dataset=sel.dataset, eps=tuple(parse_eps(text)),
                                          attack=name, params=attack_params(swept), n=int(n))
                with common.stop_button(cols[3], "atk_sweep_stop", "interrupts the sweep"):
                    shown = analysis_ui.run_or_queue(request, list(MODELS.values()), mode, "ε-sweep", sel.device)
            except RobustScopeError as exc:
                common.show_error(exc)
            except ValueError as exc:
                st.error(str(exc))
        if shown is not None:
            show_sweep(shown)
    return shown


def show_sweep(shown) -> None:
    """The ε-sweep chart and CSV of a stored ``eps_sweep`` result."""
    st.session_state["atk_sweep_result"] = shown
    frame = pd.DataFrame(shown.value().rows())
    frame["model"] = frame["model"].map(lambda slot: slot_title(shown.request, slot))
    st.session_state["atk_sweep"] = frame
    fig = px.line(frame, x="eps", y="robust_acc", color="model", markers=True, range_y=[0, 1.02],
                  labels={"eps": "ε", "robust_acc": "robust accuracy"}, height=360)
    st.plotly_chart(fig, key="atk_sweep_chart")
    st.download_button("Sweep (CSV)", frame.to_csv(index=False), file_name="eps_sweep.csv",
                       mime="text/csv", key="atk_sweep_csv")


def transfer_section(name: str, params: dict):
    """The transfer matrix (one ``transfer`` request, here or in the background): its stored result or None."""
    with st.expander("Transfer: crafted on A / B, evaluated on A / B", expanded=TransferRequest.kind in LINKED):
        st.caption("Rows: the model the examples were crafted on; columns: the model evaluated. The diagonal is "
                   "white-box; off-diagonal cells show how well examples transfer (Szegedy et al. 2013).")
        cols = st.columns([1, 1, 1, 3])
        n = cols[0].select_slider("Images", SIZES, value=64, key="atk_transfer_n")
        mode = analysis_ui.mode_picker(cols[3], "atk_transfer_mode")
        shown = (LINKED.get(TransferRequest.kind) or analysis_ui.job_status(TransferRequest.kind)
                 or st.session_state.get("atk_transfer_result"))
        if cols[1].button("Run transfer", type="primary", key="atk_transfer_run"):
            try:
                request = TransferRequest(models=model_refs(), dataset=sel.dataset, attack=name,
                                          params=attack_params(params), n=int(n))
                with common.stop_button(cols[2], "atk_transfer_stop"):
                    shown = analysis_ui.run_or_queue(request, list(MODELS.values()), mode, "transfer", sel.device)
            except RobustScopeError as exc:
                common.show_error(exc)
        if shown is not None:
            show_transfer(shown)
    return shown


def show_transfer(shown) -> None:
    """The transfer heatmap (accuracy or fooling rate) and CSV of a stored ``transfer`` result."""
    st.session_state["atk_transfer_result"] = shown
    res = shown.value()
    st.session_state["atk_transfer"] = res
    titles = [slot_title(shown.request, slot) for slot in res.names]
    metric = st.radio("Show", ["accuracy", "fooling rate"], horizontal=True, key="atk_transfer_metric")
    z = np.asarray(res.accuracy if metric == "accuracy" else res.fooling)
    fig = go.Figure(go.Heatmap(z=z, x=[f"evaluated on {s}" for s in titles],
                               y=[f"crafted on {s}" for s in titles], zmin=0, zmax=1,
                               colorscale="Viridis", text=np.round(z, 3), texttemplate="%{text}"))
    fig.update_layout(height=340, margin={"t": 30}, yaxis_autorange="reversed")
    st.plotly_chart(fig, key="atk_transfer_chart")
    frame = pd.DataFrame([{"crafted_on": src, "evaluated_on": dst, "accuracy": res.accuracy[i][j],
                           "fooling_rate": res.fooling[i][j], "n": res.n}
                          for i, src in enumerate(res.names) for j, dst in enumerate(res.names)])
    st.download_button("Transfer (CSV)", frame.to_csv(index=False), file_name="transfer_matrix.csv",
                       mime="text/csv", key="atk_transfer_csv")


def stored_only() -> None:
    """A permalink opened without models A and B in the sidebar: its stored views, nothing to run."""
    st.info("Showing stored results. Choose models A and B in the sidebar to craft, sweep or transfer anew.")
    state = linked_craft()
    if state is not None:
        show_result(state, state["stem"])
    if EpsSweepRequest.kind in LINKED:
        st.subheader("ε-sweep: robust accuracy")
        show_sweep(LINKED[EpsSweepRequest.kind])
    if TransferRequest.kind in LINKED:
        st.subheader("Transfer: crafted on / evaluated on")
        show_transfer(LINKED[TransferRequest.kind])
    analysis_ui.show_permalink(*LINKED.values())


if STORED_ONLY:
    stored_only()
    st.stop()
attack_name, chosen_params, crafted = craft_section()
st.divider()
shown = [crafted, sweep_section(attack_name, chosen_params), transfer_section(attack_name, chosen_params)]
if any(result is not None for result in shown):
    analysis_ui.show_permalink(*[result for result in shown if result is not None])
