"""``run_analysis``: one request in, one stored result out.

    request = get_analysis("cka").request.make(a="checkpoints/std", b="checkpoints/rob", dataset="cifar10", n=2000)
    result = run_analysis(request)
    result.cached          # True when the same request was answered before (same weights, version)
    result.value()         # the CKAComparison the page plots

The same call serves the CLI, the dashboard and the job worker (``engine.jobs.submit`` queues a
request; the worker calls :func:`run_analysis`). A finished result is stored under
``<runs>/results/<key>/`` (``engine.analysis.store``); a stopped run raises
:class:`~engine.analysis.base.AnalysisCancelled` and stores nothing.
"""
from __future__ import annotations

import json
import logging
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from engine.analysis.base import AnalysisCancelled, AnalysisResult, ModelRef, Request
from engine.analysis.registry import get_analysis
from engine.analysis.store import CorruptResult, ResultStore, array_spec, digest_of, read_arrays
from engine.errors import CheckpointError, InvalidParameterError, StorageError, storage
from engine.fileio import atomic_write_bytes, atomic_write_text
from engine.runtime import Progress, ShouldStop

log = logging.getLogger("engine.analysis")

#: partial state (resume) is written at most this often, in seconds
STATE_EVERY_S = 1.0
STATE_ARRAYS, STATE_META = "state.npz", "state.json"
STATE_FORMAT = "robustscope-partial-1"
#: the steps of the one progress bar a run of several stages draws (:meth:`RunContext.stage`)
BAR = 100


@contextmanager
def seeded(seed: int, device: str = "cpu"):
    """Torch's RNG (CPU and ``device``'s GPU) seeded with ``seed`` inside the block, restored after."""
    import torch

    where = torch.device(device)
    devices = [where.index if where.index is not None else torch.cuda.current_device()] if where.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class RunContext:
    """What a run function gets besides its request: models, device, progress, stop, resume state.

    Attributes:
        request, key: the request and its result key.
        progress, should_stop: the caller's callbacks (may be None).
        state_dir: where partial state is kept between attempts (None: no resume).
    """

    def __init__(self, request: Request, key: str, device: str = "auto", progress: Progress | None = None,
                 should_stop: ShouldStop | None = None, state_dir: Path | None = None, loaded: Iterable = ()):
        self.request, self.key = request, key
        self._device_name = device
        self.progress, self.should_stop = progress, should_stop
        self.state_dir = state_dir
        self._loaded = {(str(m.sha256), str(getattr(m, "branch", "main"))): m for m in loaded if m is not None}
        self._last_save = 0.0
        self.resumed = False
        #: what happened on the way (discarded partial state ...), kept in the result's notes
        self.notes: list[str] = []

    @property
    def device(self) -> str:
        from engine.device import resolve_device

        return str(resolve_device(self._device_name))

    def load(self, ref: ModelRef):
        """The ``LoadedCheckpoint`` of ``ref`` (one the caller already loaded, else from disk).

        Raises:
            CheckpointError: the file's weights are not the ones the request names (the
                checkpoint was replaced after the request was made).
        """
        found = self._loaded.get((ref.sha256, ref.branch))
        if found is not None:
            return found
        from engine.checkpoints import load

        loaded = load(ref.path, device=self.device, bn_branch=ref.branch)
        if loaded.sha256 != ref.sha256:
            raise CheckpointError(
                f"{ref.path} now holds other weights (sha256 {loaded.sha256[:12]}…, the request names "
                f"{ref.sha256[:12]}…): the checkpoint was replaced; make the request again"
            )
        self._loaded[(ref.sha256, ref.branch)] = loaded
        return loaded

    def models(self, refs: Sequence[ModelRef], dataset, classes: bool = True) -> tuple[list, list[str]]:
        """The models ``refs`` loaded (:meth:`load`), checked against ``dataset`` (a loaded dataset,
        which carries its spec, or a registry name), and the notes to show about them.

        Args:
            classes: a different class count is an error (the analysis uses the labels), or only
                a note (label-free analyses such as CKA).

        Raises:
            InvalidParameterError: a model cannot take the dataset's images (or labels).
        """
        from engine.data import get_spec
        from engine.selection import check_compatible

        loaded = [self.load(ref) for ref in refs]
        spec = getattr(dataset, "spec", None) or get_spec(dataset)
        return loaded, check_compatible(loaded, spec, classes=classes)

    def images(self, dataset: str, split: str = "test", n: int | None = None, **options):
        """The ``split`` of ``dataset`` (``engine.data.load_dataset``; read lazily, so streaming),
        refusing an ``n`` larger than it holds with the split's size in the message."""
        from engine import data as edata

        found = edata.load_dataset(dataset, split=split, **options)
        if n is not None and n > len(found):
            raise InvalidParameterError(f"n must be an integer in [1, {len(found)}] (the {dataset} {split} "
                                        f"split's size), got {n}")
        return found

    def seeded(self, seed: int):
        """:func:`seeded` on this run's device: an attack's random starts repeat, and the
        caller's RNG is left as it was."""
        return seeded(seed, self.device)

    def stage(self, start: int, width: int) -> Progress:
        """``progress(done, total)`` of one stage, drawn on ``[start, start + width)`` of one bar of
        :data:`BAR` steps."""
        def update(done: int, total: int) -> None:
            self.report(start + width * done // max(total, 1), BAR)
        return update

    def stopped(self) -> bool:
        return self.should_stop is not None and bool(self.should_stop())

    def check_stop(self) -> None:
        """Raise AnalysisCancelled when the caller asked to stop."""
        if self.stopped():
            raise AnalysisCancelled(f"{self.request.kind} stopped before it finished; nothing was stored")

    def report(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(int(done), int(total))

    # ------------------------------------------------------------------ resume state
    def load_state(self) -> dict | None:
        """The partial state saved by an earlier attempt of this request, or None.

        The state must be whole (its digest) and this request's (its key and request): damaged,
        unreadable or foreign state is discarded with a note (:attr:`notes`) and the analysis
        starts over, never resumed from it.
        """
        if self.state_dir is None or not (self.state_dir / STATE_META).is_file():
            return None
        try:
            state = read_state(self.state_dir, self.request, self.key)
        except CorruptResult as exc:
            self.notes.append(f"the partial state of an earlier attempt was discarded ({exc}); "
                              "the analysis started over")
            self.clear_state()
            return None
        self.resumed = True
        return state

    def save_state(self, state: dict, force: bool = False) -> None:
        """Keep ``state`` (arrays + JSON values) for a later attempt; at most every STATE_EVERY_S.

        A state that cannot be written (full or read-only disk) only ends resuming for this run,
        with a note; the run goes on."""
        if self.state_dir is None:
            return
        now = time.monotonic()
        if not force and now - self._last_save < STATE_EVERY_S:
            return
        self._last_save = now
        try:
            with storage(f"cannot save partial state in {self.state_dir}"):
                write_state(self.state_dir, state, self.request, self.key)
        except StorageError as exc:
            self.notes.append(f"{exc}; this run cannot be resumed if it is interrupted")
            self.state_dir = None

    def clear_state(self) -> None:
        if self.state_dir is not None and self.state_dir.exists():
            shutil.rmtree(self.state_dir, ignore_errors=True)


def write_state(folder: Path, state: dict, request: Request, key: str) -> None:
    """Write partial ``state`` to ``folder``: its arrays (``state.npz``) and a record
    (``state.json``: the JSON values, the key, the request, each array's dtype and shape, and a
    digest over all of it and the arrays' bytes), the record last."""
    import io

    folder.mkdir(parents=True, exist_ok=True)
    arrays = {k: np.asarray(v) for k, v in state.items() if isinstance(v, np.ndarray)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = buffer.getvalue()
    record = {"format": STATE_FORMAT, "key": key, "request": request.to_dict(),
              "values": {k: v for k, v in state.items() if k not in arrays},
              "arrays": {name: array_spec(value) for name, value in arrays.items()}}
    record = json.loads(json.dumps(record, allow_nan=False))
    record["digest"] = digest_of(record, data)
    atomic_write_bytes(folder / STATE_ARRAYS, data, what="partial state")
    atomic_write_text(folder / STATE_META, json.dumps(record), what="partial state")


def read_state(folder: Path, request: Request, key: str) -> dict:
    """The partial state in ``folder`` (JSON values and arrays), verified as :func:`write_state`
    wrote it for ``request``; CorruptResult saying what is wrong otherwise."""
    try:
        record = json.loads((folder / STATE_META).read_text(encoding="utf-8"))
        data = (folder / STATE_ARRAYS).read_bytes()
    except (OSError, ValueError, RecursionError) as exc:
        raise CorruptResult(f"it cannot be read: {str(exc)[:200]}") from None
    if not isinstance(record, dict) or record.get("format") != STATE_FORMAT or \
            not isinstance(record.get("values"), dict) or not isinstance(record.get("arrays"), dict):
        raise CorruptResult("it is not partial state this version wrote")
    if record.get("digest") != digest_of(record, data):
        raise CorruptResult("it does not match its digest (damaged or edited)")
    if record.get("key") != key or _pathless(record.get("request")) != _pathless(json.loads(request.to_json())):
        raise CorruptResult("it was saved for another request")
    return {**record["values"], **read_arrays(data, record["arrays"], key)}


def _pathless(value):
    """A request dict without its models' paths: where a checkpoint lies (another folder, another
    node's weights cache) does not change which request the state belongs to — its sha256 does."""
    if isinstance(value, dict):
        return {k: _pathless(v) for k, v in value.items() if not (k == "path" and "sha256" in value)}
    if isinstance(value, list):
        return [_pathless(v) for v in value]
    return value


def run_analysis(request: Request, progress: Progress | None = None, should_stop: ShouldStop | None = None, *,
                 use_cache: bool = True, device: str = "auto", store: ResultStore | None = None,
                 loaded: Iterable = (), resume: bool = True) -> AnalysisResult:
    """Answer ``request`` from the result store, else compute, store and return it.

    Args:
        request: a request of a registered kind (``engine.analysis.ANALYSES``).
        progress: ``progress(done, total)`` while computing.
        should_stop: polled between batches; True stops the run (AnalysisCancelled, nothing stored).
        use_cache: False recomputes even when a stored result exists (and replaces it).
        device: where to compute ("auto", "cpu", "cuda", ...); not part of the result key.
        store: the result store (default ``<runs>/results``).
        loaded: already loaded checkpoints (``LoadedCheckpoint``) to use instead of loading the
            request's models again; matched by sha256 and BN branch.
        resume: continue from partial state an interrupted attempt of the same request left.

    Returns:
        :class:`AnalysisResult`; ``cached`` says whether it came from the store. A damaged
        stored entry is moved aside, recomputed and named in ``notes``.

    Raises:
        InvalidParameterError / CheckpointError / DatasetUnavailableError: bad input.
        AnalysisCancelled: ``should_stop`` returned True.
    """
    analysis = get_analysis(request.kind)
    store = store or ResultStore()
    key = request.key()
    notes: list[str] = []
    if use_cache:
        found, note = cached_result(key, store)
        if found is not None:
            return found
        notes += [note] if note else []
    ctx = RunContext(request, key, device, progress, should_stop,
                     store.partial_dir(key) if resume else None, loaded)
    from engine.version import __version__

    start = time.perf_counter()
    try:
        payload = analysis.run(request, ctx)
    except AnalysisCancelled:
        ctx.clear_state()
        raise
    ctx.check_stop()
    seconds = time.perf_counter() - start
    result = AnalysisResult(request.kind, key, request, payload.arrays, payload.meta, seconds, time.time(),
                            cached=False, version=__version__, notes=tuple(notes + ctx.notes))
    store.save(result)
    ctx.clear_state()
    _record_time(request, ctx, seconds, store)
    return result


def _record_time(request: Request, ctx: RunContext, seconds: float, store: ResultStore) -> None:
    """Record the run's actual seconds beside its raw estimate (``engine.analysis.cost``), which
    corrects later estimates of the kind; a failure to record is logged, never the run's."""
    from engine.analysis.cost import record_actual
    from engine.errors import RobustScopeError

    try:
        record_actual(request, [ctx.load(ref) for ref in request.model_refs()], seconds, store.root)
    except (OSError, RobustScopeError) as exc:
        log.warning("could not record the run's time for later estimates: %s", exc)


def cached_result(key: str, store: ResultStore | None = None) -> tuple[AnalysisResult | None, str | None]:
    """``(stored result or None, note)``: a damaged entry is moved aside and named in the note."""
    store = store or ResultStore()
    try:
        return store.load(key), None
    except CorruptResult as exc:
        try:
            where = f"it was moved aside to {store.quarantine(key).name}"
        except StorageError as fault:
            where = f"it could not be moved aside ({fault})"
        return None, f"the stored result was damaged ({exc}); {where} and recomputed"


def load_result(key: str, store: ResultStore | None = None) -> AnalysisResult:
    """The stored result ``key`` (InvalidParameterError when there is none; CorruptResult when damaged)."""
    found = (store or ResultStore()).load(key)
    if found is None:
        raise InvalidParameterError(f"no stored result {key}")
    return found


def preflight(request: Request) -> Request:
    """The checks that need torch-side registries, before a request is queued: the dataset and
    distortion names exist, the kind's own ``check`` passes (e.g. the attack's parameters) and
    every checkpoint still holds the weights the request names."""
    from engine import data as edata

    dataset = getattr(request, "dataset", None)
    if dataset is not None and dataset not in edata.DATASETS:
        raise InvalidParameterError(f"unknown dataset {dataset!r}; choose one of: {', '.join(edata.DATASETS)}")
    names = getattr(request, "distortions", None)
    if names:
        from engine.data.distortions import get_distortion

        for name in names:
            get_distortion(name)
    check = get_analysis(request.kind).check
    if check is not None:
        check(request)
    for ref in request.model_refs():
        current = ModelRef.of(ref.path, ref.branch)
        if current.sha256 != ref.sha256:
            raise CheckpointError(f"{ref.path} holds other weights than the request names (it was replaced)")
    return request
