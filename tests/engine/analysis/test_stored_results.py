"""Stored results that cannot lie (issue 23): every entry is verified as a whole (one digest over
the record and the arrays) and decoded against its schema; partial state carries its own digest
and request. Whatever fails is moved aside and recomputed — never served, never a traceback."""
from __future__ import annotations

import errno
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis_helpers import cli, refs
from engine.analysis import CorruptResult, ResultStore, run_analysis
from engine.analysis.kinds.cka import CKARequest
from engine.analysis.runner import STATE_ARRAYS, STATE_META, RunContext
from engine.analysis.store import ARRAYS_FILE, RESULT_FILE, digest_of
from engine.errors import StorageError

pytestmark = pytest.mark.usefixtures("no_autostart")


def cka_request(tiny_checkpoints, **kw) -> CKARequest:
    a, b = refs(tiny_checkpoints)
    return CKARequest(**{"a": a, "b": b, "dataset": "shapes", "n": 24, "batch_size": 8, **kw})


@pytest.fixture
def stored(tiny_checkpoints):
    """A stored CKA result: (store, request, result)."""
    request = cka_request(tiny_checkpoints)
    return ResultStore(), request, run_analysis(request)


def rewrite(store, key, change, fix_digest=True) -> None:
    """Edit ``key``'s record with ``change(record)``; with ``fix_digest`` the digest is recomputed,
    as a careful forger would, so only the schema checks can catch the edit."""
    path = store.path(key) / RESULT_FILE
    record = json.loads(path.read_text())
    change(record)
    if fix_digest:
        record["digest"] = digest_of(record, (store.path(key) / ARRAYS_FILE).read_bytes())
    path.write_text(json.dumps(record))


def assert_recomputed(request, first, match: str) -> None:
    """The damaged entry is not served: the next run recomputes, notes why, and stores it again."""
    again = run_analysis(request)
    assert not again.cached
    assert any("damaged" in note and match in note for note in again.notes), again.notes
    np.testing.assert_allclose(again.arrays["across"], first.arrays["across"])
    assert run_analysis(request).cached


@pytest.mark.parametrize("change, fix_digest, match", [
    (lambda r: r["meta"].update(n=999), False, "digest"),                           # an edited figure
    (lambda r: r["meta"]["block_structure"].pop("a"), True, "schema"),              # a missing field
    (lambda r: r["meta"].update(layers_a="x"), True, "schema"),                     # a wrong type
    (lambda r: r["arrays"]["across"].update(shape=[1, 1]), True, "array 'across'"),  # a wrong shape
    (lambda r: r["arrays"]["across"].update(dtype="<i2"), True, "array 'across'"),   # a wrong dtype
    (lambda r: r["meta"].update(layers_b=["net.block1"]), True, "sizes differ"),    # fields that disagree
    (lambda r: r["meta"].pop("notes"), True, "'notes' is missing"),
    (lambda r: r["request"].update(n=25), True, "not the one"),                     # another request
    (lambda r: r.update(key="0" * 32), True, "another result"),
    (lambda r: r.update(seconds="fast"), True, "'seconds'"),
    (lambda r: r.update(format_version=1), True, "cannot be verified"),            # an older format
    (lambda r: r.pop("digest"), False, "'digest'"),
])
def test_an_edited_record_is_never_served(stored, change, fix_digest, match):
    store, request, first = stored
    rewrite(store, first.key, change, fix_digest)
    with pytest.raises(CorruptResult, match=match):
        store.load(first.key)
    assert_recomputed(request, first, match)


def test_truncated_or_swapped_files_are_never_served(stored, tiny_checkpoints):
    store, request, first = stored
    record = store.path(first.key) / RESULT_FILE
    record.write_bytes(record.read_bytes()[:100])
    assert_recomputed(request, first, "not valid JSON")
    arrays = store.path(first.key) / ARRAYS_FILE
    arrays.write_bytes(arrays.read_bytes()[:-10])
    assert_recomputed(request, first, "digest")
    # another result's arrays, with a matching digest: the schema says the shapes differ
    other = run_analysis(cka_request(tiny_checkpoints, layers_a=("net.block1",)))
    arrays.write_bytes((store.path(other.key) / ARRAYS_FILE).read_bytes())
    rewrite(store, first.key, lambda r: None)
    assert_recomputed(request, first, "array")


def test_the_cli_never_prints_an_edited_figure(tiny_checkpoints, capsys):
    argv = ["evaluate", "--checkpoint", tiny_checkpoints["standard"], "--dataset", "shapes", "--n", 16, "--json"]
    rc, first, _ = cli(argv, capsys)
    assert rc == 0 and first["cached"] is False
    [entry] = ResultStore().list()
    path = ResultStore().path(entry.key) / RESULT_FILE
    record = json.loads(path.read_text())
    record["meta"]["clean"]["accuracy"] = 1.0
    path.write_text(json.dumps(record))
    rc, again, err = cli(argv, capsys)
    assert rc == 0 and again["cached"] is False and again["clean_acc"] == first["clean_acc"] != 1.0
    assert "damaged" in err and "digest" in err


def test_every_built_in_kind_declares_a_schema_that_its_results_meet():
    """Results are checked against their kind's SCHEMA on save (so every kind's own tests check
    its schema) and on read; a kind without one would only be checked by its report."""
    from engine.analysis import ANALYSES
    from engine.analysis.schema import Array, Schema

    assert all(isinstance(ANALYSES[kind].schema, Schema) for kind in ANALYSES)
    schema = ANALYSES["cka"].schema
    good = {"within_a": np.eye(2), "within_b": np.eye(1), "across": np.ones((2, 1))}
    meta = {"layers_a": ["x", "y"], "layers_b": ["z"], "kernel": "linear", "n": 4, "inputs": "clean", "batch_size": 2,
            "warnings": [], "notes": [], "device": "cpu", "block_structure": {"a": {}, "b": {}},
            "corresponding_depths": [], "resumed_at_images": 0}
    assert schema.problems(meta, good) == []
    assert schema.problems(meta, {**good, "extra": np.eye(2)}) == ["array 'extra' is not one this kind stores"]
    assert schema.problems({**meta, "n": True}, good) == ["meta.n: expected int, got bool"]
    assert schema.problems({**meta, "warnings": [1]}, good) == ["meta.warnings[0]: expected str, got int"]
    assert Schema(arrays={"a_*": Array("f", 1)}).problems({}, {"a_0": np.zeros(2, np.int64)}) == \
        ["array 'a_0' has dtype int64, expected kind 'f'"]


def test_a_result_that_misses_its_own_schema_is_never_saved(tiny_checkpoints, monkeypatch):
    import engine.analysis.kinds.cka as cka

    real = cka.run
    monkeypatch.setattr(cka, "run", lambda request, ctx: (p := real(request, ctx), p.meta.pop("layers_b"), p)[2])
    with pytest.raises(TypeError, match="does not match its kind's SCHEMA: meta: field 'layers_b' is missing"):
        run_analysis(cka_request(tiny_checkpoints))
    assert ResultStore().list() == []


# ------------------------------------------------------------------ partial state
def saved_state(request, store) -> RunContext:
    """A context of ``request`` that saved CKA-like partial state, as an interrupted run leaves."""
    ctx = RunContext(request, request.key(), state_dir=store.partial_dir(request.key()))
    ctx.save_state({"total": np.eye(3), "batches": 2, "images": 16, "names": ["a", "b", "c"]}, force=True)
    return ctx


def test_partial_state_round_trips_only_for_its_own_request(tiny_checkpoints):
    store = ResultStore()
    request = cka_request(tiny_checkpoints)
    saved_state(request, store)
    again = RunContext(request, request.key(), state_dir=store.partial_dir(request.key()))
    state = again.load_state()
    assert again.resumed and state["images"] == 16 and np.array_equal(state["total"], np.eye(3))
    # the same folder read for another request (a key collision, a copied folder) is discarded
    other = cka_request(tiny_checkpoints, n=32)
    foreign = RunContext(other, request.key(), state_dir=store.partial_dir(request.key()))
    assert foreign.load_state() is None and not foreign.resumed
    assert "another request" in foreign.notes[0] and not store.partial_dir(request.key()).exists()


@pytest.mark.parametrize("damage, match", [
    (lambda d: (d / STATE_ARRAYS).write_bytes((d / STATE_ARRAYS).read_bytes()[:-7]), "digest"),
    (lambda d: (d / STATE_META).write_text("{ garbage"), "cannot be read"),
    (lambda d: (d / STATE_ARRAYS).unlink(), "cannot be read"),
    (lambda d: (d / STATE_META).write_text(json.dumps({"format": "robustscope-partial-1", "values": {}})),
     "not partial state"),
])
def test_damaged_partial_state_is_discarded_and_the_run_starts_over(tiny_checkpoints, damage, match):
    store = ResultStore()
    request = cka_request(tiny_checkpoints)
    reference = run_analysis(request, store=ResultStore(store.root.parent / "elsewhere"))
    ctx = saved_state(request, store)
    damage(ctx.state_dir)
    result = run_analysis(request)   # with the damaged state there, and without --no-cache
    assert result.meta["resumed_at_images"] == 0
    assert any("discarded" in note and match in note for note in result.notes), result.notes
    np.testing.assert_allclose(result.arrays["across"], reference.arrays["across"])
    assert not store.partial_dir(request.key()).exists()


def test_partial_state_that_cannot_be_written_only_ends_resuming(tiny_checkpoints, monkeypatch):
    import engine.analysis.runner as runner

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", "state.npz")

    monkeypatch.setattr(runner, "atomic_write_bytes", full)
    request = cka_request(tiny_checkpoints)
    ctx = RunContext(request, request.key(), state_dir=ResultStore().partial_dir(request.key()))
    ctx.save_state({"images": 8}, force=True)
    assert ctx.state_dir is None and "the disk is full" in ctx.notes[0] and "cannot be resumed" in ctx.notes[0]


# ------------------------------------------------------------------ faults
def test_a_full_disk_while_saving_is_one_sentence_and_leaves_no_entry(tiny_checkpoints, monkeypatch, capsys):
    import engine.analysis.store as store_module

    def full(path, *_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store_module, "atomic_write_bytes", full)
    request = cka_request(tiny_checkpoints)
    with pytest.raises(StorageError, match=r"cannot save the result in .*: the disk is full.* — free some space"):
        run_analysis(request)
    assert ResultStore().list() == [] and not any(ResultStore().root.glob(".tmp-*"))
    a, b = tiny_checkpoints["standard"], tiny_checkpoints["robust"]
    rc, _, err = cli(["cka", "--a", a, "--b", b, "--dataset", "shapes", "--n", 24, "--json"], capsys)
    [line] = [line for line in err.split("\n") if line and not line.startswith("\rcka:")]  # after the progress
    assert rc == 1 and line.startswith("error: cannot save the result in ") and "the disk is full" in line


def test_a_damaged_entry_in_a_read_only_store_is_still_not_served(stored, monkeypatch):
    store, request, first = stored
    rewrite(store, first.key, lambda r: r["meta"].update(n=1), fix_digest=False)
    import engine.analysis.store as store_module

    def read_only(*_a, **_k):
        raise OSError(errno.EROFS, "Read-only file system", str(store.root))

    monkeypatch.setattr(store_module.os, "rename", read_only)
    monkeypatch.setattr(store_module, "atomic_write_bytes", read_only)
    with pytest.raises(StorageError, match="read-only"):
        run_analysis(request)
    with pytest.raises(CorruptResult):   # still there, still refused
        store.load(first.key)


# ------------------------------------------------------------------ fuzzing
def _mutations():
    """A stored record changed at one place: a field removed, replaced by another JSON value, or
    the text cut short."""
    values = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False)
                          | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=4), inner, max_size=3), max_leaves=6)
    return st.tuples(st.sampled_from(["drop", "replace", "cut", "meta"]), st.text(max_size=12), values,
                     st.integers(0, 10_000))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=_mutations())
def test_fuzzed_records_load_intact_or_raise_corrupt_result(stored, mutation):
    store, _request, first = stored
    path = store.path(first.key) / RESULT_FILE
    original = path.read_bytes()
    how, name, value, cut = mutation
    record = json.loads(original)
    field = name if name in record or how == "replace" else sorted(record)[cut % len(record)]
    if how == "drop":
        record.pop(field, None)
    elif how == "replace":
        record[field] = value
    elif how == "meta":
        record["meta"][sorted(record["meta"])[cut % len(record["meta"])]] = value
    text = json.dumps(record).encode() if how != "cut" else original[:cut % len(original)]
    try:
        path.write_bytes(text)
        try:
            loaded = store.load(first.key)
        except CorruptResult:
            assert text != original
        else:
            assert json.loads(text) == json.loads(original)   # only an unchanged record is served
            np.testing.assert_array_equal(loaded.arrays["across"], first.arrays["across"])
        assert len(store.list()) == 1   # listed (maybe as damaged), never raised
    finally:
        path.write_bytes(original)


def test_partial_state_follows_the_weights_not_the_path(tiny_checkpoints, tmp_path):
    """A checkpoint moved (or a cluster node's own copy of it): same sha256, same request — its
    partial state is still this request's."""
    import shutil

    store = ResultStore()
    request = cka_request(tiny_checkpoints)
    saved_state(request, store)
    for suffix in (".safetensors", ".json"):
        for kind in ("standard", "robust"):
            shutil.copy(tiny_checkpoints[kind].with_suffix(suffix), tmp_path / f"moved_{kind}{suffix}")
    moved = cka_request({kind: tmp_path / f"moved_{kind}.safetensors" for kind in ("standard", "robust")})
    assert moved.key() == request.key() and moved.a.path != request.a.path
    ctx = RunContext(moved, moved.key(), state_dir=store.partial_dir(moved.key()))
    assert ctx.load_state() is not None and ctx.resumed
