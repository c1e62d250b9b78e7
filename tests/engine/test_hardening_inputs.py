"""Input hardening: a model on the wrong dataset, parameters without upper bounds, and
the small things a new user hit (AdvProp on the ℓ∞ line, the kornia warning, a silent job queue).

Every CLI case runs ``engine.cli.main`` in-process: a user error must come back as exit status 2
with ``error: ...`` on stderr; any other exception propagates and fails the test.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from engine import featvis
from engine.attacks import ATTACKS, make_attack
from engine.attacks.base import MAX_RESTARTS, MAX_STEPS
from engine.attacks.deepfool import DeepFool
from engine.attacks.penalty import CW, LBFGS
from engine.attacks.pgd import FGSM, PGD
from engine.cli import main, require_compatible
from engine.errors import InvalidParameterError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def models(tmp_path):
    """Tiny seeded checkpoints: ``shapes`` (3×32×32, 6 classes), ``mnist`` (1×28×28, 10 classes)
    and ``five`` (shapes-sized inputs but 5 classes)."""
    from engine.checkpoints import make_card, save_checkpoint
    from engine.models import build_model

    root = tmp_path / "ckpt"
    specs = {"shapes": ("shapes", 6, (3, 32, 32)), "mnist": ("mnist", 10, (1, 28, 28)),
             "five": ("shapes", 5, (3, 32, 32))}
    paths = {}
    for seed, (name, (dataset, classes, shape)) in enumerate(specs.items()):
        torch.manual_seed(seed)
        channels = shape[0]
        model = build_model("small_cnn", classes, shape, [0.5] * channels, [0.25] * channels, width=4, hidden=16)
        card = make_card(model, dataset, name=name, training={"method": "standard"})
        paths[name] = str(save_checkpoint(model.eval(), card, root / name))
    return paths


def run_cli(argv, capsys) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc, err, *fragments):
    assert rc == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


# ------------------------------------------------------------------ model / dataset mismatch
def mismatch_commands(m, s, tmp):
    """Every command that takes a checkpoint and a dataset, with the MNIST model on ``shapes``."""
    return {
        "evaluate": ["evaluate", "--checkpoint", m, "--dataset", "shapes", "--n", 4],
        "attack": ["attack", "--checkpoint", m, "--dataset", "shapes", "--n", 4, "--out", tmp / "x.npz"],
        "cka": ["cka", "--a", s, "--b", m, "--dataset", "shapes", "--n", 8, "--batch-size", 4, "--json"],
        "saliency": ["saliency", "--checkpoint", m, "--dataset", "shapes", "--out", tmp / "sal"],
        "featvis": ["featvis", "--checkpoint", m, "--layer", "net.block1", "--unit", 0, "--dataset", "shapes",
                    "--steps", 0, "--top-k", 2, "--n", 8, "--out", tmp / "fv"],
        "ood": ["ood", "--checkpoint", m, "--dataset", "shapes", "--n", 4],
        "units": ["units", "--checkpoint", m, "--dataset", "shapes", "--n", 4],
    }


@pytest.mark.parametrize("command", ["evaluate", "attack", "cka", "saliency", "featvis", "ood", "units"])
def test_model_on_a_dataset_of_another_shape_is_a_user_error(command, models, tmp_path, capsys):
    argv = mismatch_commands(models["mnist"], models["shapes"], tmp_path)[command]
    rc, out, err = run_cli(argv, capsys)
    assert_user_error(rc, err, "takes inputs of shape (1, 28, 28)", "(3, 32, 32)", "`mnist`")
    assert not (tmp_path / "x.npz").exists()


def test_tradeoff_refuses_a_checkpoint_of_another_dataset(models, capsys):
    rc, _, err = run_cli(["tradeoff", "--checkpoint", models["shapes"], "--checkpoint", models["mnist"],
                          "--dataset", "shapes", "--n", 4], capsys)
    assert_user_error(rc, err, "must be trained on `shapes`")


def test_class_count_mismatch_refuses_label_commands(models, capsys):
    rc, _, err = run_cli(["evaluate", "--checkpoint", models["five"], "--dataset", "shapes", "--n", 4], capsys)
    assert_user_error(rc, err, "5 classes", "6")


def test_cka_warns_when_only_the_classes_differ(models, capsys):
    rc, out, err = run_cli(["cka", "--a", models["shapes"], "--b", models["five"], "--dataset", "shapes",
                            "--n", 8, "--batch-size", 4, "--json"], capsys)
    assert rc == 0, err
    assert "warning: five has 5 classes but `shapes` has 6" in err
    report = json.loads(out)
    assert any("5 classes" in w for w in report["warnings"])
    assert len(report["across"]["rows"]) > 0


def _card(**fields):
    from engine.checkpoints import ModelCard

    base = {"arch": "small_cnn", "num_classes": 10, "input_shape": [1, 28, 28], "mean": [0.5], "std": [0.5]}
    return ModelCard.from_dict({**base, **fields})


def test_require_compatible_names_both_shapes():
    spec = SimpleNamespace(name="shapes", input_shape=(3, 32, 32), num_classes=6)
    with pytest.raises(InvalidParameterError, match=r"\(1, 28, 28\)"):
        require_compatible([SimpleNamespace(card=_card(), name="m", path="m.safetensors")], spec)


def test_incompatibility_can_skip_the_classes():
    from engine.selection import class_mismatch, incompatibility

    spec = SimpleNamespace(name="shapes", input_shape=(3, 32, 32), num_classes=6)
    card = _card(name="five", input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.5] * 3, num_classes=5, dataset="shapes")
    assert incompatibility(card, spec, classes=False) is None
    assert "5 classes" in incompatibility(card, spec) and "5 classes" in class_mismatch(card, spec)
    assert incompatibility(card.replace(input_shape=(1, 28, 28), mean=(0.5,), std=(0.5,)), spec, classes=False)


# ------------------------------------------------------------------ parameter upper bounds
@pytest.mark.parametrize("extra, message", [
    (["--steps", 10**9], "steps must be an integer in [1, 10,000]"),
    (["--restarts", 1000], "restarts must be an integer in [1, 100]"),
    (["--eps", 1e9], "epsilon must be in [0, 1]"),
    (["--norm", "l2", "--eps", 1000], "ℓ₂ epsilon must be in [0, 55.43]"),
    (["--n", 10**9], "--n must be an integer in [1, 2000]"),
    (["--batch-size", 10**9], "--batch-size must be an integer in [1, 4096]"),
])
def test_attack_cli_refuses_unbounded_parameters_at_once(extra, message, models, tmp_path, capsys):
    start = time.perf_counter()
    rc, _, err = run_cli(["attack", "--checkpoint", models["shapes"], "--n", 4, "--out", tmp_path / "x.npz",
                          *extra], capsys)
    assert_user_error(rc, err, message)
    assert time.perf_counter() - start < 30  # refused before any attack step
    assert not (tmp_path / "x.npz").exists()


def test_saliency_refuses_bad_fractions_before_computing_maps(models, tmp_path, capsys):
    rc, _, err = run_cli(["saliency", "--checkpoint", models["shapes"], "--curve", "remove", "--fractions", "0,5",
                          "--n", 4, "--out", tmp_path / "sal"], capsys)
    assert_user_error(rc, err, "--fractions must lie in [0, 1]")
    assert not (tmp_path / "sal").exists()


def test_evaluate_refuses_more_images_than_the_split_has(models, capsys):
    rc, _, err = run_cli(["evaluate", "--checkpoint", models["shapes"], "--n", 10**9], capsys)
    assert_user_error(rc, err, "--n must be an integer in [1, 2000]")


@pytest.mark.parametrize("build", [
    lambda: PGD(steps=10**9), lambda: PGD(restarts=MAX_RESTARTS + 1), lambda: PGD(eps=1e9),
    lambda: PGD(eps=1.5, norm="linf"), lambda: FGSM(eps=2.0), lambda: CW(steps=MAX_STEPS + 1),
    lambda: LBFGS(max_iter=10**9), lambda: LBFGS(search_steps=10**6), lambda: DeepFool(steps=10**9),
    lambda: make_attack("pgd", "mnist", norm="l2", eps=28.5), lambda: make_attack("fgsm", "shapes", eps=1e9),
])
def test_attack_configs_have_upper_bounds(build):
    with pytest.raises(InvalidParameterError):
        build()


def test_l2_radius_is_bounded_by_the_image_cube_when_called():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    assert PGD(norm="l2", eps=8.0, steps=1)(model, x, y).l2_norm.max() <= 8.0 + 1e-5  # sqrt(64) = 8: allowed
    with pytest.raises(InvalidParameterError, match=r"sqrt\(C·H·W\)"):
        PGD(norm="l2", eps=8.01, steps=1)(model, x, y)


def test_bounds_are_not_below_usual_settings():
    """The caps leave every registered attack's defaults, and PGD-1000 with 10 restarts, valid."""
    for name in ATTACKS:
        make_attack(name, "mnist")
    PGD(eps=0.3, steps=1000, restarts=10)
    make_attack("pgd", "mnist", norm="l2", eps=math.sqrt(784))


def test_featvis_grid_is_refused_before_allocating():
    tiles = np.zeros((9, 32, 32, 3), np.float32)
    tracemalloc.start()
    try:
        with pytest.raises(InvalidParameterError, match="limit is 4096 per side"):
            featvis.grid(tiles, scale=5000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20
    assert featvis.grid(tiles, scale=13).shape == (32 * 13, (9 * 33 - 1) * 13, 3)  # the largest that fits


def test_fitting_grid_wraps_and_shrinks_to_the_limit():
    assert featvis.fitting_grid(5, 32, 32, scale=3) == (5, 3)  # fits as asked
    assert featvis.fitting_grid(5, 32, 32, scale=100) == (5, 4096 // (5 * 33 - 1))  # scale shrunk
    columns, scale = featvis.fitting_grid(32, 224, 224, scale=3)  # 32 × 225 px is too wide: wrapped
    assert scale == 1 and columns == 4097 // 225
    featvis.grid(np.zeros((32, 224, 224, 1), np.float32), columns=columns, scale=scale)
    with pytest.raises(InvalidParameterError, match="show fewer"):
        featvis.fitting_grid(1000, 224, 224)


def test_featvis_cli_refuses_a_huge_scale_before_computing(models, tmp_path, capsys):
    rc, _, err = run_cli(["featvis", "--checkpoint", models["shapes"], "--layer", "net.block1", "--unit", 0,
                          "--scale", 5000, "--steps", 0, "--out", tmp_path / "fv"], capsys)
    assert_user_error(rc, err, "--scale must be an integer in [1, 4096]")
    rc, _, err = run_cli(["featvis", "--checkpoint", models["shapes"], "--layer", "net.block1", "--unit", 0,
                          "--scale", 500, "--steps", 0, "--out", tmp_path / "fv"], capsys)
    assert_user_error(rc, err, "limit is 4096 per side", "scale <= 13")
    rc, _, err = run_cli(["featvis", "--checkpoint", models["shapes"], "--layer", "net.block1", "--unit", 0,
                          "--steps", 10**9, "--out", tmp_path / "fv"], capsys)
    assert_user_error(rc, err, "--steps must be an integer in [0, 10000]")
    assert not (tmp_path / "fv").exists()


def test_visualisation_bounds():
    with pytest.raises(InvalidParameterError, match="steps"):
        featvis.VisConfig(steps=10**9).validate()
    model = nn.Sequential(nn.Conv2d(3, 2, 3))
    target = featvis.unit_target(0)
    with pytest.raises(InvalidParameterError, match="at most 1024×1024"):
        featvis.visualise(model, "0", [target], featvis.VisConfig(steps=1), input_shape=(3, 2048, 2048))
    with pytest.raises(InvalidParameterError, match="at most 64 targets"):
        featvis.visualise(model, "0", [target] * 65, featvis.VisConfig(steps=1), input_shape=(3, 8, 8))
    with pytest.raises(InvalidParameterError, match="pixels in one batch"):
        featvis.visualise(model, "0", [target] * 32, featvis.VisConfig(steps=1), input_shape=(3, 1024, 1024))
    checkpoint = SimpleNamespace(model=model, sha256="0" * 64)
    with pytest.raises(InvalidParameterError, match="steps"):  # checked before the cache is consulted
        featvis.cached_visualise(checkpoint, "0", [target], featvis.VisConfig(steps=-1))


# ------------------------------------------------------------------ small things
def test_advprop_is_a_clean_model_on_the_epsilon_axis():
    from engine.attribution import training_epsilon
    from engine.attribution.alignment import epsilon_tradeoff
    from engine.selection import robust_threat, threat_of

    advprop = _card(name="adv", training={"method": "advprop", "norm": "linf", "eps": 0.1})
    assert threat_of(advprop) == ("linf", 0.1)  # the recipe still says how it was trained
    assert robust_threat(advprop) == (None, 0.0)
    assert training_epsilon(advprop) == 0.0
    assert robust_threat(_card(training={"method": "pgd", "norm": "l2", "eps": 1.0})) == ("l2", 1.0)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    ckpt = SimpleNamespace(model=model, card=advprop, path="adv.safetensors")
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    masks = torch.ones(4, 1, 8, 8, dtype=torch.bool)
    [point] = epsilon_tradeoff([ckpt], images, labels, masks)
    assert (point.method, point.norm, point.epsilon) == ("advprop", "", 0.0)


def test_tradeoff_plot_keeps_advprop_off_the_robust_lines():
    import pandas as pd

    sys.path.insert(0, str(REPO))
    frame = pd.DataFrame([
        {"name": "std", "method": "standard", "norm": "", "epsilon": 0.0},
        {"name": "adv", "method": "advprop", "norm": "", "epsilon": 0.0},
        {"name": "pgd", "method": "pgd", "norm": "linf", "epsilon": 0.1},
        {"name": "l2", "method": "pgd", "norm": "l2", "epsilon": 1.0},
    ])
    series = _tradeoff_series()(frame)
    by_name = {name: set(part["name"]) for name, part, _ in series}
    assert by_name["alignment (ℓ∞)"] == {"std", "pgd"} and by_name["alignment (ℓ₂)"] == {"std", "l2"}
    assert by_name["alignment (AdvProp, a clean model)"] == {"adv"}


def _tradeoff_series():
    """``tradeoff_series`` from pages/tradeoff_view.py without running the page (its source, exec'd)."""
    import ast

    import pandas as pd

    tree = ast.parse((REPO / "pages" / "tradeoff_view.py").read_text())
    [func] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "tradeoff_series"]
    from engine.catalogue import norm_symbol

    namespace = {"pd": pd, "norm_symbol": norm_symbol}
    exec(compile(ast.Module([func], []), "pages/tradeoff_view.py", "exec"), namespace)  # noqa: S102 - our own source
    return namespace["tradeoff_series"]


def test_no_kornia_deprecation_warning_on_import():
    result = subprocess.run([sys.executable, "-W", "always", "-c", "import engine.featvis, engine.cli; "
                             "engine.cli.build_parser()"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "torch.jit.script" not in result.stderr and "Warning" not in result.stderr, result.stderr


def test_jobs_submit_says_when_no_worker_runs(tmp_path, capsys):
    config = tmp_path / "job.json"
    config.write_text(json.dumps({"dataset": "shapes", "arch": "small_cnn", "method": "standard", "epochs": 1}))
    rc, out, err = run_cli(["jobs", "--runs", tmp_path / "runs", "submit", "--config", config], capsys)
    assert rc == 0, err
    assert json.loads(out)["worker_running"] is False
    assert "no worker is running" in err and "python -m engine worker --runs" in err


def test_jobs_submit_is_quiet_when_a_worker_runs(tmp_path, capsys):
    from engine.jobs import JobStore
    from engine.jobs.worker import WorkerLock, lock_path

    config = tmp_path / "job.json"
    config.write_text(json.dumps({"dataset": "shapes", "arch": "small_cnn", "method": "standard", "epochs": 1}))
    lock = WorkerLock(lock_path(JobStore(tmp_path / "runs")))
    assert lock.acquire()
    try:
        rc, out, err = run_cli(["jobs", "--runs", tmp_path / "runs", "submit", "--config", config], capsys)
    finally:
        lock.release()
    assert rc == 0 and json.loads(out)["worker_running"] is True and "no worker" not in err


def test_readme_links_the_science_document_in_the_repository():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert "../shared/docs/SCIENCE.md" not in text
    assert "(docs/SCIENCE.md)" in text and (REPO / "docs" / "SCIENCE.md").is_file()
    science = (REPO / "docs" / "SCIENCE.md").read_text(encoding="utf-8")
    for term in ("CKA", "HSIC", "PGD", "TRADES", "Fast-AT", "AdvProp", "KAR", "ROAR", "shape bias", "smoothness",
                 "direction"):
        assert term in science, term


if os.name != "posix":  # pragma: no cover - the worker lock is fcntl-based
    pytestmark = pytest.mark.skip("POSIX only")
