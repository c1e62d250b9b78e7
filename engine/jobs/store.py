"""The persistent job store: one SQLite file (WAL mode) in the runs folder.

Every write is one short ``BEGIN IMMEDIATE`` transaction, so concurrent submits from several
dashboard sessions or processes are serialised by SQLite (none lost, none duplicated), and claiming
the next job is atomic (two workers never run the same job).

Statuses: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``; a running job whose
worker died becomes ``interrupted`` and is claimed again (it resumes from its last checkpoint).

Kinds: ``train`` (a :class:`~engine.training.TrainConfig`) or an analysis kind of
``engine.analysis.ANALYSES`` (``cka``, ``ood`` ...; the ``config`` column then holds
``{"request": ..., "use_cache": ..., "device": ...}`` and a done job names its stored result in
``result_key``). The ``kind`` and ``result_key`` columns were added in schema version 2; an older
``jobs.sqlite`` is migrated in place when opened (its jobs become ``train`` jobs).

Settings (schema version 3): a job records the settings it depends on when it is submitted
(``engine.paths.current_settings``: data root, checkpoints folder, runs folder, analysis plugins,
visible GPUs) in its ``settings`` column, with ``settings_key`` (a short hash of the ones a worker
must share). A worker claims only jobs whose ``settings_key`` equals its own (or jobs from before
version 3, which have none and run as before). The ``workers`` table lists the live workers (pid,
lane, settings, device, owner pid, heartbeat, current job): :meth:`JobStore.workers`, and
:meth:`JobStore.waiting_reason` says why a queued job waits (no worker runs with its settings).

A lost worker: a running job whose worker died (its pid is gone on this machine, or its heartbeat
is older than :data:`STALE_AFTER_S`) is marked ``interrupted`` by :meth:`JobStore.recover`, which
workers call between jobs and readers call through :meth:`JobStore.refresh` (``jobs wait``,
``jobs list``, the pages), so nobody waits on a dead worker; :meth:`JobStore.lost_reason` says so
in one sentence when no live worker may take the job up again. A job whose worker died
:data:`MAX_ATTEMPTS` times is marked failed (:meth:`JobStore.give_up`); a training job's finished
epochs stay in its run folder and its error says where.

A damaged database (``jobs.sqlite`` that SQLite calls malformed, found when the store is opened
or by any later operation, and confirmed by ``PRAGMA quick_check``) is moved aside to
``jobs.sqlite.corrupt-<time>`` under a lock and a fresh store is started (its job ids continue
after the job folders already in the runs folder, so no new job reuses an old job's folder). The
store object keeps where it went and the sentence that says so (``moved_aside``,
``moved_aside_notice``), and a notice file beside the store (``jobs.sqlite.moved-aside.json``)
keeps it for every process (:meth:`JobStore.notices`) until it is dismissed
(:meth:`JobStore.dismiss_notices`). An operation that found the damage raises
:class:`JobStoreDamaged` (the store is usable again at once). The store cannot be used at all
(read-only folder, full disk): :class:`JobStoreError`, a ``StorageError`` (the CLI exits 1).
"""
from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import sqlite3
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from engine.errors import InvalidParameterError, RobustScopeError, StorageError
from engine.paths import (current_settings, describe_settings, same_settings, settings_differences, settings_key,
                          runs_dir, worker_command)

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
CLAIMABLE = ("queued", "interrupted")
FINISHED = ("done", "failed", "cancelled")
#: a running job whose heartbeat is older than this (seconds) is considered orphaned.
STALE_AFTER_S = 30.0
#: a job whose worker died this many times is not claimed again (it is marked failed; resume retries).
MAX_ATTEMPTS = 3
#: the schema version written to ``PRAGMA user_version`` (1: before job kinds; 2: before job
#: settings and the workers table)
SCHEMA_VERSION = 3
#: a worker row whose heartbeat is older than this (seconds) is ignored and removed (its pid may be reused)
WORKER_STALE_S = 60.0
TRAIN = "train"
#: worker lanes: which kinds a worker claims (``all``: analyses first, then training;
#: ``analysis``: analyses, short ones first; ``short``: analyses estimated at most
#: :data:`SHORT_S` seconds only, so short work never waits behind a long analysis)
LANES = ("all", "train", "analysis", "short")
#: an analysis estimated at most this many seconds is short work (its own lane)
SHORT_S = 60.0


#: beside ``jobs.sqlite``: the damaged stores moved aside whose notice was not dismissed (a JSON list)
NOTICE_FILE = "jobs.sqlite.moved-aside.json"
#: beside ``jobs.sqlite``: held while a damaged store is checked and moved aside (one process does it)
REPAIR_LOCK_FILE = "jobs.sqlite.repair.lock"


class JobStoreError(StorageError):
    """The job store cannot be used (read-only folder, full disk, ...); the message says what to do."""


class JobStoreDamaged(JobStoreError):
    """The store's database was damaged: it was moved aside and a fresh one started (the message,
    one sentence, says where); the store can be used again at once."""


class _SoundAgain(JobStoreError):
    """SQLite called the database damaged, but it is sound when checked (another process moved
    the damaged one aside meanwhile, or the fault passed): retrying may succeed."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    heartbeat REAL,
    worker_pid INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    checkpoint TEXT,
    best_checkpoint TEXT,
    submitter TEXT,
    kind TEXT NOT NULL DEFAULT 'train',
    result_key TEXT,
    settings TEXT,
    settings_key TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status, id);
CREATE TABLE IF NOT EXISTS workers (
    pid INTEGER PRIMARY KEY,
    lane TEXT NOT NULL,
    settings TEXT,
    settings_key TEXT,
    device TEXT,
    owner_pid INTEGER,
    started REAL NOT NULL,
    heartbeat REAL NOT NULL,
    job_id INTEGER
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    epoch INTEGER,
    epochs INTEGER,
    batch INTEGER,
    batches INTEGER,
    eta_s REAL,
    metrics TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, id);
"""


@dataclass
class AnalysisJob:
    """What an analysis job runs: the request, whether a stored result may answer it, the device."""

    request: object
    use_cache: bool = True
    device: str = "auto"
    estimate_s: float | None = None

    @property
    def short(self) -> bool:
        """Whether it was estimated to take at most :data:`SHORT_S` seconds (the short lane's)."""
        return self.estimate_s is not None and self.estimate_s <= SHORT_S

    def to_dict(self) -> dict:
        return {"request": self.request.to_dict(), "use_cache": self.use_cache, "device": self.device,
                "estimate_s": self.estimate_s}


@dataclass
class Job:
    """One row of the job table (times are UNIX seconds).

    ``config`` is a ``TrainConfig`` for ``kind == "train"``, else an :class:`AnalysisJob`.
    """

    id: int
    name: str
    config: object
    status: str
    created: float
    started: float | None
    finished: float | None
    heartbeat: float | None
    worker_pid: int | None
    attempts: int
    cancel_requested: bool
    error: str | None
    checkpoint: str | None
    best_checkpoint: str | None
    kind: str = TRAIN
    result_key: str | None = None
    #: what it was submitted with (``engine.paths.current_settings``); None: a job from before
    #: settings were recorded (any worker runs it)
    settings: dict | None = None

    @property
    def is_analysis(self) -> bool:
        return self.kind != TRAIN

    @property
    def lanes(self) -> tuple[str, ...]:
        """The worker lanes that claim this job."""
        if not self.is_analysis:
            return ("all",)
        return ("all", "analysis", "short") if self.config.short else ("all", "analysis")

    @property
    def error_line(self) -> str:
        """The stored error as one line (a job failed by an older version stored a whole
        traceback: its last line, the exception's message)."""
        return error_line(self.error)

    def to_dict(self) -> dict:
        """JSON-friendly summary (config as a dict)."""
        out = dict(self.__dict__)
        out["config"] = self.config.to_dict()
        return out


@dataclass
class WorkerInfo:
    """A live worker (a row of the ``workers`` table): ``settings`` as recorded when it started,
    ``device`` what ``"auto"`` means for it (``None`` until it has looked), ``owner_pid`` the
    dashboard it stops with (``None``: started by hand), ``job_id`` the job it runs now."""

    pid: int
    lane: str
    settings: dict | None
    device: str | None
    owner_pid: int | None
    started: float
    heartbeat: float
    job_id: int | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Event:
    """A progress event: ``kind`` "batch"/"epoch"/"status", position, ETA and metrics."""

    id: int
    job_id: int
    time: float
    kind: str
    epoch: int | None
    epochs: int | None
    batch: int | None
    batches: int | None
    eta_s: float | None
    metrics: dict


class JobStore:
    """The SQLite job store at ``<root>/jobs.sqlite`` (``root`` default: :func:`runs_dir`).

    Connections are opened per operation, so one store object is safe to share between threads.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else runs_dir()
        #: where a damaged store was moved aside by this object (when opening it or later), else None
        self.moved_aside: Path | None = None
        #: the sentence that says so (``warning: ...`` in the CLI, a warning on the pages), else None
        self.moved_aside_notice: str | None = None
        self._repairing = False
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JobStoreError(f"cannot create the runs folder {self.root}: {exc.strerror or exc}; "
                                "set ROBUSTSCOPE_RUNS to a writable folder") from None
        self.path = self.root / "jobs.sqlite"
        try:
            self._initialise()
        except (JobStoreDamaged, _SoundAgain):
            self._initialise()  # the fresh store started in place of the damaged one (here or by another process)

    def _initialise(self) -> None:
        with self._transaction(begin=False) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)
            con.execute("SELECT COUNT(*) FROM jobs").fetchone()  # reads a page: finds corruption now
        self._migrate()

    def _migrate(self) -> None:
        """Bring an older store to :data:`SCHEMA_VERSION`: version 1 (before job kinds) gets the
        ``kind`` (existing rows: ``train``) and ``result_key`` columns; version 2 the ``settings``
        and ``settings_key`` columns (existing jobs: none, so any worker runs them, as before; the
        ``workers`` table is created with the schema). One immediate transaction, so two
        processes opening an old store at once migrate it once."""
        with self._transaction() as con:
            columns = {row["name"] for row in con.execute("PRAGMA table_info(jobs)").fetchall()}
            if "kind" not in columns:
                con.execute("ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'train'")
            if "result_key" not in columns:
                con.execute("ALTER TABLE jobs ADD COLUMN result_key TEXT")
            for column in ("settings", "settings_key"):
                if column not in columns:
                    con.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")
            con.execute("CREATE INDEX IF NOT EXISTS jobs_kind ON jobs(kind, status, id)")
            if con.execute("PRAGMA user_version").fetchone()[0] < SCHEMA_VERSION:
                con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # ------------------------------------------------------------------ a damaged database
    def _damage(self) -> str | None:
        """What is wrong with the database file (``PRAGMA quick_check``'s first complaint, or the
        error reading it), or ``None`` when it is sound (or missing)."""
        if not self.path.exists():
            return None
        con = None
        try:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            found = [row[0] for row in con.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as exc:
            return str(exc) if _corrupt(exc) else None
        finally:
            if con is not None:
                con.close()
        return None if found == ["ok"] else " ".join(str(found[0]).split())[:200]

    def _replace_damaged(self, exc: sqlite3.DatabaseError) -> JobStoreError:
        """The error for an operation that found the database damaged (``exc``): when the file
        really is damaged (checked under a lock, so one process does this) it is moved aside, a
        fresh store is started and the notice recorded (:class:`JobStoreDamaged`); else (another
        process replaced it meanwhile, or it was a passing fault) the plain error (a
        :class:`JobStoreError`, which opening the store retries once)."""
        with self._repair_lock():
            reason = self._damage()
            if reason is None:
                return _SoundAgain(str(self._error(exc)))
            aside = self._move_aside()
            notice = (f"the job store {self.path} was damaged ({reason}); it was moved aside to {aside} and a fresh "
                      "one started — the jobs listed there are not in the new queue")
            self.moved_aside, self.moved_aside_notice = aside, notice
            self._repairing = True
            try:
                self._initialise()
                self._continue_ids()
            finally:
                self._repairing = False
            self._record_notice(aside, notice)
        return JobStoreDamaged(notice)

    @contextmanager
    def _repair_lock(self, shared: bool = False) -> Iterator[None]:
        """An ``flock`` on :data:`REPAIR_LOCK_FILE`: exclusive while a damaged database is checked
        and moved aside, shared while a connection is open (none when the file cannot be made: a
        read-only folder, where nothing can be moved aside anyway).

        So the database is never renamed under an open connection: one that opened the old file
        and then found the fresh one's WAL files by name failed ("disk I/O error", "unable to
        open") or, truncating shared memory another connection had mapped, crashed the process
        (SIGBUS) — 1 run in 100 with four threads opening a damaged store at once. ``flock`` locks
        belong to each open file, so threads of one process exclude each other too."""
        try:
            handle = open(self.root / REPAIR_LOCK_FILE, "a+")
        except OSError:
            yield
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            handle.close()  # releases the lock

    def _move_aside(self) -> Path:
        """Rename a corrupt database (and its WAL files) to ``jobs.sqlite.corrupt-<time>``."""
        stamp = time.strftime('%Y%m%d-%H%M%S')
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        index = 2
        while target.exists():  # damaged twice in one second: keep both
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{index}")
            index += 1
        try:
            for suffix in ("", "-wal", "-shm"):
                part = Path(str(self.path) + suffix)
                if part.exists():
                    os.replace(part, Path(str(target) + suffix))
        except OSError as exc:
            raise JobStoreError(f"the job store {self.path} is damaged and cannot be moved aside "
                                f"({exc.strerror or exc}): move it away by hand, then retry") from None
        return target

    def _continue_ids(self) -> None:
        """Make a fresh store's job ids start after the job folders already in the runs folder,
        so a new job never writes into (or resumes) the folder of a job of the damaged store."""
        folders = self.root / "jobs"
        taken = [int(p.name) for p in folders.iterdir() if p.name.isdigit()] if folders.is_dir() else []
        if not taken:
            return
        with self._transaction() as con:
            con.execute("DELETE FROM sqlite_sequence WHERE name = 'jobs'")
            con.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?)", (max(taken),))

    @property
    def notice_path(self) -> Path:
        """The notice file beside the store (:data:`NOTICE_FILE`)."""
        return self.root / NOTICE_FILE

    def _record_notice(self, aside: Path, notice: str) -> None:
        """Add the notice to :attr:`notice_path` (a failure is logged: the object keeps it)."""
        from engine.fileio import atomic_write_text

        records = self._notice_records() + [{"aside": str(aside), "time": time.time(), "notice": notice}]
        try:
            atomic_write_text(self.notice_path, json.dumps(records, indent=2), what="job store notice")
        except (OSError, RobustScopeError) as exc:
            logging.getLogger("engine.jobs").warning("could not record the notice in %s: %s", self.notice_path, exc)

    def _notice_records(self) -> list[dict]:
        try:
            records = json.loads(self.notice_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        return [r for r in records if isinstance(r, dict) and isinstance(r.get("notice"), str)] \
            if isinstance(records, list) else []

    def notices(self) -> list[str]:
        """The sentences about damaged stores moved aside (by any process) that nobody dismissed
        yet, oldest first: what the CLI prints as warnings and the pages show."""
        found = [r["notice"] for r in self._notice_records()]
        if self.moved_aside_notice and self.moved_aside_notice not in found:
            found.append(self.moved_aside_notice)
        return found

    def dismiss_notices(self) -> None:
        """Stop showing :meth:`notices` (the moved-aside files stay where they are)."""
        self.moved_aside_notice = None
        try:
            self.notice_path.unlink(missing_ok=True)
        except OSError as exc:
            raise JobStoreError(f"cannot remove {self.notice_path} ({exc.strerror or exc}); "
                                "delete it by hand") from None

    def _error(self, exc: sqlite3.Error) -> JobStoreError:
        text = str(exc)
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            hint = "the folder or file is not writable: fix its permissions or set ROBUSTSCOPE_RUNS to a writable folder"
        elif _corrupt(exc):
            hint = "the file was damaged and has been moved aside (`python -m engine jobs list` says where): retry"
        elif ("disk" in text and "full" in text) or ("I/O error" in text and _nearly_full(self.root)):
            hint = "the disk is full: free space, then `python -m engine jobs resume ID` continues interrupted jobs"
        elif "I/O error" in text:
            hint = "the disk reported an input/output error: check that it is mounted and healthy, then retry"
        else:
            hint = "see the message; `python -m engine jobs list` shows the jobs once the store is usable"
        return JobStoreError(f"the job store {self.path} cannot be used ({text}): {hint}")

    def _failure(self, exc: sqlite3.DatabaseError) -> JobStoreError:
        """The error to raise for sqlite's ``exc``: a damaged database is replaced first."""
        if _corrupt(exc) and not self._repairing:
            return self._replace_damaged(exc)
        return self._error(exc)

    # ------------------------------------------------------------------ plumbing
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        try:
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA busy_timeout=30000")
            con.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            con.close()
            raise
        return con

    @contextmanager
    def _connection(self, begin: bool) -> Iterator[sqlite3.Connection]:
        """A connection (in a ``BEGIN IMMEDIATE`` ... ``COMMIT`` when ``begin``, rolled back on
        error), closed before sqlite's errors become a :class:`JobStoreError` (a damaged file is
        moved aside only once no connection of ours holds it)."""
        con, failed = None, None
        # shared: no repair renames the file meanwhile (the repair itself holds the lock exclusively)
        with nullcontext() if self._repairing else self._repair_lock(shared=True):
            try:
                con = self._connect()
                if begin:
                    con.execute("BEGIN IMMEDIATE")
                try:
                    yield con
                except BaseException:
                    if con.in_transaction:
                        con.execute("ROLLBACK")
                    raise
                if begin:
                    con.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                failed = exc
            finally:
                if con is not None:
                    con.close()
        if failed is not None:  # after the shared lock is released: a repair takes it exclusively
            raise self._failure(failed) from None

    @contextmanager
    def _transaction(self, begin: bool = True) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error); sqlite's operational
        errors (read-only, disk full) become a :class:`JobStoreError` that says what to do, and a
        damaged database is moved aside (:class:`JobStoreDamaged`)."""
        with self._connection(begin) as con:
            yield con

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads; errors as in :meth:`_transaction`."""
        with self._connection(False) as con:
            yield con


    def job_dir(self, job_id: int) -> Path:
        """The job's folder (run state, log file)."""
        return self.root / "jobs" / str(check_job_id(job_id))

    def log_path(self, job_id: int) -> Path:
        """The job's log file."""
        return self.job_dir(job_id) / "log.txt"

    # ------------------------------------------------------------------ jobs
    def settings(self) -> dict:
        """This process's settings for this store (``engine.paths.current_settings`` with the
        store's folder as the runs folder): what a job submitted here records, what a worker
        started here runs with."""
        return current_settings(self.root)

    def _settings_columns(self, settings: dict | None) -> tuple[str, str]:
        settings = self.settings() if settings is None else settings
        return json.dumps(settings, sort_keys=True), settings_key(settings)

    def submit(self, config, submitter: str | None = None, settings: dict | None = None) -> Job:
        """Validate ``config`` (a ``TrainConfig``) and queue it; returns the new :class:`Job`.

        A config without ``name`` gets ``<recipe name>-j<id>`` so every job publishes its own files.
        The job records ``settings`` (default: :meth:`settings`, this process's); only a worker
        with the same settings claims it.
        """
        from engine.training.config import TrainConfig

        config.validate()
        now = time.time()
        with self._transaction() as con:
            cur = con.execute(
                "INSERT INTO jobs (name, config, status, created, submitter, settings, settings_key) "
                "VALUES (?, ?, 'queued', ?, ?, ?, ?)",
                (config.output_name, config.to_json(), now, submitter, *self._settings_columns(settings)),
            )
            job_id = cur.lastrowid
            if not config.name:
                named = TrainConfig.from_dict({**config.to_dict(), "name": f"{config.output_name}-j{job_id}"})
                con.execute("UPDATE jobs SET name = ?, config = ? WHERE id = ?",
                            (named.output_name, named.to_json(), job_id))
            self._event(con, job_id, "status", {"status": "queued"})
        return self.get(job_id)

    def submit_analysis(self, request, use_cache: bool = True, device: str = "auto",
                        submitter: str | None = None, done_key: str | None = None,
                        settings: dict | None = None, estimate_s: float | None = None) -> Job:
        """Queue an analysis request (``engine.analysis``); returns the new :class:`Job`.

        Args:
            request: a validated request (``request.kind`` names the analysis).
            use_cache: whether a stored result may answer it (``--no-cache``: False).
            device: where the worker computes it.
            done_key: the key of a stored result that already answers it: the job is recorded
                as done at once, pointing at that result.
            settings: what the job records (default: :meth:`settings`, this process's); only a
                worker with the same settings claims it.
            estimate_s: its measured estimate (``engine.analysis.cost``), when known: at most
                :data:`SHORT_S` makes it short work, claimed by the short lane too.
        """
        request.validate()
        if estimate_s is not None and (not isinstance(estimate_s, (int, float)) or not math.isfinite(estimate_s)
                                       or estimate_s < 0):
            raise InvalidParameterError(f"estimate_s must be a finite number of seconds >= 0, got {estimate_s!r}")
        spec = AnalysisJob(request, bool(use_cache), str(device), None if estimate_s is None else float(estimate_s))
        now = time.time()
        status = "done" if done_key else "queued"
        with self._transaction() as con:
            cur = con.execute(
                "INSERT INTO jobs (name, config, status, created, submitter, kind, result_key, started, finished, "
                "settings, settings_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (request.describe()[:200], json.dumps(spec.to_dict(), sort_keys=True), status, now, submitter,
                 request.kind, done_key, now if done_key else None, now if done_key else None,
                 *self._settings_columns(settings)),
            )
            self._event(con, cur.lastrowid, "status", {"status": status, "cached": bool(done_key)})
        return self.get(cur.lastrowid)

    def get(self, job_id: int) -> Job:
        """The job with ``job_id`` (``InvalidParameterError`` when there is none)."""
        with self._reading() as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (check_job_id(job_id),)).fetchone()
        if row is None:
            raise InvalidParameterError(f"no job with id {job_id}")
        return _job(row)

    def list(self, statuses: tuple[str, ...] | None = None, limit: int = 200, lane: str = "all") -> list[Job]:
        """Jobs, newest first, optionally only those with one of ``statuses`` and of one lane
        (``"train"``: training jobs, ``"analysis"``: analyses, ``"all"``)."""
        sql, args, where = "SELECT * FROM jobs", [], []
        if statuses:
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args += list(statuses)
        where += _lane_filter(lane)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._reading() as con:
            return [_job(r) for r in con.execute(sql, args + [int(limit)]).fetchall()]

    def claim(self, worker_pid: int | None = None, lane: str = "all", settings: dict | None = None) -> Job | None:
        """Atomically take the next queued/interrupted job of ``lane`` and mark it running (or ``None``).

        Only jobs recorded with the same settings as ``settings`` (the claiming worker's; default
        :meth:`settings`, this process's) are taken, and jobs from before settings were recorded;
        a job with other settings waits for a worker with them (:meth:`waiting_reason`).
        Analyses come before training jobs (oldest first within each), so a short analysis never
        waits behind a queue of training runs. An interrupted job whose worker already died
        ``MAX_ATTEMPTS`` times is marked failed instead (it would likely kill the next worker
        too); ``resume`` gives it new attempts.
        """
        lane_sql = "".join(f" AND {clause}" for clause in _lane_filter(lane))
        key = settings_key(self.settings() if settings is None else settings)
        pid = worker_pid or os.getpid()
        now = time.time()
        with self._transaction() as con:
            self._give_up(con)
            row = con.execute(
                f"SELECT id FROM jobs WHERE status IN ({','.join('?' * len(CLAIMABLE))}) "
                f"AND cancel_requested = 0 AND (settings_key IS NULL OR settings_key = ?){lane_sql} "
                f"ORDER BY {CLAIM_ORDER} LIMIT 1", (*CLAIMABLE, key),
            ).fetchone()
            if row is None:
                return None
            con.execute(
                "UPDATE jobs SET status = 'running', started = COALESCE(started, ?), heartbeat = ?, "
                "worker_pid = ?, attempts = attempts + 1, error = NULL WHERE id = ?",
                (now, now, pid, row["id"]),
            )
            con.execute("UPDATE workers SET job_id = ?, heartbeat = ? WHERE pid = ?", (row["id"], now, pid))
            self._event(con, row["id"], "status", {"status": "running"})
        return self.get(row["id"])

    def give_up(self) -> list[Job]:
        """Mark failed the interrupted jobs whose worker died :data:`MAX_ATTEMPTS` times (they
        would likely kill the next worker too; ``resume`` gives them new attempts) and return
        them. :meth:`claim` does this too; a worker calls it first to publish what such a
        training job finished (``engine.jobs.worker``)."""
        with self._transaction() as con:
            ids = self._give_up(con)
        return [self.get(job_id) for job_id in ids]

    def _give_up(self, con) -> list[int]:
        now, ids = time.time(), []
        for dead in con.execute("SELECT id, attempts, kind FROM jobs WHERE status = 'interrupted' AND attempts >= ?",
                                (MAX_ATTEMPTS,)).fetchall():
            error = self.given_up_error(dead["id"], dead["attempts"], is_training=(dead["kind"] or TRAIN) == TRAIN)
            con.execute("UPDATE jobs SET status = 'failed', finished = ?, error = ? WHERE id = ?",
                        (now, error, dead["id"]))
            self._event(con, dead["id"], "status", {"status": "failed", "error": error})
            ids.append(dead["id"])
        return ids

    def given_up_error(self, job_id: int, attempts: int, is_training: bool = True,
                       published: str | os.PathLike | None = None) -> str:
        """The one-line error of a job given up on after its worker died ``attempts`` times; for a
        training job with finished epochs: where the last one is kept (the run folder's epoch
        checkpoint, and ``published`` when it was also published) and that resume continues
        from it."""
        died = (f"the worker died {attempts} times while running this job (killed, out of memory or disk?); "
                "not retried again")
        state = self.saved_state(job_id) if is_training else {}
        last, epochs = state.get("last"), state.get("epoch")
        if not last or not isinstance(epochs, int) or epochs < 1:
            return f"{died}. Check its log, then `python -m engine jobs resume {job_id}` to try once more"
        kept = self.job_dir(job_id) / "run" / str(last) / "model.safetensors"
        where = f"published as {published} and kept in {kept}" if published else f"kept in {kept}"
        return (f"{died}; its last finished epoch ({epochs}) is {where}: `python -m engine jobs resume {job_id}` "
                "continues from it")

    def record_published(self, job_id: int, checkpoint: str | os.PathLike | None,
                         best_checkpoint: str | os.PathLike | None) -> Job:
        """Record the checkpoints published for a failed training job (a job given up on: its
        error then names the published one)."""
        job = self.get(job_id)
        error = self.given_up_error(job.id, job.attempts, True, checkpoint) if checkpoint else job.error
        with self._transaction() as con:
            con.execute("UPDATE jobs SET checkpoint = COALESCE(?, checkpoint), "
                        "best_checkpoint = COALESCE(?, best_checkpoint), error = ? WHERE id = ?",
                        (None if checkpoint is None else str(checkpoint),
                         None if best_checkpoint is None else str(best_checkpoint), error, job.id))
        return self.get(job.id)

    def ahead_of(self, job: Job) -> tuple[list[Job], list[Job]]:
        """``(running, queued)``: the analyses running now, and the queued ones a worker of the
        job's lanes claims before it (same settings, in claim order); both empty unless ``job`` is
        a queued or interrupted analysis."""
        if not job.is_analysis or job.status not in CLAIMABLE:
            return [], []
        lane = "short" if "short" in job.lanes else "analysis"
        lane_sql = "".join(f" AND {clause}" for clause in _lane_filter(lane))
        with self._reading() as con:
            running = con.execute(f"SELECT * FROM jobs WHERE status = 'running'{lane_sql} ORDER BY id").fetchall()
            queued = con.execute(
                f"SELECT * FROM jobs WHERE status IN ({','.join('?' * len(CLAIMABLE))}) AND cancel_requested = 0 "
                f"AND (settings_key IS NULL OR settings_key IS ?){lane_sql} ORDER BY {CLAIM_ORDER}",
                (*CLAIMABLE, settings_key(job.settings) if job.settings is not None else None)).fetchall()
        before = []
        for row in queued:
            if row["id"] == job.id:
                break
            before.append(_job(row))
        return [_job(row) for row in running], before

    def heartbeat(self, job_id: int) -> bool:
        """Refresh the running job's heartbeat (and its worker's); returns whether a cancel was requested."""
        with self._transaction() as con:
            now = time.time()
            con.execute("UPDATE jobs SET heartbeat = ? WHERE id = ?", (now, check_job_id(job_id)))
            con.execute("UPDATE workers SET heartbeat = ? WHERE job_id = ?", (now, check_job_id(job_id)))
            row = con.execute("SELECT cancel_requested FROM jobs WHERE id = ?", (check_job_id(job_id),)).fetchone()
        return bool(row and row["cancel_requested"])

    def finish(self, job_id: int, status: str, error: str | None = None,
               checkpoint: str | None = None, best_checkpoint: str | None = None,
               result_key: str | None = None) -> None:
        """Record the end of a run: ``done``, ``failed`` (with ``error``) or ``cancelled``
        (an analysis names its stored result in ``result_key``)."""
        if status not in FINISHED:
            raise InvalidParameterError(f"finish status must be one of {FINISHED}, got {status!r}")
        with self._transaction() as con:
            con.execute(
                "UPDATE jobs SET status = ?, finished = ?, error = ?, "
                "checkpoint = COALESCE(?, checkpoint), best_checkpoint = COALESCE(?, best_checkpoint), "
                "result_key = COALESCE(?, result_key), cancel_requested = 0 WHERE id = ?",
                (status, time.time(), error, checkpoint, best_checkpoint, result_key, check_job_id(job_id)),
            )
            self._event(con, job_id, "status", {"status": status, "error": error})

    def cancel(self, job_id: int) -> Job:
        """Cancel: a queued/interrupted job at once; a running one at its next batch boundary."""
        with self._transaction() as con:
            row = con.execute("SELECT status FROM jobs WHERE id = ?", (check_job_id(job_id),)).fetchone()
            if row is None:
                raise InvalidParameterError(f"no job with id {job_id}")
            if row["status"] in CLAIMABLE:
                con.execute("UPDATE jobs SET status = 'cancelled', finished = ? WHERE id = ?",
                            (time.time(), check_job_id(job_id)))
                self._event(con, job_id, "status", {"status": "cancelled"})
            elif row["status"] == "running":
                con.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (check_job_id(job_id),))
        return self.get(job_id)

    def resume(self, job_id: int) -> Job:
        """Queue a cancelled/failed/interrupted job again; it continues from its last checkpoint.

        A job still marked running whose worker is gone (e.g. it died on a full disk before it
        could record the failure) is recovered first, so it can be resumed too.
        """
        self.recover()
        with self._transaction() as con:
            row = con.execute("SELECT status FROM jobs WHERE id = ?", (check_job_id(job_id),)).fetchone()
            if row is None:
                raise InvalidParameterError(f"no job with id {job_id}")
            if row["status"] not in ("cancelled", "failed", "interrupted"):
                raise InvalidParameterError(
                    f"job {job_id} is {row['status']}; only cancelled, failed or interrupted jobs can be resumed"
                )
            con.execute("UPDATE jobs SET status = 'queued', finished = NULL, cancel_requested = 0, attempts = 0 "
                        "WHERE id = ?", (check_job_id(job_id),))
            self._event(con, job_id, "status", {"status": "queued", "resumed": True})
        return self.get(job_id)

    def recover(self, stale_after_s: float | None = None, alive=None) -> list[int]:
        """Mark running jobs whose worker is gone (pid dead or heartbeat stale) ``interrupted``.

        Cheap when nothing is orphaned (one read; the write transaction only when some job is),
        so readers may call it every time they look (:meth:`refresh`).

        Args:
            stale_after_s: a heartbeat older than this is stale (default :data:`STALE_AFTER_S`,
                read when called).
            alive: ``alive(pid) -> bool`` (default: the pid exists on this machine).

        Returns:
            The ids of the jobs marked interrupted.
        """
        stale_after_s = STALE_AFTER_S if stale_after_s is None else stale_after_s
        alive = alive or pid_alive
        sql = "SELECT id, worker_pid, heartbeat FROM jobs WHERE status = 'running'"
        with self._reading() as con:
            rows = con.execute(sql).fetchall()
        if not any(_orphaned(row, time.time(), stale_after_s, alive) for row in rows):
            return []
        out = []
        with self._transaction() as con:
            now = time.time()
            for row in con.execute(sql).fetchall():
                if _orphaned(row, now, stale_after_s, alive):
                    con.execute("UPDATE jobs SET status = 'interrupted' WHERE id = ?", (row["id"],))
                    self._event(con, row["id"], "status", {"status": "interrupted"})
                    out.append(row["id"])
        return out

    def refresh(self, job_id: int) -> Job:
        """The job as it stands, after :meth:`recover`: a running job whose worker died is
        ``interrupted`` (never "running" with a frozen ETA). What readers that follow a job use."""
        self.recover()
        return self.get(job_id)

    def lost_reason(self, job: Job, workers: list[WorkerInfo] | None = None) -> str | None:
        """One sentence for a job whose worker died (``interrupted``) when no live worker may take
        it up again (:meth:`waiting_reason`), e.g. ``"job 7: worker lost (pid 123 stopped before
        finishing it: killed or out of memory?); `python -m engine jobs resume 7` to retry, with
        a worker running (`python -m engine worker`)"``; ``None`` otherwise."""
        if job.status != "interrupted" or job.cancel_requested or self.waiting_reason(job, workers) is None:
            return None
        lane = "analysis" if job.is_analysis else "all"
        start = worker_command(job.settings, lane) if job.settings is not None else "python -m engine worker"
        return (f"job {job.id}: worker lost (pid {job.worker_pid} stopped before finishing it: killed or out of "
                f"memory?); `python -m engine jobs resume {job.id}` to retry, with a worker running (`{start}`)")

    # ------------------------------------------------------------------ workers
    def register_worker(self, pid: int, lane: str, settings: dict | None, owner_pid: int | None = None,
                        device: str | None = None) -> None:
        """Record a starting worker (replacing a dead one's row with the same pid)."""
        now = time.time()
        with self._transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO workers (pid, lane, settings, settings_key, device, owner_pid, started, "
                "heartbeat, job_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (int(pid), lane, None if settings is None else json.dumps(settings, sort_keys=True),
                 settings_key(settings), device, owner_pid, now, now),
            )

    def worker_beat(self, pid: int, job_id: int | None = None, device: str | None = None) -> bool:
        """A worker is alive and runs ``job_id`` (None: idle); ``device`` once it knows it.
        Returns whether the worker has a row (``False``: register it again, e.g. in a fresh store
        started in place of a damaged one)."""
        with self._transaction() as con:
            return con.execute("UPDATE workers SET heartbeat = ?, job_id = ?, device = COALESCE(?, device) "
                               "WHERE pid = ?", (time.time(), job_id, device, int(pid))).rowcount > 0

    def unregister_worker(self, pid: int) -> None:
        """Remove a stopping worker's row."""
        with self._transaction() as con:
            con.execute("DELETE FROM workers WHERE pid = ?", (int(pid),))

    def workers(self, lane: str | None = None, alive=None, stale_after_s: float = WORKER_STALE_S) -> list[WorkerInfo]:
        """The live workers of this store (of ``lane`` when given), oldest first.

        A row whose pid is gone or whose heartbeat is older than ``stale_after_s`` (the pid may
        belong to another process by now) is left out, and removed.

        Args:
            alive: ``alive(pid) -> bool`` (default: the pid exists on this machine).
        """
        alive = alive or pid_alive
        with self._reading() as con:
            rows = con.execute("SELECT * FROM workers ORDER BY started, pid").fetchall()
        now, live, dead = time.time(), [], []
        for row in rows:
            if now - row["heartbeat"] > stale_after_s or not alive(row["pid"]):
                dead.append(row["pid"])
            elif lane is None or row["lane"] == lane:
                live.append(WorkerInfo(pid=row["pid"], lane=row["lane"],
                                       settings=json.loads(row["settings"]) if row["settings"] else None,
                                       device=row["device"], owner_pid=row["owner_pid"], started=row["started"],
                                       heartbeat=row["heartbeat"], job_id=row["job_id"]))
        if dead:
            with self._transaction() as con:
                con.executemany("DELETE FROM workers WHERE pid = ? AND heartbeat <= ?",
                                [(pid, now) for pid in dead])
        return live

    def waiting_reason(self, job: Job, workers: list[WorkerInfo] | None = None) -> str | None:
        """Why a queued (or interrupted) ``job`` is not being run, in one sentence; ``None`` when a
        live worker that may claim it runs (or the job is not waiting).

        E.g. ``"waiting: the running worker (pid 123) uses data root /a (this job needs /b); start
        one with its settings: ROBUSTSCOPE_DATA=/b ... python -m engine worker"``.

        Args:
            workers: the live workers (default :meth:`workers`), when the caller already has them.
        """
        if job.status not in CLAIMABLE or job.cancel_requested:
            return None
        workers = self.workers() if workers is None else workers
        lanes = [w for w in workers if w.lane in job.lanes]
        if any(same_settings(w.settings, job.settings) for w in lanes):
            return None
        lane = "analysis" if job.is_analysis else "all"
        if job.settings is None:
            return "waiting: no worker is running; start one with `python -m engine worker`"
        start = f"start one with its settings: `{worker_command(job.settings, lane)}`"
        if not lanes:
            return f"waiting: no worker is running with this job's settings ({describe_settings(job.settings)}); {start}"
        others = "; ".join(f"the running worker (pid {w.pid}) uses " + ", ".join(settings_differences(w.settings, job.settings))
                           for w in lanes[:3])
        return f"waiting: {others}; {start}"

    # ------------------------------------------------------------------ events
    @staticmethod
    def _event(con, job_id, kind, metrics, epoch=None, epochs=None, batch=None, batches=None, eta_s=None):
        con.execute(
            "INSERT INTO events (job_id, time, kind, epoch, epochs, batch, batches, eta_s, metrics) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (check_job_id(job_id), time.time(), kind, epoch, epochs, batch, batches, eta_s, json.dumps(metrics, default=str)),
        )

    def add_event(self, job_id: int, kind: str, metrics: dict, epoch: int | None = None,
                  epochs: int | None = None, batch: int | None = None, batches: int | None = None,
                  eta_s: float | None = None) -> None:
        """Append a progress event (also refreshes the job's heartbeat); nothing for a job that is
        not in the store (its database was moved aside while it ran)."""
        with self._transaction() as con:
            if con.execute("UPDATE jobs SET heartbeat = ? WHERE id = ?", (time.time(), check_job_id(job_id))).rowcount:
                self._event(con, job_id, kind, metrics, epoch, epochs, batch, batches, eta_s)

    def events(self, job_id: int, kind: str | None = None, after_id: int = 0) -> list[Event]:
        """The job's events in order (optionally one ``kind``, only ids > ``after_id``)."""
        sql = "SELECT * FROM events WHERE job_id = ? AND id > ?"
        args: list = [check_job_id(job_id), int(after_id)]
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        with self._reading() as con:
            rows = con.execute(sql + " ORDER BY id", args).fetchall()
        return [Event(r["id"], r["job_id"], r["time"], r["kind"], r["epoch"], r["epochs"], r["batch"],
                      r["batches"], r["eta_s"], json.loads(r["metrics"] or "{}")) for r in rows]

    def history(self, job_id: int) -> list[dict]:
        """Per-epoch metric records of the job (the last record per epoch; survives resumes).

        Reconciled with the run's saved state: an epoch whose checkpoint was saved but whose event
        was never stored (the worker was killed in between) still appears, from ``state.json``.
        """
        by_epoch = {e.epoch: e.metrics for e in self.events(job_id, "epoch")}
        for record in self.saved_history(job_id):
            by_epoch.setdefault(record.get("epoch"), record)
        return [by_epoch[k] for k in sorted(k for k in by_epoch if k is not None)]

    def saved_history(self, job_id: int) -> list[dict]:
        """The per-epoch records in the job's saved run state (``[]`` when none was saved)."""
        history = self.saved_state(job_id).get("history")
        return [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []

    def saved_state(self, job_id: int) -> dict:
        """The training job's saved run state (``run/state.json``: epoch, last, best, history),
        ``{}`` when none was saved or it cannot be read."""
        from engine.training.state import read_json

        state = read_json(self.job_dir(job_id) / "run" / "state.json")
        return state if isinstance(state, dict) else {}

    def latest_progress(self, job_id: int) -> Event | None:
        """The most recent batch or epoch event, or ``None``."""
        with self._reading() as con:
            row = con.execute("SELECT id FROM events WHERE job_id = ? AND kind IN ('batch', 'epoch') "
                              "ORDER BY id DESC LIMIT 1", (check_job_id(job_id),)).fetchone()
        return None if row is None else self.events(job_id, after_id=row["id"] - 1)[0]

    def read_log(self, job_id: int, tail_chars: int | None = None) -> str:
        """The job's log text (the last ``tail_chars`` characters when given)."""
        path = self.log_path(job_id)
        if not path.exists():
            return ""
        text = path.read_text(encoding="utf-8", errors="replace")
        return text[-tail_chars:] if tail_chars else text


def error_line(error: str | None) -> str:
    """A stored error as one line: the last non-empty line of a multi-line one (a traceback's
    last line is the exception's message); ``""`` for none."""
    lines = [line.strip() for line in (error or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


#: a disk with less free space than this (bytes) is full for SQLite's purposes (a WAL write
#: that finds no room is reported as a "disk I/O error")
NEARLY_FULL_BYTES = 1 << 20


def _nearly_full(folder: Path) -> bool:
    """Whether the disk ``folder`` is on has (almost) no free space left."""
    import shutil

    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL_BYTES
    except OSError:
        return False


def _orphaned(row, now: float, stale_after_s: float, alive) -> bool:
    """Whether a running job's row (``worker_pid``, ``heartbeat``) has lost its worker: no
    heartbeat for ``stale_after_s`` seconds, or the worker's pid is gone (``alive(pid)`` False)."""
    return row["heartbeat"] is None or now - row["heartbeat"] > stale_after_s or not alive(row["worker_pid"])


def _corrupt(exc: sqlite3.DatabaseError) -> bool:
    """Whether sqlite says the file is not (or no longer) a usable database."""
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def pid_alive(pid: int | None) -> bool:
    """Whether a process with ``pid`` exists on this machine."""
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(int(pid))


def process_started(pid: int | None) -> str | None:
    """When process ``pid`` started (Linux: clock ticks after boot, from ``/proc``; else None), so a
    pid seen again can be told apart from a new process that reuses it."""
    if not pid:
        return None
    try:
        with open(f"/proc/{int(pid)}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError, ValueError):
        return None


def _not_zombie(pid: int) -> bool:
    """False for a zombie (exited, not yet reaped) process on Linux; True elsewhere."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


#: the largest job id SQLite stores (a signed 64-bit integer)
MAX_JOB_ID = 2**63 - 1


def check_job_id(job_id) -> int:
    """``job_id`` as an int if it can name a job (1 to :data:`MAX_JOB_ID`), else an
    InvalidParameterError naming it (never an OverflowError from SQLite)."""
    if isinstance(job_id, bool):
        raise InvalidParameterError(f"no job with id {job_id!r}")
    try:
        value = int(job_id)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"a job id is a whole number, got {job_id!r}") from None
    if not 1 <= value <= MAX_JOB_ID:
        raise InvalidParameterError(f"no job with id {job_id} (ids run from 1 to {MAX_JOB_ID})")
    return value


def _lane_filter(lane: str) -> list[str]:
    """SQL conditions selecting the jobs of a worker lane."""
    if lane not in LANES:
        raise InvalidParameterError(f"lane must be one of {LANES}, got {lane!r}")
    return {"all": [], "train": ["kind = 'train'"], "analysis": ["kind != 'train'"],
            "short": ["kind != 'train'", f"{_ESTIMATE_SQL} <= {SHORT_S!r}"]}[lane]


#: a job's estimated seconds in SQL (NULL for training and for analyses queued without one)
_ESTIMATE_SQL = "json_extract(config, '$.estimate_s')"
#: the order workers claim jobs in: analyses before training, short analyses first, then oldest
CLAIM_ORDER = f"(kind = 'train'), (COALESCE({_ESTIMATE_SQL}, 1e300) > {SHORT_S!r}), id"


def _config(kind: str, text: str):
    """The job's config: a TrainConfig, or an AnalysisJob (request parsed by its registry entry)."""
    if kind == TRAIN:
        from engine.training.config import TrainConfig

        return TrainConfig.from_json(text)
    from engine.analysis.registry import request_from_dict

    try:
        data = json.loads(text)
        request = request_from_dict(kind, data["request"])
    except (ValueError, KeyError, TypeError, RobustScopeError) as exc:  # e.g. a kind this version lacks
        return AnalysisJob(_UnreadableRequest(kind, text, str(exc)), False, "auto")
    estimate = data.get("estimate_s")
    return AnalysisJob(request, bool(data.get("use_cache", True)), str(data.get("device", "auto")),
                       float(estimate) if isinstance(estimate, (int, float)) and not isinstance(estimate, bool) else None)


@dataclass(frozen=True)
class _UnreadableRequest:
    """An analysis job this version cannot parse (listed, never run: running it fails plainly)."""

    kind: str
    text: str
    error: str

    def to_dict(self) -> dict:
        return {"unreadable": self.text, "error": self.error}

    def describe(self) -> str:
        return f"{self.kind}: (unreadable request: {self.error})"

    def validate(self):
        raise InvalidParameterError(f"this {self.kind} job's request cannot be read: {self.error}")


def _job(row: sqlite3.Row) -> Job:
    kind = row["kind"] or TRAIN
    return Job(
        id=row["id"], name=row["name"], config=_config(kind, row["config"]), status=row["status"],
        created=row["created"], started=row["started"], finished=row["finished"], heartbeat=row["heartbeat"],
        worker_pid=row["worker_pid"], attempts=row["attempts"], cancel_requested=bool(row["cancel_requested"]),
        error=row["error"], checkpoint=row["checkpoint"], best_checkpoint=row["best_checkpoint"],
        kind=kind, result_key=row["result_key"],
        settings=json.loads(row["settings"]) if row["settings"] else None,
    )
