"""Thin UI helpers shared by every page: the sidebar selection, cached engine calls, messages.

Pages call ``current_selection()`` first, then the engine through the cached helpers here. No
model math lives here; it only caches and renders.
"""
from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import streamlit as st

import engine
from engine import checkpoints as ckpt
from engine import data as edata
from engine import device as edevice
from engine.catalogue import BN_BRANCHES
from engine.data.registry import NOT_DOWNLOADABLE
from engine.errors import InvalidParameterError, RobustScopeError
from engine.selection import check_compatible, choose_default, describe_recipe, pair_for

SELECTION_KEY = "robustscope_selection"


@dataclass
class Selection:
    """What the sidebar chose: models A and B (``LoadedCheckpoint`` or None), dataset, device."""

    a: Any
    b: Any
    a_path: str | None
    b_path: str | None
    dataset: str
    device: str
    notice: str = ""


@st.cache_resource(show_spinner="Loading checkpoint…", max_entries=8)
def _cached_checkpoint(path: str, mtime: float, device: str, branch: str = "main"):
    """Load a checkpoint once per (path, file version, device, BN branch)."""
    return engine.load(path, device=device, bn_branch=branch)


def load_checkpoint(path: str, device: str = "cpu", branch: str = "main"):
    """Load (and cache) the checkpoint at ``path`` on ``device``, using BatchNorm ``branch``
    ("aux" only for AdvProp models); errors are RobustScopeErrors."""
    card = Path(path).with_suffix(".json")
    mtime = card.stat().st_mtime if card.exists() else 0.0
    return _cached_checkpoint(str(path), mtime, device, branch)


@st.cache_data(show_spinner="Loading images…", max_entries=16)
def dataset_sample(name: str, n: int, seed: int | None = None, split: str = "test", **options):
    """``(images (n,C,H,W) in [0,1], labels (n,))`` from dataset ``name`` (first n, or seeded)."""
    dataset = edata.load_dataset(name, split=split, **options)
    return edata.take(dataset, n, seed=seed)


@st.cache_resource(show_spinner="Opening the dataset…", max_entries=8)
def dataset_stream(name: str, n: int, seed: int | None = None, split: str = "test"):
    """The ``n`` images ``dataset_sample`` would return, as an ``engine.data.Sample`` read one batch
    at a time (for analyses whose memory must not grow with ``n``)."""
    return edata.Sample(edata.load_dataset(name, split=split), n, seed=seed)


@st.cache_data(ttl=5, show_spinner=False)
def _listing(roots: tuple[str, ...]) -> list:
    return ckpt.list_checkpoints(list(roots))


def checkpoint_listing() -> list:
    """All checkpoints with their cards (refreshed every few seconds so new ones appear)."""
    return _listing(tuple(str(r) for r in ckpt.default_roots()))


checkpoint_listing.clear = _listing.clear


@st.cache_data(ttl=30, show_spinner=False)
def _availability(root: str) -> dict[str, bool]:
    return {name: edata.dataset_available(name) for name in edata.DATASETS}


def dataset_availability() -> dict[str, bool]:
    """Dataset name -> whether its files are present under the data root."""
    return _availability(str(edata.data_root()))


def show_error(exc: BaseException) -> None:
    """Show a user error plainly and anything unexpected with its traceback."""
    if isinstance(exc, RobustScopeError):
        st.error(str(exc), icon="⚠️")
    else:
        st.exception(exc)


#: the dashboard's pages in menu order: (script, title, icon); ``app.py`` builds the navigation from it
PAGES = [
    ("pages/models.py", "Models", ":material/inventory_2:"),
    ("pages/attack_lab.py", "Attack Lab", ":material/bolt:"),
    ("pages/representations.py", "Representations (CKA)", ":material/grid_on:"),
    ("pages/saliency.py", "Saliency", ":material/gradient:"),
    ("pages/features.py", "Features", ":material/visibility:"),
    ("pages/generalisation.py", "Generalisation", ":material/shape_line:"),
    ("pages/training.py", "Training", ":material/model_training:"),
    ("pages/results.py", "Results", ":material/folder_open:"),
]


def page_title(page: str) -> str:
    """The menu title of ``page`` (its URL path, e.g. ``attack_lab`` -> "Attack Lab")."""
    return next((title for path, title, _ in PAGES if path == f"pages/{page}.py"), page.replace("_", " ").title())


@st.cache_data(ttl=60, show_spinner=False)
def split_size(dataset: str, split: str = "test") -> int | None:
    """How many images the dataset's split holds (None when it cannot be read here)."""
    try:
        return len(edata.load_dataset(dataset, split=split))
    except RobustScopeError:
        return None


def image_count(where, label: str, dataset: str, low: int, high: int, value: int, key: str,
                step: int = 100, split: str = "test", help: str | None = None) -> int:
    """A number input for a count of the split's images, capped at the split's size (said in the
    help) before anything is run or queued; a value the user chose earlier is capped too."""
    size = split_size(dataset, split)
    top = max(1, min(high, size)) if size else high
    low = min(low, top)
    if isinstance(st.session_state.get(key), (int, float)) and st.session_state[key] > top:
        st.session_state[key] = top
    note = f"the {dataset} {split} split holds {size:,} images" if size else None
    return int(where.number_input(label, min_value=low, max_value=top, value=min(value, top), step=step, key=key,
                                  help="; ".join(t for t in (help, note) if t) or None))


def image_slider(where, label: str, dataset: str, options: list[int], value: int, key: str,
                 split: str = "test", help: str | None = None) -> int:
    """A select slider of image counts, none above the split's size (the size itself when the
    split is smaller than the smallest); a count chosen earlier that no longer fits is replaced."""
    size = split_size(dataset, split)
    choices = [n for n in options if not size or n <= size] or [size]
    default = max((n for n in choices if n <= value), default=choices[0])
    if key in st.session_state and st.session_state[key] not in choices:
        st.session_state[key] = default
    if len(choices) == 1:
        where.caption(f"{label}: {choices[0]} (the {dataset} {split} split holds {size})")
        return choices[0]
    return where.select_slider(label, choices, value=default, key=key, help=help)


def progress_callback(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A ``progress(done, total)`` callback drawing a progress bar with the time left (measured
    from the steps done so far), and a ``finish()`` to clear it."""
    bar = st.progress(0.0, text=label)
    start = time.monotonic()

    def update(done: int, total: int) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{label} {done}/{total}{eta_text(start, done, total)}")

    return update, bar.empty


def eta_text(start: float, done: int, total: int) -> str:
    """`` · about N s left`` from the rate since ``start`` (monotonic seconds); empty before the
    first step or after the last."""
    if done <= 0 or done >= total:
        return ""
    left = (time.monotonic() - start) * (total - done) / done
    return f" · about {left:.0f} s left" if left < 120 else f" · about {left / 60:.0f} min left"


#: seconds between a live panel's refreshes while what it shows is moving (jobs queued or running),
#: and while nothing is (a job queued from another tab or the CLI still shows up within this)
LIVE_REFRESH_S, IDLE_REFRESH_S = 3, 30


def live_panel(draw: Callable[[], bool], moving: bool) -> None:
    """Draw ``draw`` in a fragment that redraws itself every ``LIVE_REFRESH_S`` seconds while
    ``moving`` and every ``IDLE_REFRESH_S`` seconds otherwise.

    ``draw`` returns whether what it showed is moving now; when that is no longer ``moving`` the
    whole page reruns, so the pace follows (and what the rest of the page shows, e.g. a finished
    job's result, is drawn afresh). Twenty idle tabs polling every 3 s kept a 2-core server busy.
    """
    def panel() -> None:
        if draw() != moving:
            st.rerun()

    panel.__module__, panel.__qualname__ = draw.__module__, f"live_panel.{draw.__qualname__}"
    st.fragment(panel, run_every=LIVE_REFRESH_S if moving else IDLE_REFRESH_S)()


def jobs_moving(store, jobs: list) -> bool:
    """Whether any of ``jobs`` (of the job store ``store``) is queued, running, or interrupted with
    a worker to take it up again: what a :func:`live_panel` of them should follow closely."""
    workers = store.workers()
    return any(job.status in ("queued", "running", "interrupted") and store.lost_reason(job, workers) is None
               for job in jobs)


@contextmanager
def stop_button(where: Any, key: str, help: str = "interrupts the computation") -> Iterator[None]:
    """A Stop button in ``where`` (``st`` or a column) while the block runs, removed when it ends.

    Clicking it reruns the page, which interrupts the running script; a finished (or failed) run
    removes the button, so no Stop is left on screen for a run that is over.
    """
    slot = where.empty()
    slot.button("Stop", key=key, help=help)
    try:
        yield
    finally:
        slot.empty()


def _label(info) -> str:
    """A select-box label for a checkpoint listing: name, dataset and training recipe."""
    return f"{info.name} · {info.card.dataset or '?'} · {describe_recipe(info.card)}"


def _pick_model(slot: str, infos: list, default: str | None) -> str | None:
    """A sidebar select box for model ``slot`` ("A" or "B"); returns the chosen path."""
    paths = [str(i.path) for i in infos]
    labels = {str(i.path): _label(i) for i in infos}
    if not paths:
        return None
    key = f"model_{slot.lower()}"
    index = _current_index(key, default, paths)
    return st.sidebar.selectbox(f"Model {slot}", paths, index=index, format_func=labels.get, key=key)


def _current_index(key: str, default, options: list) -> int:
    """The widget's current choice (or ``default`` before it has one) as an index into ``options``."""
    for value in (st.session_state.get(key), default):
        if value in options:
            return options.index(value)
    return 0


def _pick_branch(slot: str, infos: list, path: str | None) -> str:
    """A BatchNorm-branch choice under model ``slot`` when it is an AdvProp (dual-BN) model."""
    card = next((i.card for i in infos if str(i.path) == path), None)
    if card is None or not card.dual_bn:
        return "main"
    return st.sidebar.radio(
        f"BN branch of {slot}", list(BN_BRANCHES), key=f"branch_{slot.lower()}", horizontal=True,
        help="AdvProp models normalise clean images with the main BatchNorm and adversarial ones with "
             "the auxiliary BatchNorm; inspect either (Xie et al. 2019).",
    )


def _follow_model_a(infos: list, a_path: str | None) -> None:
    """When the user picks another model A, the dataset follows it, and model B becomes the
    partner from that dataset's default pair (robust for a standard A, else standard) when B was
    trained on another dataset — each unless the user changed it in the same step. Runs before
    the dataset and B widgets are drawn; :func:`_remember_sidebar` records what was shown."""
    seen = st.session_state.get(_SEEN)
    card = next((i.card for i in infos if str(i.path) == a_path), None)
    if seen is None or seen["a"] == a_path or card is None or card.dataset not in edata.DATASETS:
        return
    if st.session_state.get("dataset") == seen["dataset"]:
        st.session_state["dataset"] = card.dataset
    b_path = st.session_state.get("model_b")
    b_card = next((i.card for i in infos if str(i.path) == b_path), None)
    if b_path != seen["b"] or (b_card is not None and b_card.dataset == card.dataset):
        return
    standard, robust = pair_for(card.dataset, infos)
    partner = robust if standard == a_path or card.training.method == "standard" else standard
    if partner is not None:
        st.session_state["model_b"] = partner


def _remember_sidebar(a_path: str | None, b_path: str | None, dataset: str) -> None:
    st.session_state[_SEEN] = {"a": a_path, "b": b_path, "dataset": dataset}


_SEEN = "_sidebar_seen"  # session: the models and dataset the sidebar showed last


def _load_or_report(path: str | None, device: str, branch: str = "main"):
    """Load the chosen checkpoint, showing (not raising) a user error in the sidebar."""
    if path is None:
        return None
    try:
        loaded = load_checkpoint(path, device, branch)
        if loaded.branch != "main":
            st.sidebar.caption(f"{loaded.name}: evaluated through its `{loaded.branch}` BatchNorm branch")
        return loaded
    except RobustScopeError as exc:
        st.sidebar.error(f"{Path(path).name}: {exc}")
        return None


def sidebar() -> Selection:
    """Render the shared sidebar (models A/B, dataset, device) and remember the selection."""
    infos = [i for i in checkpoint_listing() if not getattr(i, "error", None)]
    available = dataset_availability()
    default = choose_default(infos, available)
    st.sidebar.header("Models")
    a_path = _pick_model("A", infos, default.a)
    a_branch = _pick_branch("A", infos, a_path)
    _follow_model_a(infos, a_path)
    b_path = _pick_model("B", infos, default.b)
    b_branch = _pick_branch("B", infos, b_path)
    names = list(edata.DATASETS)
    a_card = next((i.card for i in infos if str(i.path) == a_path), None)
    wanted = (a_card.dataset if a_card is not None else None) or default.dataset
    dataset = st.sidebar.selectbox("Dataset", names, index=_current_index("dataset", wanted, names), key="dataset")
    notice = default.reason if dataset == default.dataset else ""
    if not available.get(dataset, False) and dataset != "shapes":
        fetch = ("it is never downloaded: put its files there by hand (pages that need images say what is "
                 "expected)" if dataset in NOT_DOWNLOADABLE else "pages will try to download it and say so if that fails")
        notice = f"`{dataset}` files were not found under {edata.data_root()} (set ROBUSTSCOPE_DATA); {fetch}."
    devices = ["auto", "cpu"] + (["cuda"] if edevice.resolve_device("auto").type == "cuda" else [])
    _remember_sidebar(a_path, b_path, dataset)
    device_name = st.sidebar.selectbox("Device", devices, key="device")
    device = str(edevice.resolve_device(device_name))
    if notice:
        st.sidebar.info(notice)
    return Selection(
        _load_or_report(a_path, device, a_branch), _load_or_report(b_path, device, b_branch), a_path, b_path,
        dataset, device, notice,
    )


_imports_frozen = False  # once per server process


def freeze_imports() -> None:
    """Once per server process, before any page runs: hand every object alive now (the imported
    modules and their tables: torch, pandas, the engine … 3.5 million objects) to ``gc.freeze``, so
    that the collector's full passes visit only what sessions create (0.19 s held with the
    interpreter locked → microseconds)."""
    global _imports_frozen
    if not _imports_frozen:
        _imports_frozen = True
        gc.collect()
        gc.freeze()


_legacy_mode_checked = False  # once per server process: the mode is decided at the first run


def _leave_legacy_page_discovery() -> None:
    """Route a deep link through ``app.py`` when Streamlit ran a page file directly.

    With a ``pages/`` folder beside the entry script, the first run of a fresh server is made in
    Streamlit's legacy multipage mode (every ``pages/*.py`` becomes a page, ``common.py`` too), and
    a deep link such as ``/attack_lab`` then runs the page without ``app.py``, so ``st.navigation``
    never switches that mode off. Switching it off and rerunning lets ``app.py`` resolve the same
    URL. (Streamlit 1.67 keeps the flag on ``PagesManager``; ``st.navigation`` clears it too.)
    """
    global _legacy_mode_checked
    if _legacy_mode_checked:
        return
    _legacy_mode_checked = True
    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory and SELECTION_KEY not in st.session_state:
        PagesManager.uses_pages_directory = False
        st.rerun()


def current_selection() -> Selection:
    """The selection the app's sidebar made in this run (``app.py`` stores it under
    ``SELECTION_KEY`` and clears it after the page ran); a page run on its own renders the sidebar
    itself. Call it at the top of a page, not inside an ``st.fragment``."""
    _leave_legacy_page_discovery()
    sel = st.session_state.get(SELECTION_KEY)
    return sel if sel is not None else sidebar()


def require_models(sel: Selection, both: bool = True) -> None:
    """Stop the page with an empty-state message when model A (and B, if ``both``) is missing."""
    missing = [slot for slot, m in (("A", sel.a), ("B", sel.b)) if m is None and (both or slot == "A")]
    if missing:
        st.info(
            f"Choose model {' and '.join(missing)} in the sidebar. No checkpoint yet? Add one on "
            "the **Models** page (upload), train one on the **Training** page, or see the README "
            "(`python -m engine models`)."
        )
        st.stop()


def require_compatible(sel: Selection, models: dict, classes: bool = True):
    """The chosen dataset's spec; stops the page with a message when a model cannot run on it.

    Args:
        models: slot ("A"/"B") -> ``LoadedCheckpoint`` of the models the page uses.
        classes: a different class count stops the page too (``True``), or is only a warning
            (``False``: label-free views such as CKA; the input shape must still match).
    """
    try:
        spec = edata.get_spec(sel.dataset)
    except RobustScopeError as exc:
        show_error(exc)
        st.stop()
    for slot, loaded in models.items():
        try:
            notes = check_compatible([loaded], spec, classes=classes)
        except InvalidParameterError as exc:
            st.warning(f"Model {slot}: {exc}")
            st.stop()
        for note in [] if classes else notes:
            st.warning(f"Model {slot}: {note} (shown anyway: this view does not use the labels)")
    return spec
