"""The unit atlas as a stored analysis (issue 24): stored and answered again, resumed after a
kill -9 at the next render batch, its CLI, and the static HTML export whose every link resolves."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analysis_helpers import cli
from engine.analysis import ResultStore, run_analysis
from engine.analysis.kinds.atlas import AtlasRequest, partial_atlas
from engine.analysis.runner import read_state
from engine.errors import InvalidParameterError

pytestmark = pytest.mark.usefixtures("no_autostart")
REPO = Path(__file__).resolve().parents[4]


def atlas_request(paths, **kw) -> AtlasRequest:
    return AtlasRequest.make(**{"models": (paths["standard"], paths["robust"]), "layers": ("net.block1",),
                                "dataset": "shapes", "n": 40, "k": 4, "directions": 2, "steps": 6,
                                "render_batch": 2, **kw})


def test_an_atlas_is_stored_matched_and_answered_again(tiny_checkpoints):
    request = atlas_request(tiny_checkpoints)
    result = run_analysis(request)
    atlas = result.value()
    a, b = atlas.models
    assert a.rendered == len(a.units.mean) == len(a.images) and a.images.dtype == np.uint8
    assert a.images.shape[1:] == (32, 32, 3) and a.direction_images.shape[0] == 2
    assert a.images.reshape(len(a.images), -1).std(axis=1).min() > 0   # every unit was rendered
    assert atlas.match(0, 0)[0][0] in range(len(b.units.mean)) and len(atlas.match(1, 0)) == 3
    again = run_analysis(request)
    assert again.cached and np.array_equal(again.value().models[1].images, b.images)


def test_a_one_model_atlas_and_bad_requests(tiny_checkpoints):
    request = atlas_request(tiny_checkpoints, models=(tiny_checkpoints["standard"],), directions=0)
    atlas = run_analysis(request).value()
    assert len(atlas.models) == 1 and atlas.matches is None and atlas.match(0, 1) == []
    with pytest.raises(InvalidParameterError, match="k must be an integer in"):
        atlas_request(tiny_checkpoints, k=41)
    with pytest.raises(InvalidParameterError, match="give one layer, or one per model"):
        atlas_request(tiny_checkpoints, models=(tiny_checkpoints["standard"],), layers=("net.block1", "net.block2"))
    with pytest.raises(InvalidParameterError, match="models must list one to 2 checkpoints"):
        atlas_request(tiny_checkpoints, models=(tiny_checkpoints["standard"],) * 3)


_KILLABLE = """
import sys
from engine.analysis import run_analysis
from engine.analysis.kinds.atlas import AtlasRequest
request = AtlasRequest.from_json(sys.argv[1])
run_analysis(request)
"""


def test_kill_9_mid_atlas_resumes_at_the_next_batch(tiny_checkpoints, monkeypatch):
    """A worker killed while rendering leaves its partial atlas (scan + the batches done): the page
    can show it, and the next run renders only the batches left and gives the same atlas."""
    request = atlas_request(tiny_checkpoints, steps=40, render_batch=1)
    store = ResultStore()
    state_dir = store.partial_dir(request.key())
    child = subprocess.Popen([sys.executable, "-c", _KILLABLE, request.to_json()], cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        deadline = time.monotonic() + 120
        rendered = 0
        while time.monotonic() < deadline and rendered < 2:
            time.sleep(0.2)
            try:
                rendered = read_state(state_dir, request, request.key())["0/units_rendered"]
            except Exception:   # not written yet, or being replaced: look again
                continue
        assert rendered >= 2, "the child never saved two render batches"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    state = read_state(state_dir, request, request.key())
    shown = partial_atlas(request, state)
    done = shown.models[0].rendered
    assert done >= 2 and shown.models[0].images[:done].std() > 0
    import engine.featvis.atlas as atlas_module

    calls = []
    real = atlas_module.render_units
    monkeypatch.setattr(atlas_module, "render_units", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed = run_analysis(request)
    total = sum(len(m.images) + len(m.direction_images) for m in resumed.value().models)
    assert len(calls) == total - done   # one batch per unit here: only the batches left were rendered
    fresh = run_analysis(request, store=ResultStore(store.root.parent / "fresh"))
    for got, want in zip(resumed.value().models, fresh.value().models):
        assert np.abs(got.images.astype(int) - want.images.astype(int)).max() <= 8
        np.testing.assert_array_equal(got.units.topk_index, want.units.topk_index)
    assert not state_dir.exists()


def _links(page: Path) -> list[str]:
    return re.findall(r"(?:href|src)='([^']+)'", page.read_text())


def test_the_cli_prints_and_exports_an_atlas_whose_every_link_resolves(tiny_checkpoints, tmp_path, capsys):
    argv = ["atlas", "--checkpoint", tiny_checkpoints["standard"], "--compare", tiny_checkpoints["robust"],
            "--layer", "net.block1", "--dataset", "shapes", "--n", 40, "--k", 4, "--directions", 2, "--steps", 6]
    rc, body, _ = cli([*argv, "--json"], capsys)
    assert rc == 0 and [m["units"] for m in body["models"]] == [4, 4] and body["models"][0]["unit_table"][0]["match"] in range(4)
    rc, _, err = cli([*argv, "--out", tmp_path / "html"], capsys)
    assert rc == 0 and "stored earlier" in err
    root = tmp_path / "html"
    pages = [root / "index.html", *sorted((root / "units").glob("*.html"))]
    assert len(pages) == 9 and (root / "index-match.html").is_file()
    for page in [*pages, *root.glob("index-*.html")]:
        for link in _links(page):
            assert (page.parent / link).resolve().is_file(), (page.name, link)
    unit_page = (root / "units" / "a-0001.html").read_text()
    assert "Best matches in B" in unit_page and "unit 2 →" in unit_page
    assert "a-0001-top-3.png" in unit_page and "a-0001-top-4.png" not in unit_page   # k = 4
    rc, _, err = cli([*argv, "--csv", tmp_path / "units.csv"], capsys)
    assert rc == 0 and len((tmp_path / "units.csv").read_text().splitlines()) == 1 + 8
    rc, _, err = cli([*argv[:-2], "--compare-layer", "net.block2", "--json"], capsys)
    assert rc == 0
    rc, _, err = cli(["atlas", "--checkpoint", tiny_checkpoints["standard"], "--layer", "net.block1",
                      "--compare-layer", "x"], capsys)
    assert rc == 2 and "error: --compare-layer needs --compare" in err
    assert json.loads(json.dumps(body))   # plain JSON
