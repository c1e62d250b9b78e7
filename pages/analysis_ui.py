"""UI helpers for stored analyses (``engine.analysis``): where to run, job progress, permalinks.

A page builds a request, then calls :func:`run_or_queue`: a stored result comes back at once; else
a measured estimate (a timed probe batch on the chosen models and device) decides whether it runs
here or as a background job (the user may force either). A queued job is tracked in the URL
(``?job=ID``) and its progress polled from any browser session; when it finishes the page shows
the result and the URL becomes the permalink ``?result=<key>``, which reopens the view from the
result store without computing anything. A view made of several results (one per model, e.g. the
Features page's top-k and lucent images) names them all: :func:`run_or_queue_all` queues
``?job=ID,ID``, :func:`job_statuses` follows them, :func:`permalinked_all` reads ``?result=K1,K2``;
these take one analysis kind or a tuple of the kinds such a view is made of. A followed job whose
worker died with none to take it up is shown as lost, in one sentence, with a Resume button
(never as "running" with a frozen ETA), and a damaged job store that was moved aside is said as a
warning (:func:`show_store_notices`).
"""
from __future__ import annotations

import os

import streamlit as st

from engine.analysis import AnalysisResult, CorruptResult, ResultStore, cached_result, run_analysis
from engine.jobs import submit
from engine.analysis.cost import BACKGROUND_ABOVE_S, CostEstimate, estimate
from engine.errors import InvalidParameterError, RobustScopeError
from engine.jobs.store import FINISHED
from pages import common

RESULT_PARAM, JOB_PARAM = "result", "job"
#: views that compute on display run by themselves only when the estimate is at most this (seconds)
AUTO_RUN_S = 1.0
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


def _listed(param: str) -> list[str]:
    """The comma-separated values of query parameter ``param`` (a view of several results names
    them all: ``?result=K1,K2``, ``?job=3,4``)."""
    text = st.query_params.get(param)
    return [part for part in str(text).split(",") if part] if text else []


def _stored(key: str) -> AnalysisResult | None:
    """The stored result ``key``, or None (a damaged entry is moved aside, with a warning)."""
    found, note = cached_result(key, ResultStore())
    if note:
        st.warning(note)
    return found


def _run_here(request, loaded, label: str, device: str) -> AnalysisResult:
    """Compute ``request`` in this script run, with a progress bar labelled ``label`` (its time
    left) and a Stop button; both go when it ends."""
    progress, finish = common.progress_callback(label)
    try:
        with common.stop_button(st, key=f"stop_{request.key()}", help="stops this computation (nothing is stored)"):
            return run_analysis(request, progress, loaded=loaded, device=device)
    finally:
        finish()


def _total_cost(costs: list) -> CostEstimate:
    """One estimate for several requests run together (the first one's when there is one)."""
    if len(costs) == 1:
        return costs[0]
    return CostEstimate(sum(c.seconds for c in costs), sum(c.per_image_s for c in costs),
                        sum(c.passes for c in costs), "; ".join(c.how for c in costs))


def _queued(jobs: list, cost: CostEstimate) -> None:
    """Name the queued ``jobs`` in the URL (``?job=ID[,ID…]``), say so, and follow them at once
    (:func:`_follow`): the page reruns by itself when they are done, so the result appears with no
    click (the rerun shows it through ``?job=``)."""
    ids = [str(job.id) for job in jobs]
    st.query_params[JOB_PARAM] = ",".join(ids)
    st.query_params.pop(RESULT_PARAM, None)
    st.info(f"Queued as background job{'s' if len(jobs) > 1 else ''} {', '.join(ids)} (estimated {cost.describe()}). It keeps "
            "running when you close this tab; its result appears here when it is done, and on the **Results** page.")
    _follow(tuple(job.id for job in jobs))


@st.fragment(run_every=2)
def _follow(job_ids: tuple[int, ...]) -> None:
    """Poll the jobs just queued; rerun the whole page when every one has finished, or one lost
    its worker with none to take it up (the page's job panel then says so)."""
    from engine.jobs import JobStore

    try:
        store = JobStore()
        jobs = [store.refresh(job_id) for job_id in job_ids]
    except RobustScopeError as exc:  # the store broke, or was damaged and moved aside meanwhile
        st.warning(f"The background job cannot be followed: {exc}.")
        return
    if all(job.status in FINISHED for job in jobs) or any(store.lost_reason(job) for job in jobs):
        st.rerun()
    st.caption("Waiting for the background job: its result appears here when it is done.")


def show_store_notices(store) -> None:
    """Warn about damaged job stores that were moved aside (``JobStore.notices``, as the CLI does)."""
    for notice in store.notices():
        st.warning(f"{notice[:1].upper()}{notice[1:]} (dismiss this on the **Training** page).")


def run_or_queue(request, loaded, mode: str, label: str, device: str = "auto") -> AnalysisResult | None:
    """The stored result of ``request``, or compute it here, or queue it (then None).

    Args:
        loaded: the request's models, already loaded (the sidebar's checkpoints), in order.
        mode: from :func:`mode_picker`.
    """
    found = run_or_queue_all([request], [loaded], mode, [label], device)
    return found[0] if found else None


def run_or_queue_all(requests: list, loaded: list, mode: str, labels: list[str],
                     device: str = "auto") -> list[AnalysisResult] | None:
    """:func:`run_or_queue` for several requests shown in one view (e.g. one per model).

    The stored ones come back at once; the others run here, or (the measured estimate of them
    all decides in "auto") are all queued, one job each, named together in ``?job=``. Follow them
    with :func:`job_statuses`.

    Args:
        loaded: per request, its models already loaded, in order.
        labels: per request, the progress bar's label when it runs here.

    Returns:
        The results in request order, or None when queued.
    """
    found = [_stored(request.key()) for request in requests]
    missing = [i for i, result in enumerate(found) if result is None]
    if not missing:
        return found
    each = {i: estimate(requests[i], loaded[i]) for i in missing}
    cost = _total_cost(list(each.values()))
    if mode == "background" or (mode == "auto" and cost.background):
        # stored ones are queued too: their jobs are done at once, so the jobs name the whole view
        _queued([submit(r, device=device, submitter="dashboard", start_worker=_autostart(),
                        estimate_s=each[i].seconds if i in each else None) for i, r in enumerate(requests)], cost)
        return None
    banner = st.empty()
    banner.caption(f"Running here: estimated {cost.describe()}.")
    for i in missing:
        found[i] = _run_here(requests[i], loaded[i], labels[i], device)
    banner.empty()
    return found


def auto_run(request, loaded, label: str, device: str = "auto", key: str = "analysis") -> AnalysisResult | None:
    """For views that compute as soon as they are shown: the stored result, else run here when
    the measured estimate is at most :data:`AUTO_RUN_S` (nothing heavier runs on page arrival),
    else offer **Run in background** (the default above :data:`BACKGROUND_ABOVE_S`) or **Run here**.

    Returns:
        The result, or None while it is queued / waiting for the user's choice.
    """
    found = _stored(request.key())
    if found is not None:
        return found
    job = next(iter(_jobs_for(request.kind, request.key())), None)
    if job is not None and job.status not in ("failed", "cancelled"):
        return job_status(request.kind, request.key())  # its result once done, else its progress
    if job is not None:
        st.warning(f"Background job {job.id} {job.status}" + (f": {job.error_line}" if job.error else ""))
    cost = estimate(request, loaded)
    if cost.seconds <= AUTO_RUN_S:
        return _run_here(request, loaded, label, device)
    st.info(f"This takes {cost.describe()}. A background job keeps running when you close the tab; its "
            "result is stored and opens again from here or the **Results** page.")
    c1, c2 = st.columns(2)
    if c1.button("Run in background", type="primary" if cost.background else "secondary", key=f"{key}_background"):
        job = submit(request, device=device, submitter="dashboard", start_worker=_autostart(),
                     estimate_s=cost.seconds)
        st.query_params[JOB_PARAM] = str(job.id)
        st.rerun()
    if c2.button("Run here", type="secondary" if cost.background else "primary", key=f"{key}_here"):
        return _run_here(request, loaded, label, device)
    return None


def _kinds(kind: str | tuple[str, ...]) -> tuple[str, ...]:
    """One analysis kind, or the kinds of a view made of several, as a tuple."""
    return (kind,) if isinstance(kind, str) else tuple(kind)


def _jobs_for(kind: str | tuple[str, ...], key: str | None = None) -> list:
    """The jobs in ``?job=ID[,ID…]`` when they all run analysis ``kind`` (or one of the kinds of a
    tuple; with ``key``: only the one of that request)."""
    ids = _listed(JOB_PARAM)
    if not ids:
        return []
    from engine.jobs import JobStore

    try:
        store = JobStore()
    except RobustScopeError as exc:  # read-only runs folder, full disk: say so instead of a traceback
        st.warning(f"`?{JOB_PARAM}=` in this link: {exc}.")
        return []
    try:
        jobs = [store.get(text) for text in ids]
    except RobustScopeError as exc:
        st.warning(f"`?{JOB_PARAM}=` in this link: {exc}.")
        show_store_notices(store)  # a job missing because its store was moved aside: say so
        return []
    if any(job.kind not in _kinds(kind) for job in jobs):
        return []
    return [job for job in jobs if key is None or job.config.request.key() == key]


def job_pending(kind: str | tuple[str, ...]) -> bool:
    """Whether ``?job=`` names ``kind`` jobs not finished yet (:func:`job_status` shows their
    progress; a view that computes on display waits instead of computing again)."""
    return any(job.status not in FINISHED for job in _jobs_for(kind))


def _linked(key: str, kinds: tuple[str, ...]) -> AnalysisResult | None:
    """The stored result ``key`` of a permalink when it is of one of ``kinds`` (else None, with a
    message when the link is stale, damaged or for another page)."""
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
    if result.kind not in kinds:
        st.info(f"`?result={key}` is a {result.kind} result; open it from the **Results** page.")
        return None
    return result


def permalinked(kind: str) -> AnalysisResult | None:
    """The stored result named by ``?result=<key>`` when it is a ``kind`` result (else None,
    with a message when the link is stale, damaged or for another page)."""
    found = permalinked_all(kind)
    return found[0] if found else None


def permalinked_all(kind: str | tuple[str, ...]) -> list[AnalysisResult]:
    """Every stored ``kind`` result (of one of the kinds of a tuple) named by ``?result=K1,K2…``
    that can be read, in URL order (a message for each one that cannot); empty when the URL
    names none."""
    found = [_linked(key, _kinds(kind)) for key in _listed(RESULT_PARAM)]
    return [result for result in found if result is not None]


def permalinked_by_kind(kinds: tuple[str, ...]) -> dict[str, AnalysisResult]:
    """For a page that shows results of several ``kinds`` (one view each): kind -> the stored
    result ``?result=K1,K2…`` names for it (a message for each key that cannot be read or is of
    another kind)."""
    found = [_linked(key, kinds) for key in _listed(RESULT_PARAM)]
    return {result.kind: result for result in found if result is not None}


def url_kind() -> str | None:
    """The analysis kind the URL names (its ``?job=`` jobs', else its ``?result=`` result's), read
    without a message; None when it names none that can be read (the page's default view then
    says why). A page with several views shows the URL's in the view of that kind."""
    ids = _listed(JOB_PARAM)
    if ids:
        from engine.jobs import JobStore

        try:
            return JobStore().get(ids[0]).kind
        except RobustScopeError:
            pass
    keys = _listed(RESULT_PARAM)
    try:
        found = ResultStore().load(keys[0]) if keys else None
    except RobustScopeError:  # CorruptResult, a malformed key
        return None
    return None if found is None else found.kind


def show_permalink(*results: AnalysisResult, in_url: bool = True) -> None:
    """Put the results' keys in the URL (``?result=K1,K2…``) and say how to share it; with
    ``in_url=False`` only say it (another view of the page holds the URL)."""
    link = ",".join(result.key for result in results)
    if in_url:
        st.query_params[RESULT_PARAM] = link
        st.query_params.pop(JOB_PARAM, None)
    each = ", ".join(f"`{r.key}` ({'stored earlier' if r.cached else 'computed now'}, {r.seconds:.1f} s compute)"
                     for r in results)
    one = len(results) == 1
    st.caption(f"Result{'' if one else 's'} {each}. Permalink: this page with `?result={link}` reopens "
               f"{'it' if one else 'them'}; all stored results are on the **Results** page.")


def linked(kind: str) -> AnalysisResult | None:
    """The ``kind`` result the URL names (a finished ``?job=``, progress while it runs, or a
    ``?result=`` permalink) for a page with several views; None when it names another view."""
    if url_kind() != kind:
        return None
    return job_status(kind) or permalinked(kind)


def job_status(kind: str, key: str | None = None) -> AnalysisResult | None:
    """Follow the job in ``?job=ID`` (of analysis ``kind``; of request ``key`` when given): a
    progress line refreshed every 2 s; once it is done, its stored result (the URL then becomes
    its permalink)."""
    found = job_statuses(kind, key)
    return found[0] if found else None


def job_statuses(kind: str | tuple[str, ...], key: str | None = None) -> list[AnalysisResult] | None:
    """:func:`job_status` for the jobs of one view (``?job=ID,ID…``, from :func:`run_or_queue_all`):
    their results, in URL order, once every one is done; else None, with the progress of each
    one not done yet."""
    jobs = _jobs_for(kind, key)
    if not jobs:
        return None
    if any(job.status not in FINISHED for job in jobs):
        from engine.jobs import JobStore

        show_store_notices(JobStore())
    found = [_job_result(job) for job in jobs]
    return None if any(result is None for result in found) else found


def _job_result(job) -> AnalysisResult | None:
    """A done job's stored result; else None, with its progress (or why it has none)."""
    if job.status != "done" or not job.result_key:
        _job_progress(job.id)
        return None
    try:
        found = ResultStore().load(job.result_key)
    except CorruptResult as exc:
        st.warning(f"Job {job.id}'s result is damaged ({exc}); compute it again.")
        return None
    if found is None:
        st.warning(f"Job {job.id}'s result `{job.result_key}` is no longer stored; compute it again.")
    return found


def show_job_failure(store, job) -> None:
    """A failed or cancelled job as one sentence; its log (with any traceback) in an expander."""
    reason = job.error_line
    st.error(f"Background job {job.id} {job.status}" + (f": {reason}" if reason else "."))
    log = store.read_log(job.id, tail_chars=4000)
    if log.strip():
        with st.expander(f"Job {job.id}'s log (`python -m engine jobs logs {job.id}`)"):
            st.code(log)


def show_lost_job(store, job, lost: str) -> None:
    """A job whose worker died with none to take it up: the one sentence, and a Resume button
    that queues it again and starts a worker for it."""
    from engine.jobs.queueing import resume

    st.warning(f"Background {lost}.")
    if st.button("Resume", key=f"resume_job_{job.id}", help="queue it again; a worker continues it"):
        try:
            resume(job.id, jobs=store, start_worker=_autostart(), owner_pid=os.getpid())
        except RobustScopeError as exc:
            st.error(str(exc))


def queue_text(running: list, queued: list) -> str:
    """Where a queued job stands: what runs now and how many are ahead of it in its lane."""
    if not running and not queued:
        return "next in line"
    now = ", ".join(f"job {job.id} ({job.name})" for job in running[:2]) or "nothing"
    ahead = f"{len(queued)} queued ahead of it" if queued else "next in line"
    return f"{ahead}; running now: {now}"


@st.fragment(run_every=2)
def _job_progress(job_id: int) -> None:
    """A job's panel: its progress, why it waits, its failure, or its lost worker (with Resume)."""
    from engine.jobs import JobStore

    try:
        store = JobStore()
        job = store.refresh(job_id)  # a job whose worker died is interrupted, never "running" with a frozen ETA
    except RobustScopeError as exc:
        st.warning(f"Background job {job_id} cannot be shown: {exc}.")
        return
    if job.status == "done":
        st.rerun()  # the page shows the result
    if job.status in ("failed", "cancelled"):
        show_job_failure(store, job)
        return
    if (lost := store.lost_reason(job)) is not None:
        show_lost_job(store, job, lost)
        return
    last = store.latest_progress(job.id)
    if last is not None and last.batches:
        eta = f", about {last.eta_s:.0f} s left" if last.eta_s is not None else ""
        st.progress(min(last.batch / last.batches, 1.0), text=f"Background job {job.id}: {last.batch}/{last.batches}{eta}")
    elif job.status != "running" and (reason := store.waiting_reason(job)):
        st.warning(f"Background job {job.id} is {reason}")
    else:
        st.info(f"Background job {job.id} is {job.status}" +
                ("" if job.status == "running" else f" ({queue_text(*store.ahead_of(job))})"))
    if st.button("Cancel job", key=f"cancel_job_{job.id}"):
        store.cancel(job.id)
