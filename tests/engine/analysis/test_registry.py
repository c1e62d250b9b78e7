"""The analysis registry: a kind declared in one file (a plugin named in ROBUSTSCOPE_ANALYSES) runs in
the foreground, in a background worker process, answers from the store and reopens on the Results
page, with nothing else edited; the registry refuses what would split results."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from engine.analysis import ANALYSES, ModelRef, ResultStore, get_analysis, register, run_analysis
from engine.analysis.registry import PLUGINS_ENV
from engine.errors import InvalidParameterError

ROOT = Path(__file__).resolve().parents[3]

#: one file: the request, its run/decode/report, its cost model and its page view
TOY_KIND = '''
"""A toy analysis: the mean of each of the first ``n`` test images under one model's input scale."""
from dataclasses import dataclass

import numpy as np

from engine.analysis.base import ModelRef, Payload, Request
from engine.analysis.fields import check_int
from engine.analysis.registry import register


@register(title="Toy image means", page="results", view=__name__)
@dataclass(frozen=True)
class ToyRequest(Request):
    kind = "toy_means"
    MODEL_FIELDS = ("model",)

    model: ModelRef
    n: int = 4

    def _check(self):
        check_int("n", self.n, 1, 64)


def run(request, ctx):
    dataset = ctx.images("shapes", "test", request.n)
    (loaded,), notes = ctx.models([request.model], dataset)
    images = np.stack([np.asarray(dataset[i][0]) for i in range(request.n)])
    ctx.report(1, 1)
    return Payload({"means": images.reshape(request.n, -1).mean(axis=1)}, {"notes": notes, "pid": __import__("os").getpid()})


def decode(result, **_options):
    return result.arrays["means"]


def report(result):
    return {"means": [round(float(v), 6) for v in result.arrays["means"]], "pid": result.meta["pid"]}


def render(result):
    import streamlit as st

    st.subheader("Toy means")
    st.dataframe({"mean": decode(result).tolist()})
'''


@pytest.fixture
def toy_kind(tmp_path, monkeypatch):
    """The toy kind's file on the import path and named in ROBUSTSCOPE_ANALYSES (as a project adds one)."""
    folder = tmp_path / "plugins"
    folder.mkdir()
    (folder / "toy_means_kind.py").write_text(textwrap.dedent(TOY_KIND))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv(PLUGINS_ENV, "toy_means_kind")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), str(ROOT)]))
    monkeypatch.setenv("ROBUSTSCOPE_AUTOSTART_WORKER", "0")
    yield folder
    sys.modules.pop("toy_means_kind", None)
    from engine.analysis import registry

    registry._REGISTRY.pop("toy_means", None)


def test_a_kind_from_one_file_runs_here_in_a_worker_from_the_store_and_on_the_results_page(toy_kind, tiny_checkpoints):
    analysis = get_analysis("toy_means")
    assert analysis.title == "Toy image means" and analysis.view == "toy_means_kind"
    request = analysis.request.from_dict({"model": ModelRef.of(tiny_checkpoints["standard"]).to_dict(), "n": 3})

    from engine.analysis.cost import RUN_OVERHEAD_S, estimate
    from engine.checkpoints import load

    cost = estimate(request, [load(tiny_checkpoints["standard"])])      # the default cost model: one pass
    assert cost.passes == 1.0 and cost.seconds == pytest.approx(RUN_OVERHEAD_S + cost.per_image_s * 3)

    here = run_analysis(request)                                         # foreground
    assert not here.cached and here.value().shape == (3,)
    assert here.meta["pid"] == os.getpid()
    again = run_analysis(request)                                        # from the store
    assert again.cached and np.array_equal(again.value(), here.value())

    from engine.jobs import JobStore, submit

    other = analysis.request(model=request.model, n=5)
    job = submit(other)                                                  # background, a worker process
    assert job.status == "queued"
    done = subprocess.run([sys.executable, "-m", "engine.jobs", "--once"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    finished = JobStore().get(job.id)
    assert finished.status == "done", finished.error
    stored = ResultStore().load(finished.result_key)
    assert stored.meta["pid"] != os.getpid() and stored.value().shape == (5,)
    assert run_analysis(other).cached

    results = AppTest.from_file(str(ROOT / "pages" / "results.py"), default_timeout=60)
    results.query_params["result"] = finished.result_key
    results.run()
    assert not results.exception
    assert results.selectbox(key="results_pick").value == finished.result_key
    assert "Toy means" in [h.value for h in results.subheader]
    assert list(results.dataframe[-1].value["mean"]) == pytest.approx(stored.value().tolist())


def test_every_builtin_kind_declares_its_functions():
    assert len(ANALYSES) >= 15
    for kind, analysis in ANALYSES.items():
        assert analysis.request.kind == kind
        assert analysis.module.startswith("engine.analysis.kinds.")
        assert callable(analysis.run) and callable(analysis.decode) and callable(analysis.report)
        assert callable(analysis.passes)


def test_a_kind_registered_twice_from_another_module_is_refused():
    from engine.analysis.kinds.cka import CKARequest

    clone = type("CKARequest", (), {"kind": "cka", "__module__": "somewhere.else"})
    with pytest.raises(InvalidParameterError, match="registered twice"):
        register(title="again", page="representations")(clone)
    assert get_analysis("cka").request is CKARequest


def test_an_unknown_kind_and_an_unimportable_plugin_are_clear_errors(monkeypatch):
    with pytest.raises(InvalidParameterError, match="unknown analysis 'nope'"):
        get_analysis("nope")
    monkeypatch.setenv(PLUGINS_ENV, "no_such_module_here")
    with pytest.raises(InvalidParameterError, match="no_such_module_here"):
        get_analysis("cka")


def test_requests_are_valid_by_construction(tiny_checkpoints):
    from engine.analysis.kinds.cka import CKARequest

    ref = ModelRef.of(tiny_checkpoints["standard"])
    with pytest.raises(InvalidParameterError, match="n must be an integer"):
        CKARequest(a=ref, b=ref, dataset="shapes", n=2)
    with pytest.raises(InvalidParameterError, match="kernel"):
        CKARequest(a=ref, b=ref, dataset="shapes", kernel="cosine")
