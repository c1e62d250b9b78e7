"""Models page: the checkpoints available, their model cards, uploads and clean accuracy."""
import json

import pandas as pd
import streamlit as st

from engine import data as edata
from engine.data import imagenet as imagenet_data
from engine import models as emodels
from engine.evaluation import accuracy
from engine import selection
from engine.selection import incompatibility
from engine.uploads import ALLOW_PICKLE_ENV, MAX_UPLOAD_BYTES, install_upload, pickle_uploads_allowed
from pages import advprop_view, common

st.title("Models")
st.caption("Standard and robust checkpoints side by side: their model cards, and clean accuracy.")
sel = common.current_selection()
infos = common.checkpoint_listing()


def show_empty_state() -> None:
    """Tell a new user how to get a first checkpoint."""
    st.info(
        "**No checkpoint yet.** Get one in any of these ways:\n"
        "- train one on the **Training** page, or `python -m engine train --config cfg.json`;\n"
        "- upload one below (our `.safetensors` + `.json` card, or a PyTorch state dict with its "
        "architecture);\n"
        "- import one: `python -m engine import model.pt --arch small_cnn --dataset mnist`."
    )


def show_table() -> None:
    """A table of every checkpoint found, with its card's headline fields."""
    rows = []
    for info in infos:
        card = info.card
        if card is None:
            rows.append({"name": info.name, "problem": info.error, "path": str(info.path)})
            continue
        norm, eps = selection.threat_of(card)
        rows.append({
            "name": info.name, "dataset": card.dataset, "arch": card.arch,
            "method": card.training.method, "norm": norm, "ε": eps,
            "clean acc": card.metrics.clean_acc, "robust acc": card.metrics.robust_acc,
            "under": selection.describe_attack(card), "AutoAttack": card.metrics.autoattack_acc,
            "test images": card.metrics.n_images,
            "problem": getattr(info, "error", None), "path": str(info.path),
        })
    st.dataframe(pd.DataFrame(rows), hide_index=True)


def show_card(slot: str, loaded) -> None:
    """Model card of model ``slot`` with its key facts first."""
    st.subheader(f"Model {slot}")
    if loaded is None:
        st.write("— none selected —")
        return
    card = loaded.card
    branch = f" · `{loaded.branch}` BN branch" if loaded.branch != "main" else ""
    st.markdown(f"**{loaded.name}** · `{card.arch}` on `{card.dataset}`{branch} · trained: **{card.describe_recipe()}**")
    cols = st.columns(3)
    clean, robust, auto = card.metrics.clean_acc, card.metrics.robust_acc, card.metrics.autoattack_acc
    cols[0].metric("clean acc (card)", f"{clean:.2%}" if clean is not None else "—")
    cols[1].metric("PGD acc (card)", f"{robust:.2%}" if robust is not None else "—",
                   help=selection.describe_attack(card) or None)
    cols[2].metric("AutoAttack (card)", f"{auto:.2%}" if auto is not None else "—",
                   help="python -m engine evaluate --attack autoattack --record" if auto is None else
                   f"standard AutoAttack on {card.metrics.extra.get('autoattack', {}).get('n', '?')} test images")
    show_leaderboard(card)
    # drawn on demand: a card with a long training history is thousands of elements in every browser
    # that opens this page (6,200 of its 7,500 with the shipped pair), even folded in an expander
    if st.toggle("Full model card", key=f"full_card_{slot}"):
        table, raw = st.tabs(["Table", "JSON"])
        table.dataframe(pd.DataFrame(card_rows(card.to_dict())), hide_index=True, width="stretch")
        raw.json(card.to_dict())


def card_rows(card: dict, prefix: str = "") -> list[dict]:
    """The card's JSON as ``{"field", "value"}`` rows, nested fields dotted (``training.method``); a
    list of records (the per-epoch history) as its length."""
    rows = []
    for key, value in card.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows += card_rows(value, f"{name}.")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            rows.append({"field": name, "value": f"{len(value)} records (see JSON)"})
        else:
            text = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
            rows.append({"field": name, "value": "—" if text in (None, "", {}) else str(text)})
    return rows


def show_leaderboard(card) -> None:
    """A leaderboard's reported figures for an imported zoo model, beside (not as) our measurements."""
    board = (card.source or {}).get("leaderboard")
    if not isinstance(board, dict):
        return
    parts = []
    for key, label in (("clean_acc", "clean"), ("autoattack_acc", "AutoAttack"), ("corruptions_acc", "corruptions")):
        value = board.get(key)
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:.2%}")
    threat = f" at {board.get('norm', '')} ε={board['eps_text']}" if board.get("eps_text") else ""
    st.caption(f"Reported by the leaderboard{threat}: {', '.join(parts) or '—'} ({board.get('from', 'source unknown')}); "
               "not measured here.")


def upload_form() -> None:
    """Upload a checkpoint (with a card, or a state dict with its architecture)."""
    with st.expander("Upload a checkpoint"):
        st.caption(f"Files up to {MAX_UPLOAD_BYTES >> 30} GiB: `.safetensors` with our `.json` card, or a PyTorch "
                   "state dict (`.pt`, `.pth`, `.pth.tar`, `.ckpt`, `.bin`, robustness' `checkpoint.pt.best`).")
        weights = st.file_uploader("Weights", type=["safetensors", "pt", "pth", "tar", "ckpt", "bin", "best", "latest"],
                                   key="up_w")
        card = st.file_uploader("Model card (.json, optional for .safetensors from RobustScope)", type=["json"], key="up_c")
        c1, c2, c3 = st.columns(3)
        arch = c1.selectbox("Architecture (without a card)", list(emodels.ARCHITECTURES), key="up_arch",
                            help="For torchvision/timm models type their name in 'Other architecture'.")
        dataset = c2.selectbox("Dataset (without a card)", list(edata.DATASETS), key="up_ds")
        fmt = c3.selectbox("Format", ["auto", "plain", "torchvision", "timm", "robustness", "robustbench"], key="up_fmt")
        c4, c5 = st.columns(2)
        other_arch = c4.text_input("Other architecture (torchvision:NAME, timm:NAME or robustness' resnet50 ...)",
                                   key="up_arch_other")
        normalization = c5.text_input(
            "Normalisation (MEAN,..;STD,.. or none; empty: the file's, else the architecture's, else the dataset's)",
            key="up_norm",
        )
        name = st.text_input("Name (default: the file name; a taken name gets a -2, -3 ... suffix)", key="up_name")
        allow_pickle = False
        if pickle_uploads_allowed():
            allow_pickle = st.checkbox(
                "Allow arbitrary unpickling (DANGEROUS: only for files you trust)", key="up_pickle",
                help="Some old checkpoints need full pickle loading, which can run any code inside the file.",
            )
            if allow_pickle:
                st.warning("Loading with pickle runs code from the file on this server. Only do this for checkpoints you trust.")
        else:
            st.caption(
                "Checkpoints that need arbitrary unpickling (pickled Python objects, which could run code on this "
                f"server) are refused. The operator can allow them by starting the server with `{ALLOW_PICKLE_ENV}=1`, "
                "or convert such a file once with `python -m engine import FILE ... --allow-pickle` where it is trusted."
            )
        if st.button("Add checkpoint", disabled=weights is None, key="up_go"):
            try:
                path = install_upload(
                    weights.name, weights.getvalue(), card.getvalue() if card else None,
                    name=name or None, arch=other_arch.strip() or arch, dataset=dataset, fmt=fmt,
                    allow_pickle=allow_pickle, normalization=normalization or None,
                )
            except Exception as exc:  # shown to the user; nothing was saved
                common.show_error(exc)
            else:
                common.checkpoint_listing.clear()
                renamed = f" (`{name}` was taken)" if name and path.stem != name else ""
                st.success(f"Saved {path.name}{renamed}; pick it in the sidebar.")


def evaluate_pair() -> None:
    """Clean accuracy of A and B on N test images of the chosen dataset, with progress."""
    st.subheader(f"Clean accuracy on `{sel.dataset}`")
    n = common.image_count(st, "Test images", sel.dataset, 10, 100_000, 1000, key="eval_n")
    if not st.button("Evaluate A and B", key="eval_go"):
        shown = st.session_state.get("models_eval")
        if shown:
            st.dataframe(pd.DataFrame(shown), hide_index=True)
        return
    results = []
    try:
        spec = edata.get_spec(sel.dataset)
        dataset = None if sel.dataset == "imagenet" else edata.load_dataset(sel.dataset, split="test")
        for slot, loaded in (("A", sel.a), ("B", sel.b)):
            if loaded is None:
                continue
            if sel.dataset == "imagenet":  # each model at the preprocessing its card records
                dataset = edata.load_dataset("imagenet", split="test", **imagenet_data.loader_options(loaded.card))
                spec = dataset.spec
            problem = incompatibility(loaded.card, spec)
            if problem:
                st.warning(f"Model {slot}: {problem}")
                continue
            update, finish = common.progress_callback(f"Model {slot}")
            res = accuracy(loaded.model, dataset, n=int(n), device=sel.device, progress=update)
            finish()
            results.append({"model": slot, "name": loaded.name, "clean acc": res.accuracy,
                            "images": res.total, "seconds": round(res.seconds, 2)})
    except Exception as exc:
        common.show_error(exc)
    st.session_state["models_eval"] = results
    if results:
        st.dataframe(pd.DataFrame(results), hide_index=True)
        st.download_button("Download CSV", pd.DataFrame(results).to_csv(index=False), "clean_accuracy.csv", "text/csv")


if sel.notice:
    st.info(sel.notice)
if not infos:
    show_empty_state()
else:
    show_table()
    left, right = st.columns(2)
    with left:
        show_card("A", sel.a)
    with right:
        show_card("B", sel.b)
    if sel.a is not None or sel.b is not None:
        evaluate_pair()
advprop_view.show_advprop_comparison(infos, sel.device)  # (a permalinked comparison shows without checkpoints)
upload_form()
st.download_button(
    "Download the listing (JSON)",
    json.dumps([{"path": str(i.path), "card": i.card.to_dict() if i.card else None, "problem": i.error}
                for i in infos], indent=2, default=str),
    "checkpoints.json", "application/json",
)
from pages.report_view import report_section; report_section(sel)  # noqa: E702 (the robustness report)
