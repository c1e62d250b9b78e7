"""Results: every stored analysis (CKA maps, OOD suites, feature top-k and lucent images ...) and the
analysis jobs.

Reads ``<runs>/results`` (``engine.analysis.ResultStore``) and the job store; opening a result goes
to its page with ``?result=<key>`` (the permalink), which renders it without computing anything.
Job progress is read from the job store, so any browser session sees it, and a job finishes
whether or not a tab is open.
"""
from __future__ import annotations

import importlib
import json
from datetime import datetime

import pandas as pd
import streamlit as st

from engine.analysis import ANALYSES, CorruptResult, ResultStore
from engine.analysis.base import finite
from engine.errors import RobustScopeError
from pages.analysis_ui import show_store_notices
from pages.common import jobs_moving, live_panel, page_title

st.title("Results")
st.caption("Every analysis run here, from the CLI (`python -m engine cka ...`) or as a background job is stored "
           "under the runs folder and opens again at once. Same request + same weights + same engine version "
           "= same result.")


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S") if stamp else "?"


def analysis_jobs(store) -> list:
    """The 30 newest analysis jobs (the store's failures raise ``RobustScopeError``); a job whose
    worker died shows as interrupted, with why, not "running"."""
    store.recover()
    return store.list(limit=30, lane="analysis")


def jobs_view() -> bool:
    """Queued, running and recent analysis jobs with their progress; whether any is moving (see
    ``common.live_panel``: refreshed every 3 s while one is, every 30 s otherwise)."""
    from engine.jobs import JobStore

    try:
        store = JobStore()
        jobs = analysis_jobs(store)
    except RobustScopeError as exc:
        st.warning(str(exc))
        return False
    show_store_notices(store)
    if not jobs:
        st.caption("No analysis jobs yet: choose **Run: in the background** on a page, or "
                   "`python -m engine cka ... --background`.")
        return False
    rows = []
    for job in jobs:
        last = store.latest_progress(job.id) if job.status == "running" else None
        rows.append({"job": job.id, "status": job.status, "what": job.name,
                     "progress": f"{last.batch}/{last.batches}" if last is not None and last.batches else "",
                     "queued": _when(job.created), "result": job.result_key or ""})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    active = [j for j in jobs if j.status in ("queued", "running", "interrupted")]
    for reason in filter(None, map(store.lost_reason, active)):
        st.warning(reason)
    for job in active:
        last = store.latest_progress(job.id)
        if job.status == "running" and last is not None and last.batches:
            st.progress(min(last.batch / last.batches, 1.0), text=f"job {job.id}: {job.name}")
        if st.button(f"Cancel job {job.id}", key=f"results_cancel_{job.id}"):
            store.cancel(job.id)
    return jobs_moving(store, jobs)


def jobs_moving_now() -> bool:
    """Whether an analysis job is moving now (False when the job store cannot be read: the panel says why)."""
    from engine.jobs import JobStore

    try:
        store = JobStore()
        return jobs_moving(store, analysis_jobs(store))
    except RobustScopeError:
        return False


st.subheader("Background analysis jobs")
live_panel(jobs_view, moving=jobs_moving_now())


def leaderboard_view() -> None:
    """Our AutoAttack figures of imported RobustBench models beside the leaderboard's (``evaluate
    --zoo``), when there are any."""
    from engine.analysis.zoo import leaderboard

    rows = leaderboard()
    if not rows:
        return
    st.subheader("RobustBench zoo: ours vs the leaderboard")
    st.dataframe(pd.DataFrame([{
        "model": r["name"], "dataset": f"{r['dataset']} {r['threat']}", "images": r["n"], "ε": r["eps"],
        "clean (ours)": r["clean_acc"], "clean (reported)": r["reported_clean_acc"],
        "AutoAttack (ours)": r["robust_acc"], "AutoAttack (reported)": r["reported_autoattack_acc"],
        "Δ": r["difference"], "flags": "; ".join(r["flags"]), "result": r["result"]} for r in rows]),
        hide_index=True, width="stretch")
    st.caption("Reported figures are RobustBench's on the whole test split; ours are on the images evaluated "
               "(`python -m engine evaluate --zoo DATASET/THREAT --background` evaluates a whole zoo).")


leaderboard_view()

st.subheader("Stored results")
store = ResultStore()
entries = store.list()
if not entries:
    st.info("No stored results yet. Compute CKA on **Representations (CKA)**, the OOD suite on **Generalisation** "
            "or top-k images on **Features**; each result is stored here.")
    st.stop()
table = pd.DataFrame([{
    "when": _when(e.created), "what": ANALYSES[e.kind].title if e.kind in ANALYSES else e.kind,
    "details": e.title if e.error is None else f"damaged: {e.error}", "models": ", ".join(e.models),
    "compute s": round(e.seconds, 1), "key": e.key} for e in entries])
st.dataframe(table, hide_index=True, width="stretch")

keys = [e.key for e in entries if e.error is None]
if not keys:
    st.warning("Every stored entry is damaged; they are recomputed when their request runs again.")
    st.stop()
wanted = st.query_params.get("result")
key = st.selectbox("Open", keys, index=keys.index(wanted) if wanted in keys else 0,
                   format_func=lambda k: next(f"{_when(e.created)} · {e.title}" for e in entries if e.key == k),
                   key="results_pick")
try:
    result = store.load(key)
except CorruptResult as exc:
    st.warning(f"This stored result is damaged ({exc}); run its request again to recompute it.")
    st.stop()
analysis = ANALYSES[result.kind]
link = f"/{analysis.page}?result={result.key}"
where = f" · permalink: [`{link}`]({link})" if analysis.permalink else ""
st.markdown(f"**{result.request.describe()}**  \ncomputed {_when(result.created)} in {result.seconds:.1f} s "
            f"(engine {result.version}){where}")
if analysis.view is not None:
    importlib.import_module(analysis.view).render(result)
elif analysis.permalink and st.button(f"Open on the {page_title(analysis.page)} page", key="results_open",
                                           type="primary"):
    try:
        st.switch_page(f"pages/{analysis.page}.py", query_params={"result": result.key})
    except st.errors.StreamlitAPIException:
        st.info(f"Open {link} (this page runs outside the app's navigation).")
elif not analysis.permalink:
    st.caption(f"The {page_title(analysis.page)} page reads this result back when you ask for the same thing there "
               "(same models, image or layer, and settings); the numbers are in the JSON below.")
report = finite(analysis.report(result))
st.download_button("Download (JSON)", json.dumps(report, indent=2, default=str), f"{result.kind}-{result.key}.json",
                   "application/json", key="results_json")
with st.expander("Request"):
    st.json(result.request.to_dict())
