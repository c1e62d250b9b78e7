"""UI helpers for stored analyses (``engine.analysis``): where to run, job progress, permalinks.

A page builds a request, then calls :func:`run_or_queue`: a stored result comes back at once; else
a measured estimate (a timed probe batch on the chosen models and device) decides whether it runs
here or as a background job (the user may force either). A queued job is tracked in the URL
(``?job=ID``) and its progress polled from any browser session; when it finishes the page shows
the result and the URL becomes the permalink ``?result=<key>``, which reopens the view from the
result store without computing anything.
"""
from __future__ import annotations

import os

import streamlit as st

from engine.analysis import (
    AnalysisResult,
    CorruptResult,
    ResultStore,
    cached_result,
    run_analysis,
    submit_analysis,
)
from engine.analysis.cost import BACKGROUND_ABOVE_S, estimate
from engine.errors import InvalidParameterError, RobustScopeError
from pages import common

RESULT_PARAM, JOB_PARAM = "result", "job"
MODES = ("auto", "here", "background")
MODE_LABELS = {"auto": f"auto (background above {BACKGROUND_ABOVE_S:.0f} s, measured)", "here": "here",
               "background": "in the background"}


def mode_picker(where, key: str) -> str:
    """Where to run: "auto" (measured estimate decides), "here" or "background"."""
    return where.radio("Run", MODES, format_func=MODE_LABELS.get, horizontal=True, key=key,
                       help="A background job keeps running when you close the tab; its result is stored "
                            "and opens again from the Results page or this page's link.")


def _autostart() -> bool:
    return os.environ.get("ROBUSTSCOPE_AUTOSTART_WORKER", "1") != "0"


def run_or_queue(request, loaded, mode: str, label: str, device: str = "auto") -> AnalysisResult | None:
    """The stored result of ``request``, or compute it here, or queue it (then None).

    Args:
        loaded: the request's models, already loaded (the sidebar's checkpoints), in order.
        mode: from :func:`mode_picker`.
    """
    found, note = cached_result(request.key(), ResultStore())
    if note:
        st.warning(note)
    if found is not None:
        return found
    cost = estimate(request, loaded)
    background = mode == "background" or (mode == "auto" and cost.background)
    if background:
        job = submit_analysis(request, device=device, submitter="dashboard",
                              start_worker=_autostart())
        st.query_params[JOB_PARAM] = str(job.id)
        st.query_params.pop(RESULT_PARAM, None)
        st.info(f"Queued as background job {job.id} (estimated {cost.describe()}). It keeps running when you close "
                "this tab; the **Results** page lists it when done.")
        return None
    st.caption(f"Running here: estimated {cost.describe()}.")
    progress, finish = common.progress_callback(label)
    try:
        return run_analysis(request, progress, loaded=loaded, device=device)
    finally:
        finish()


def auto_run(request, loaded, label: str, device: str = "auto", key: str = "analysis") -> AnalysisResult | None:
    """For views that compute as soon as they are shown: the stored result, else run here when
    the measured estimate is short, else offer **Run in background** (default) or **Run here**.

    Returns:
        The result, or None while it is queued / waiting for the user's choice.
    """
    found, note = cached_result(request.key(), ResultStore())
    if note:
        st.warning(note)
    if found is not None:
        return found
    job = _job_for(request.kind, request.key())
    if job is not None and job.status not in ("failed", "cancelled"):
        return job_status(request.kind, request.key())  # its result once done, else its progress
    if job is not None:
        st.warning(f"Background job {job.id} {job.status}" + (f": {job.error.strip().splitlines()[-1]}" if job.error else ""))
    cost = estimate(request, loaded)
    if not cost.background:
        progress, finish = common.progress_callback(label)
        try:
            return run_analysis(request, progress, loaded=loaded, device=device)
        finally:
            finish()
    st.info(f"This takes {cost.describe()}. A background job keeps running when you close the tab; its "
            "result is stored and opens again from here or the **Results** page.")
    c1, c2 = st.columns(2)
    if c1.button("Run in background", type="primary", key=f"{key}_background"):
        job = submit_analysis(request, device=device, submitter="dashboard", start_worker=_autostart())
        st.query_params[JOB_PARAM] = str(job.id)
        st.rerun()
    if c2.button("Run here", key=f"{key}_here"):
        progress, finish = common.progress_callback(label)
        try:
            return run_analysis(request, progress, loaded=loaded, device=device)
        finally:
            finish()
    return None


def _job_for(kind: str, key: str | None):
    """The job in ``?job=ID`` when it runs analysis ``kind`` (and request ``key``, when given)."""
    text = st.query_params.get(JOB_PARAM)
    if not text or not str(text).isdigit():
        return None
    from engine.jobs import JobStore

    try:
        job = JobStore().get(int(text))
    except RobustScopeError:
        return None
    if job.kind != kind or (key is not None and job.config.request.key() != key):
        return None
    return job


def permalinked(kind: str) -> AnalysisResult | None:
    """The stored result named by ``?result=<key>`` when it is a ``kind`` result (else None,
    with a message when the link is stale, damaged or for another page)."""
    key = st.query_params.get(RESULT_PARAM)
    if not key:
        return None
    try:
        result = ResultStore().load(key)
    except CorruptResult as exc:
        st.warning(f"The stored result `{key}` is damaged ({exc}); compute it again.")
        return None
    except InvalidParameterError as exc:
        st.warning(str(exc))
        return None
    if result is None:
        st.warning(f"No stored result `{key}` in this runs folder; compute it again.")
        return None
    if result.kind != kind:
        st.info(f"`?result={key}` is a {result.kind} result; open it from the **Results** page.")
        return None
    return result


def show_permalink(result: AnalysisResult) -> None:
    """Put the result's key in the URL and say how to share it."""
    st.query_params[RESULT_PARAM] = result.key
    st.query_params.pop(JOB_PARAM, None)
    how = "stored earlier" if result.cached else "computed now"
    st.caption(f"Result `{result.key}` ({how}, {result.seconds:.1f} s compute). Permalink: this page with "
               f"`?result={result.key}` reopens it; all stored results are on the **Results** page.")


def job_status(kind: str, key: str | None = None) -> AnalysisResult | None:
    """Follow the job in ``?job=ID`` (of analysis ``kind``; of request ``key`` when given): a
    progress line refreshed every 2 s; once it is done, its stored result (the URL then becomes
    its permalink)."""
    job = _job_for(kind, key)
    if job is None:
        return None
    if job.status == "done" and job.result_key:
        try:
            return ResultStore().load(job.result_key)
        except CorruptResult as exc:
            st.warning(f"Job {job.id}'s result is damaged ({exc}); compute it again.")
            return None
    _job_progress(job.id)
    return None


@st.fragment(run_every=2)
def _job_progress(job_id: int) -> None:
    from engine.jobs import JobStore

    store = JobStore()
    job = store.get(job_id)
    if job.status == "done":
        st.rerun()  # the page shows the result
    if job.status in ("failed", "cancelled"):
        st.error(f"Background job {job.id} {job.status}." + (f"\n\n```\n{job.error[-2000:]}\n```" if job.error else ""))
        return
    last = store.latest_progress(job.id)
    if last is not None and last.batches:
        eta = f", about {last.eta_s:.0f} s left" if last.eta_s is not None else ""
        st.progress(min(last.batch / last.batches, 1.0), text=f"Background job {job.id}: {last.batch}/{last.batches}{eta}")
    else:
        st.info(f"Background job {job.id} is {job.status}" +
                ("" if job.status == "running" else " (waiting for the analysis worker)"))
    if st.button("Cancel job", key=f"cancel_job_{job.id}"):
        store.cancel(job.id)
