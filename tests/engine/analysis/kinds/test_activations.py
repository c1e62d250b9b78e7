"""Layer activation statistics (the worked example of a kind added in three files): the numbers equal
a brute-force computation, the CLI answers here, in the background and from the store, and the
Results page renders the stored result at its permalink."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from analysis_helpers import background_roundtrip, cli
from engine.analysis import ModelRef, run_analysis
from engine.analysis.kinds.activations import ActivationsRequest
from engine.errors import InvalidParameterError

RESULTS = str(Path(__file__).resolve().parents[4] / "pages" / "results.py")

pytestmark = pytest.mark.usefixtures("no_autostart")


def request_for(paths, **kw) -> ActivationsRequest:
    return ActivationsRequest.make(models=(paths["standard"], paths["robust"]), dataset="shapes", n=10,
                                   batch_size=4, **kw)


def test_statistics_equal_a_brute_force_pass(tiny_checkpoints):
    from engine import data as edata
    from engine.checkpoints import load
    from engine.models import default_layers, record_activations

    result = run_analysis(request_for(tiny_checkpoints))
    found = result.value()
    images, _ = edata.take(edata.load_dataset("shapes", split="test"), 10)
    for name, path in zip(result.meta["names"], (tiny_checkpoints["standard"], tiny_checkpoints["robust"])):
        model = load(path).model
        layers = default_layers(model)
        with torch.no_grad(), record_activations(model, layers) as rec:
            model(images)
        for layer in layers:
            out = rec.outputs[layer].double().numpy()
            assert found[name][layer]["mean"] == pytest.approx(out.mean(), abs=1e-9)
            assert found[name][layer]["mean_abs"] == pytest.approx(np.abs(out).mean(), abs=1e-9)
            assert found[name][layer]["positive_share"] == pytest.approx((out > 0).mean(), abs=1e-12)
    assert list(found) == ["tiny_standard", "tiny_robust"]


def test_the_dataset_defaults_to_the_card_and_bad_input_is_refused(tiny_checkpoints):
    made = ActivationsRequest.make(models=(tiny_checkpoints["standard"],), n=4)
    assert made.dataset == "shapes" and made.models == (ModelRef.of(tiny_checkpoints["standard"]),)
    with pytest.raises(InvalidParameterError, match="n must be an integer"):
        request_for(tiny_checkpoints, layers=None).__class__(models=made.models, dataset="shapes", n=0)
    with pytest.raises(InvalidParameterError, match="unknown or non-tensor layer|not a submodule|layer"):
        run_analysis(request_for(tiny_checkpoints, layers=("net.nope",)))


def test_cli_background_and_stored_answers(tiny_checkpoints, capsys, tmp_path):
    argv = ["activations", "--checkpoint", tiny_checkpoints["standard"], "--checkpoint", tiny_checkpoints["robust"],
            "--n", "8", "--batch-size", "4"]
    stored = background_roundtrip(argv, "layer_activations", capsys)
    assert {row["model"] for row in stored["rows"]} == {"tiny_standard", "tiny_robust"}
    rc, _, err = cli(argv + ["--out", tmp_path / "stats.csv"], capsys)
    assert rc == 0 and "stored earlier" in err
    lines = (tmp_path / "stats.csv").read_text().splitlines()
    assert lines[0] == "model,layer,mean,mean_abs,positive_share" and len(lines) == 1 + len(stored["rows"])
    rc, _, err = cli(["activations", "--checkpoint", tiny_checkpoints["standard"], "--n", "0"], capsys)
    assert rc == 2 and "error: --n must be" in err


def test_the_results_page_renders_the_stored_result_at_its_permalink(tiny_checkpoints):
    result = run_analysis(request_for(tiny_checkpoints))
    at = AppTest.from_file(RESULTS, default_timeout=60)
    at.query_params["result"] = result.key
    at.run()
    assert not at.exception
    assert at.selectbox(key="results_pick").value == result.key
    assert f"/results?result={result.key}" in " ".join(m.value for m in at.markdown)
    assert "Layer activation statistics" in [h.value for h in at.subheader]
    assert len(at.get("plotly_chart")) == 3
    table = at.dataframe[-1].value
    assert len(table) == len(result.arrays["stats_0"]) + len(result.arrays["stats_1"])
