"""Helpers shared by the analysis tests (imported as a plain module from tests/, like factories)."""
from __future__ import annotations

import json

import pytest

from engine.analysis import AnalysisCancelled, ModelRef, ResultStore, run_analysis
from engine.cli import main


def cli(argv, capsys) -> tuple[int, dict | None, str]:
    """``python -m engine ARGV``: exit code, the JSON it printed (or None) and stderr."""
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip().startswith("{") else None), err


def refs(paths) -> tuple[ModelRef, ModelRef]:
    """The ``tiny_checkpoints`` as models A (standard) and B (robust)."""
    return ModelRef.of(paths["standard"]), ModelRef.of(paths["robust"])


def without(obj, keys: tuple[str, ...]):
    """``obj`` (a report as JSON) without the fields ``keys`` at any depth (e.g. wall-clock fields,
    which differ between two runs)."""
    if isinstance(obj, dict):
        return {k: without(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, (list, tuple)):
        return [without(v, keys) for v in obj]
    return obj


def assert_stopping_stores_nothing(request, polls: int) -> None:
    """Stopped at its ``polls + 1``-th look at ``should_stop``, ``request`` raises
    AnalysisCancelled and leaves neither a result nor partial state in the store."""
    calls = []

    def stop_soon():
        calls.append(1)
        return len(calls) > polls

    with pytest.raises(AnalysisCancelled):
        run_analysis(request, should_stop=stop_soon)
    store = ResultStore()
    assert not store.exists(request.key()) and store.list() == []
    assert not store.partial_dir(request.key()).exists()


def background_roundtrip(argv: list[str], kind: str, capsys) -> dict:
    """``argv --json --background`` queues a ``kind`` job and stores nothing; a worker runs it;
    ``jobs wait`` ends done and ``jobs result --json`` prints the stored result, which the
    foreground command (``argv --json``) then prints too. Returns that stored result."""
    from engine.jobs import JobStore, run_worker

    rc, queued, err = cli(argv + ["--json", "--background"], capsys)
    assert rc == 0 and queued["status"] == "queued" and queued["kind"] == kind
    assert "jobs wait" in err and ResultStore().list() == []
    assert run_worker(JobStore(), once=True, lane="analysis") == 1
    rc, waited, _ = cli(["jobs", "wait", queued["job"], "--quiet", "--json"], capsys)
    assert rc == 0 and waited["status"] == "done"
    rc, stored, _ = cli(["jobs", "result", queued["job"], "--json"], capsys)
    assert rc == 0 and stored["cached"] is True and stored["result"] == waited["result"]
    rc, foreground, _ = cli(argv + ["--json"], capsys)
    assert rc == 0 and foreground == stored  # the same stored result
    return stored
