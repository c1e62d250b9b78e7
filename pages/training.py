"""Training page: queue a training job, watch the queue and live curves, cancel/resume, read logs.

The worker this page starts runs with this dashboard's settings (data root, checkpoints folder,
...) and stops when the dashboard stops; the live workers are listed with their settings, and a
job that no live worker may run (it was queued with other settings) says why and offers to start
a worker with its settings. A job whose worker died is shown as interrupted (never as running
with a frozen ETA), with the one-sentence "worker lost" note and its Resume button when no worker
can take it up; a damaged job store that was moved aside (by any process) is said as a warning
until dismissed here.
"""
from __future__ import annotations

import os
import time

import pandas as pd
import plotly.express as px
import streamlit as st

from engine.catalogue import NORMS
from engine.data import DATASETS
from engine.selection import CLEAN_METHODS
from engine.errors import RobustScopeError
from engine.jobs import CLAIMABLE, JobStore, ensure_worker, worker_alive
from engine.jobs.worker import pid_path
from engine.paths import describe_settings, settings_key
from engine.models import ARCHITECTURES
from engine.training import METHODS, TrainConfig, estimate_cost
from pages.common import jobs_moving, live_panel

#: a worker this page starts exits after this many idle seconds
WORKER_IDLE_EXIT_S = 1800.0


def worker_pid(store: JobStore) -> int | None:
    """The pid the running worker recorded in ``<runs>/worker.pid`` (None if unreadable)."""
    try:
        return int(pid_path(store).read_text().strip())
    except (OSError, ValueError):
        return None


def autostart() -> bool:
    return os.environ.get("ROBUSTSCOPE_AUTOSTART_WORKER", "1") != "0"


def start_worker(store: JobStore, settings: dict | None = None) -> int | None:
    """Start a training worker with ``settings`` (default: this dashboard's) unless one runs; it
    stops when this dashboard's process stops (after the job it is running)."""
    return ensure_worker(store, idle_exit_s=WORKER_IDLE_EXIT_S, owner_pid=os.getpid(), settings=settings)


def worker_notice(store: JobStore, started: int | None) -> None:
    """Say whether a worker with this dashboard's settings runs, where (pid), when it stops and
    how to stop it."""
    from engine.jobs.cluster import ray_address

    if ray_address():
        st.caption(f"Jobs run on the Ray cluster at `{ray_address()}` (ROBUSTSCOPE_RAY_ADDRESS): the worker below "
                   "dispatches them to its nodes; results and progress come back here.")
    if started is None and not worker_alive(store):
        st.warning(f"No training worker is running for `{store.root}` with this dashboard's settings "
                   f"({describe_settings(store.settings())}): queued jobs wait until one starts. "
                   "Start one in a terminal with `python -m engine worker`.")
        return
    pid = started or worker_pid(store)
    row = next((w for w in store.workers() if w.pid == pid), None)
    owned = started is not None or (row is not None and row.owner_pid == os.getpid())
    who = "started by this dashboard" if started else "already running"
    if owned:
        life = (f"It stops when this dashboard stops (after the job it is running), or after "
                f"{WORKER_IDLE_EXIT_S / 60:.0f} idle minutes.")
    elif row is not None and row.owner_pid:
        life = f"It stops when the process that started it (pid {row.owner_pid}) stops."
    else:
        life = "It is a separate process and keeps running when the dashboard stops."
    st.caption(
        f"Training worker: pid {pid if pid else '?'} ({who}), runs folder `{store.root}`. {life} "
        f"Stop it with `kill {pid if pid else '<pid>'}`; a job it was running is marked interrupted and resumes "
        "from its last completed epoch when a worker starts again."
    )


def workers_view(store: JobStore, workers: list) -> None:
    """The live workers: pid, lane, device, what they run, their settings and owner."""
    mine = settings_key(store.settings())
    if not workers:
        st.caption("Live workers: none.")
        return
    st.markdown("**Live workers**")
    st.dataframe(pd.DataFrame([{
        "pid": w.pid, "lane": w.lane, "running": f"job {w.job_id}" if w.job_id else "idle",
        "device": w.device or "?",
        "data root": (w.settings or {}).get("data_root", "?"),
        "checkpoints": (w.settings or {}).get("checkpoints_root", "?"),
        "settings": "this dashboard's" if settings_key(w.settings) == mine else "other",
        "stops with": f"pid {w.owner_pid}" if w.owner_pid else "(runs until stopped)",
        "up": f"{(time.time() - w.started) / 60:.0f} min",
    } for w in workers]), hide_index=True)


def store_notices(store: JobStore) -> None:
    """Warn about damaged job stores that were moved aside (``JobStore.notices``), with a button
    that dismisses the warnings (the moved-aside files stay)."""
    notices = store.notices()
    for notice in notices:
        st.warning(f"{notice[:1].upper()}{notice[1:]} (finished checkpoints are untouched).")
    if notices and st.button("Dismiss", key="dismiss_store_notices", help="stop showing this warning"):
        store.dismiss_notices()
        st.rerun()


st.title("Training")
try:
    store = JobStore()
except RobustScopeError as exc:  # read-only runs folder, full disk: say so instead of a traceback
    st.error(str(exc))
    st.stop()
store_notices(store)
started = start_worker(store) if autostart() else None
worker_notice(store, started)

with st.form("new_job", enter_to_submit=False):  # Enter in a box must not queue a job: one per click
    c1, c2, c3 = st.columns(3)
    dataset = c1.selectbox("Dataset", sorted(DATASETS), index=sorted(DATASETS).index("shapes"))
    arch = c2.selectbox("Architecture", sorted(ARCHITECTURES), index=sorted(ARCHITECTURES).index("small_cnn"))
    method = c3.selectbox("Method", list(METHODS), format_func=lambda m: f"{m}: {METHODS[m]}")
    c1, c2, c3, c4 = st.columns(4)
    norm = c1.selectbox("Norm", list(NORMS))
    eps = c2.number_input("ε (pixels in [0,1])", value=8 / 255, min_value=0.0, format="%.4f")
    steps = c3.number_input("PGD steps", value=7, min_value=1)
    alpha = c4.number_input("α (0 = 2.5·ε/steps)", value=0.0, min_value=0.0, format="%.4f")
    c1, c2, c3, c4 = st.columns(4)
    epochs = c1.number_input("Epochs", value=10, min_value=1)
    batch_size = c2.number_input("Batch size", value=128, min_value=2)
    lr = c3.number_input("Learning rate", value=0.05, min_value=0.0, format="%.4f")
    seed = c4.number_input("Seed", value=0, min_value=0)
    submitted = st.form_submit_button("Queue job")

config = TrainConfig(dataset=dataset, arch=arch, method=method, norm=norm, eps=float(eps), steps=int(steps),
                     alpha=float(alpha) or None, epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                     seed=int(seed))
try:
    config.validate()
    n_train = {"shapes": 20000, "mnist": 60000, "fashion-mnist": 60000, "cifar10": 50000}.get(dataset, 10000)
    st.caption("Estimated cost: " + estimate_cost(config, n_train, "cpu", arch).describe() + " on CPU")
    if submitted:
        job = store.submit(config, submitter="dashboard")
        st.success(f"Queued job {job.id} ({job.name})")
except RobustScopeError as exc:
    st.error(str(exc))


def note(job, reason: str | None) -> str:
    """The queue table's one-line note: a lost worker or why a job waits, or a failed job's error."""
    if reason:
        return reason
    return job.error_line if job.status == "failed" else ""


def job_reason(job, workers) -> str | None:
    """Why ``job`` does not run: its worker was lost with none to take it up
    (``JobStore.lost_reason``), or why it waits (``JobStore.waiting_reason``); else None."""
    return store.lost_reason(job, workers) or store.waiting_reason(job, workers)


def queue_view() -> bool:
    """The queue (a ``common.live_panel``: refreshed every 3 s while a job moves, else every 30 s);
    a store that fails meanwhile (full disk, damaged and moved aside) is said in one sentence."""
    try:
        return show_queue()
    except RobustScopeError as exc:
        st.error(str(exc))
        return False


def training_jobs() -> list:
    """The 50 newest training jobs (analysis jobs are on the Results page); a job whose worker died
    shows as interrupted, never as running with a frozen ETA."""
    store.recover()
    return store.list(limit=50, lane="train")


def queue_moving() -> bool:
    """Whether a training job is moving now (False when the store cannot be read: the panel says why)."""
    try:
        return jobs_moving(store, training_jobs())
    except RobustScopeError:
        return False


def show_queue() -> bool:
    """The workers, the training jobs and the selected job's progress, curves, buttons and log;
    whether a job is moving."""
    jobs = training_jobs()
    workers = store.workers()
    mine = settings_key(store.settings())
    if autostart() and any(j.status in CLAIMABLE and settings_key(j.settings) == mine for j in jobs) \
            and not worker_alive(store):
        start_worker(store)  # the worker this page started went idle and exited; a job waits for one
        workers = store.workers()
    workers_view(store, workers)
    if not jobs:
        st.info("No training jobs yet: fill in the form above and queue one.")
        return False
    reasons = {j.id: job_reason(j, workers) for j in jobs}
    st.dataframe(pd.DataFrame([{"id": j.id, "name": j.name, "method": j.config.method, "status": j.status,
                                "epochs done": len(store.history(j.id)), "epochs": j.config.epochs,
                                "note": note(j, reasons[j.id])}
                               for j in jobs]), hide_index=True)
    job_id = st.selectbox("Job", [j.id for j in jobs], format_func=lambda i: f"#{i}")
    job = store.get(job_id)
    lost = store.lost_reason(job, workers)
    reason = None if lost else store.waiting_reason(job, workers)
    if lost:
        st.warning(f"{lost[:1].upper()}{lost[1:]} (or the Resume button below).")
    if reason:
        st.warning(f"Job {job.id} is {reason}")
        if job.settings is not None and st.button("Start a worker with this job's settings",
                                                  key=f"worker_for{job.id}"):
            pid = start_worker(store, job.settings)
            st.info(f"Started worker pid {pid}." if pid else "A worker with these settings is already starting.")
    progress = store.latest_progress(job.id)
    if job.status == "running" and progress is not None and progress.batches:
        st.progress(min(progress.batch / progress.batches, 1.0),
                    text=f"epoch {progress.epoch}/{progress.epochs}, ETA {progress.eta_s or 0:.0f} s")
    history = store.history(job.id)
    # a model trained on clean images has no robust accuracy worth plotting (its ε is an unused default)
    shown = ("train_loss", "train_acc", "clean_acc") + (() if job.config.method in CLEAN_METHODS else ("robust_acc",))
    if len(history) == 1:  # one epoch: a table, not four lone dots
        st.dataframe(pd.DataFrame(history).drop(columns=[k for k in history[0] if k == "robust_acc"
                                                         and "robust_acc" not in shown]), hide_index=True)
    elif history:
        frame = pd.DataFrame(history).melt(id_vars="epoch", value_vars=[k for k in shown if k in history[0]])
        st.plotly_chart(px.line(frame, x="epoch", y="value", color="variable", markers=True))
    c1, c2 = st.columns(2)
    if job.status in ("queued", "running", "interrupted") and c1.button("Cancel", key=f"cancel{job.id}"):
        store.cancel(job.id)
    if job.status in ("cancelled", "failed", "interrupted") and c2.button("Resume", key=f"resume{job.id}"):
        store.resume(job.id)
    if job.checkpoint:
        st.caption(f"Checkpoint: {job.checkpoint} (appears in the model picker)")
    if job.error:
        st.error(f"Job {job.id} {job.status}: {job.error_line.rstrip('.')}. The log below has the details "
                 f"(`python -m engine jobs logs {job.id}`).")
    st.code(store.read_log(job.id, tail_chars=4000) or "(no log yet)")
    return jobs_moving(store, jobs)


live_panel(queue_view, moving=queue_moving())
