"""AutoAttack and its members (APGD-CE/DLR, APGD-T, FAB/FAB-T, Square), the attack losses, the
gradient-masking checks and the robustness report: properties, exact expectations on hand-built
models, agreement with the reference implementation (pyautoattack 0.2.0, in its own virtualenv),
and the ``evaluate --attack autoattack`` / ``report`` commands."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import engine
from engine import checkpoints as ckpt
from engine.attacks import (
    APGD, APGDDLR, APGDT, ATTACKS, FAB, FABT, PGD, Attack, AttackCancelled, AutoAttack, Square,
    evaluate_autoattack, make_attack, robust_accuracy,
)
from engine.attacks.autoattack import VERSIONS
from engine.attacks.fab import project_to_hyperplane
from engine.attacks.losses import cross_entropy, dlr, get_loss, margin
from engine.attacks.masking import masking_checks
from engine.attacks.report import robustness_report
from engine.cli import main as cli_main
from engine.data import get_spec, load_dataset, take
from engine.errors import InvalidParameterError
from engine.models import build_model

SHAPE = (1, 6, 6)
K = 4
FAMILY = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square", "autoattack")


class Linear(nn.Module):
    """A seeded linear classifier on (1, 6, 6) images (undefended: gradients tell the truth)."""

    def __init__(self, seed=0, bias=None):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(36, K)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(K, 36, generator=g))
            self.fc.bias.copy_(torch.zeros(K) if bias is None else torch.tensor(bias, dtype=torch.float32))
        self.input_shape, self.num_classes = SHAPE, K

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))

    def features(self, x):
        return x


class Quantised(Linear):
    """The same linear model behind a rounding layer: zero gradient almost everywhere (gradient
    masking by a non-differentiable quantisation, Athalye et al. 2018)."""

    def features(self, x):
        return torch.round(x * 4) / 4


def batch(model, n=16, seed=0):
    """Seeded images labelled with the model's own predictions (clean accuracy 1)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *SHAPE, generator=g)
    with torch.no_grad():
        return x, model.eval()(x).argmax(dim=1)


def quick(name: str, eps: float, norm: str, seed: int = 0) -> Attack:
    """Attack ``name`` with little effort (property tests)."""
    effort = {"steps": 3} if name not in ("square", "autoattack") else ({"queries": 20} if name == "square" else
                                                                          {"steps": 2, "queries": 10})
    return make_attack(name, eps=eps, norm=norm, seed=seed, **effort)


# ------------------------------------------------------------------------------ properties


@settings(max_examples=10, deadline=None)
@given(name=st.sampled_from(FAMILY), norm=st.sampled_from(["linf", "l2"]), eps=st.floats(0.0, 1.0),
       seed=st.integers(0, 3))
def test_every_attack_stays_in_the_ball_and_the_box(name, norm, eps, seed):
    model = Linear(seed)
    x, y = batch(model, 6, seed)
    r = quick(name, eps, norm, seed)(model, x, y)
    assert float(r.adv.min()) >= 0.0 and float(r.adv.max()) <= 1.0
    measured = r.linf_norm if norm == "linf" else r.l2_norm
    assert float(measured.max()) <= eps + 1e-5
    assert torch.allclose(r.perturbation, r.adv - x)
    assert r.config["attack"] == name


@pytest.mark.parametrize("name", FAMILY)
@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 3.0)])
def test_every_attack_breaks_an_undefended_model(name, norm, eps):
    model = Linear(1)
    x, y = batch(model, 16, 1)
    params = {"queries": 300} if name in ("square", "autoattack") else {}
    r = make_attack(name, eps=eps, norm=norm, **params)(model, x, y)
    assert float(r.success.float().mean()) >= 0.9, (name, norm, r.success)
    # what a weak attack leaves robust bounds it: PGD-20 with the same budget
    pgd = PGD(eps=eps, norm=norm, steps=20)(model, x, y)
    if name != "square":  # a black-box search may be weaker than PGD on an undefended model
        assert int(r.success.sum()) >= int(pgd.success.sum()) - 1


@pytest.mark.parametrize("name", FAMILY)
def test_same_seed_same_result_and_the_seed_matters(name):
    model = Linear(2)
    x, y = batch(model, 8, 2)
    a = quick(name, 0.05, "linf", seed=1)(model, x, y)
    b = quick(name, 0.05, "linf", seed=1)(model, x, y)
    assert torch.equal(a.adv, b.adv)
    if name in ("apgd-ce", "apgd-dlr", "apgd-t", "square"):  # random start / search: another seed, another path
        c = quick(name, 0.05, "linf", seed=2)(model, x, y)
        assert not torch.equal(a.adv, c.adv)


def test_global_random_state_is_left_alone():
    model = Linear(3)
    x, y = batch(model, 4, 3)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    APGD(eps=0.1, steps=5)(model, x, y)
    Square(eps=0.1, queries=10)(model, x, y)
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------------------ losses


def test_dlr_and_margin_by_hand():
    z = torch.tensor([[4.0, 1.0, 3.0, 0.0], [1.0, 5.0, 2.0, 2.0]])
    y = torch.tensor([0, 0])
    # untargeted: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)
    assert dlr(z, y).tolist() == pytest.approx([-(4 - 3) / (4 - 1), -(1 - 5) / (5 - 2)])
    # targeted: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2)
    t = torch.tensor([2, 3])
    assert dlr(z, y, t).tolist() == pytest.approx([-(4 - 3) / (4 - 0.5), -(1 - 2) / (5 - 1.5)])
    assert margin(z, y).tolist() == [3 - 4, 5 - 1]
    assert margin(z, y, t).tolist() == [3 - 4, 2 - 5]
    assert cross_entropy(z, y).tolist() == pytest.approx(F.cross_entropy(z, y, reduction="none").tolist())
    # DLR ignores the logits' shift and scale (why AutoAttack uses it)
    assert torch.allclose(dlr(7 * z + 3, y), dlr(z, y)) and torch.allclose(dlr(7 * z + 3, y, t), dlr(z, y, t))


def test_loss_option_names_and_callables():
    assert get_loss("dlr") is dlr
    with pytest.raises(InvalidParameterError, match="unknown loss"):
        APGD(loss="hinge")
    with pytest.raises(InvalidParameterError, match="at least 3 classes"):
        dlr(torch.zeros(2, 2), torch.tensor([0, 1]))
    seen = []

    def neg_margin(logits, labels, targets):
        seen.append(logits.shape)
        return margin(logits, labels, targets)

    model = Linear(4)
    x, y = batch(model, 4, 4)
    r = APGD(eps=0.3, steps=5, loss=neg_margin)(model, x, y)
    assert seen and r.config["loss"] == "custom:neg_margin"
    json.dumps(r.config)


def test_apgd_t_attacks_the_clean_ranking_in_order():
    """Hand-built model: the bias fixes the clean ranking 1 > 3 > 2 > 0; the weights are too small to
    change it, so every image of label 1 is attacked towards 3, then 2, then 0."""
    model = Linear(5, bias=[0.0, 30.0, 10.0, 20.0])
    with torch.no_grad():
        model.fc.weight.mul_(1e-3)
    x = torch.rand(3, *SHAPE, generator=torch.Generator().manual_seed(5))
    y = torch.ones(3, dtype=torch.long)
    targets_seen = []

    def spy(logits, labels, targets):
        targets_seen.append(targets.unique().tolist())
        return dlr(logits, labels, targets)

    APGDT(eps=0.01, steps=2, loss=spy, n_target_classes=9)(model, x, y)  # capped at K − 1 = 3 targets
    order = [t[0] for i, t in enumerate(targets_seen) if i == 0 or t != targets_seen[i - 1]]
    assert order == [3, 2, 0] and all(len(t) == 1 for t in targets_seen)
    logits = model(x)
    plan = FABT(n_target_classes=2)._plan(None, logits)
    assert [p.tolist() for p in plan] == [[3, 3, 3], [2, 2, 2]]


# ------------------------------------------------------------------------------ FAB's projection


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), norm=st.sampled_from(["linf", "l2"]), d=st.integers(2, 40))
def test_fab_projection_reaches_the_hyperplane_minimally(seed, norm, d):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(8, d, generator=g)
    w = torch.randn(8, d, generator=g)
    b = (w * torch.rand(8, d, generator=g)).sum(1)  # the hyperplane passes through a box point: reachable
    step = project_to_hyperplane(t, w, b, norm)
    z = t + step
    assert float(z.min()) >= -1e-6 and float(z.max()) <= 1 + 1e-6
    assert torch.allclose((w * z).sum(1), b, atol=1e-4)
    size = step.abs().amax(1) if norm == "linf" else step.norm(dim=1)
    # no box point on the hyperplane is closer: compare with random feasible ones (segments to a corner)
    for _ in range(20):
        other = torch.rand(8, d, generator=g)
        gap_t, gap_o = (w * t).sum(1) - b, (w * other).sum(1) - b
        s = (gap_t / (gap_t - gap_o)).clamp(0, 1)[:, None]
        on = t + s * (other - t)  # where the segment t -> other meets the hyperplane (if it does)
        crosses = (gap_t * gap_o <= 0)
        dist = (on - t).abs().amax(1) if norm == "linf" else (on - t).norm(dim=1)
        assert bool((size[crosses] <= dist[crosses] + 1e-4).all())


def test_fab_l2_projection_without_the_box_is_the_euclidean_one():
    t = torch.full((1, 4), 0.5)
    w = torch.tensor([[1.0, -2.0, 0.5, 0.0]])
    b = torch.tensor([0.05])  # close to t: the box does not bind
    step = project_to_hyperplane(t, w, b, "l2")
    expected = -((w * t).sum(1) - b)[:, None] * w / (w * w).sum()
    assert torch.allclose(step, expected, atol=1e-6)
    # out of the box's reach: every coordinate goes as far as it can (the nearest box corner)
    far = torch.tensor([-10.0])
    for norm in ("linf", "l2"):
        z = t + project_to_hyperplane(t, w, far, norm)
        assert z.tolist() == [[0.0, 1.0, 0.0, 0.5]]  # w > 0 -> 0, w < 0 -> 1, w = 0 stays


# ------------------------------------------------------------------------------ AutoAttack's sequence


@dataclass
class Spy(Attack):
    """Records the images it is given; breaks none."""

    eps: float = 0.1
    seen: list = field(default_factory=list)
    name = "spy"

    def _craft(self, fwd, x, y, targets, logits_clean):
        self.seen.append(x.clone())
        return x, None


def test_later_attacks_run_only_on_points_still_robust():
    model = Linear(6)
    x, y = batch(model, 24, 6)
    first, spy = APGD(eps=0.08, steps=10), Spy()
    res = evaluate_autoattack(model, x, y, [first, spy], batch_size=24)
    alone = first(model, x, y)  # the same single batch, so the same random starts
    robust_after_first = ~alone.success
    assert 0 < int(robust_after_first.sum()) < len(x)  # the first attack breaks some, not all
    assert torch.equal(torch.cat(spy.seen), x[robust_after_first])  # exactly the survivors, in order
    chunks = Spy()
    evaluate_autoattack(model, x, y, [chunks], batch_size=5)
    assert [len(s) for s in chunks.seen] == [5, 5, 5, 5, 4]  # batched
    assert res.per_attack[0]["broken"] == int(alone.success.sum())
    assert res.per_attack[1]["attacked"] == int(robust_after_first.sum()) and res.per_attack[1]["broken"] == 0
    assert res.robust_acc == pytest.approx(float(robust_after_first.float().mean()))
    assert torch.equal(res.found_by, torch.where(alone.success, 0, -1))


def test_autoattack_is_the_per_point_worst_case_of_its_members():
    model = Linear(7)
    x, y = batch(model, 20, 7)
    aa = AutoAttack(eps=0.06, version="custom", attacks=("apgd-ce", "square"), queries=200)
    r = aa(model, x, y)
    apgd, square = aa.members()
    first = apgd(model, x, y)
    left = (~first.success).nonzero().flatten()
    assert 0 < len(left) < len(x)
    second = square(model, x[left], y[left])  # Square sees only APGD-CE's survivors
    expected = torch.full((len(x),), -1)
    expected[first.success] = 0
    expected[left[second.success]] = 1
    assert torch.equal(r.found_by, expected) and torch.equal(r.success, expected >= 0)
    assert torch.equal(r.adv[left[second.success]], second.adv[second.success])
    assert r.config["attacks"] == ["apgd-ce", "square"]
    assert [m.name for m in AutoAttack(version="standard").members()] == list(VERSIONS["standard"])
    plus = AutoAttack(version="plus").members()
    assert [m.name for m in plus] == list(VERSIONS["plus"]) and plus[0].restarts == 5
    assert all(m.eot_iter == 20 for m in AutoAttack(version="rand").members())


def test_square_counts_its_queries():
    model = Linear(8)
    x, y = batch(model, 12, 8)
    r = Square(eps=0.05, queries=50)(model, x, y)
    assert r.queries is not None and r.queries.dtype == torch.long
    assert bool((r.queries >= 1).all()) and bool((r.queries <= 51).all())
    assert bool((r.queries[~r.success] == 51).all())  # the survivors spent the whole budget
    res = evaluate_autoattack(model, x, y, Square(eps=0.05, queries=50))
    assert res.per_attack[0]["queries_mean"] == pytest.approx(float(r.queries.float().mean()), abs=0.1)


def test_square_reports_its_query_count_as_progress():
    model = Linear(8)
    x, y = batch(model, 12, 8)
    for restarts in (1, 2):
        calls = []
        Square(eps=0.02, queries=30, restarts=restarts)(model, x, y, progress=lambda d, t: calls.append((d, t)))
        budget = 30 * restarts
        done = [d for d, _ in calls]
        assert {t for _, t in calls} == {budget} and done == sorted(done) and done[-1] == budget
        assert len(set(done)) > 10  # it moves query by query, not only at the end
    broken = []  # every point broken at once (ε = 1): still ends at the budget
    Square(eps=1.0, queries=30)(model, x, y, progress=lambda d, t: broken.append((d, t)))
    assert broken[-1] == (30, 30)
    # inside AutoAttack's evaluation the bar moves during Square, within its one batch
    seen = []
    evaluate_autoattack(model, x, y, [APGD(eps=0.02, steps=5), Square(eps=0.02, queries=40)], batch_size=12,
                        progress=lambda d, t: seen.append((d, t)))
    done = [d for d, _ in seen]
    assert {t for _, t in seen} == {24} and done == sorted(done) and done[-1] == 24
    assert len({d for d in done if 12 < d < 24}) >= 3  # Square's share of the bar moved query by query


def test_progress_and_stop():
    model = Linear(9)
    x, y = batch(model, 8, 9)
    calls = []
    with pytest.raises(AttackCancelled):
        AutoAttack(eps=0.01, steps=50)(model, x, y, progress=lambda d, t: calls.append((d, t)),
                                       should_stop=lambda: len(calls) >= 3)
    assert calls and all(t == 4000 for _, t in calls)
    res = evaluate_autoattack(model, x, y, AutoAttack(eps=0.01, steps=20, queries=50), should_stop=lambda: True)
    assert res.stopped and res.per_attack == []


@pytest.mark.parametrize("make, message", [
    (lambda: APGD(steps=0), "steps"),
    (lambda: APGD(rho=0), "rho"),
    (lambda: APGD(seed=-1), "seed"),
    (lambda: Square(queries=100_001), "queries"),
    (lambda: Square(p_init=1.5), "p_init"),
    (lambda: FAB(beta=1.0), "beta"),
    (lambda: APGDT(n_target_classes=0), "n_target_classes"),
    (lambda: AutoAttack(version="turbo"), "version"),
    (lambda: AutoAttack(version="custom"), "list of attacks"),
    (lambda: AutoAttack(version="custom", attacks=("pgd",)), "no attack"),
    (lambda: AutoAttack(attacks=("square",)), "fixes its attacks"),
    (lambda: make_attack("autoattack", "mnist", eps=1.5), "epsilon"),
])
def test_bad_parameters_are_refused(make, message):
    with pytest.raises(InvalidParameterError, match=message):
        make()


def test_registry_lists_the_family():
    for name in FAMILY:
        assert name in ATTACKS and ATTACKS[name].name == name
    assert isinstance(make_attack("apgd-dlr", "mnist"), APGDDLR) and make_attack("fab", "mnist").norm == "linf"


# ------------------------------------------------------------------------------ gradient masking


def test_masked_model_is_flagged_while_pgd_alone_is_fooled():
    honest, masked = Linear(0), Quantised(0)
    x, y = batch(masked, 48, 10)
    eps = 0.1
    pgd = robust_accuracy(masked, x, y, PGD(eps=eps, steps=40)).robust_acc
    square = robust_accuracy(masked, x, y, Square(eps=eps, queries=1000)).robust_acc
    assert pgd >= square + 0.1  # PGD alone reports robustness the model does not have
    report = masking_checks(masked, x, y, eps, source_model=honest, queries=1000)
    assert {"eps_growth", "unbounded", "whitebox_vs_blackbox", "whitebox_vs_transfer"} <= set(report.flagged)
    by_name = {c.name: c for c in report.checks}
    assert by_name["unbounded"].numbers["survivors"] > 0
    assert by_name["whitebox_vs_blackbox"].numbers["other_acc"] == pytest.approx(square, abs=0.05)
    # the honest model passes every check on the same images
    x2, y2 = batch(honest, 48, 10)
    clean = masking_checks(honest, x2, y2, eps, source_model=Linear(1), queries=1000)
    assert clean.flagged == [] and all(c.status == "pass" for c in clean.checks)
    assert [r["eps"] for r in clean.ladder][-1] == 1.0 and clean.ladder[-1]["robust_acc"] == 0.0


# ------------------------------------------------------------------------------ the reference


def _trained_shapes_model():
    """A width-4 small_cnn on 16×16 shapes, trained briefly (seeded), with its logits scaled ×1000:
    the cross-entropy saturates so APGD-CE misses points APGD-T's DLR loss finds, and the later
    attacks of the sequence have work to do."""
    train = load_dataset("shapes", split="train", image_size=16)
    spec = train.spec
    tx, ty = take(train, 512, seed=1)
    torch.manual_seed(0)
    model = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=4, hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for i in range(200):
        idx = torch.arange(i % 4, len(tx), 4)
        loss = F.cross_entropy(model(tx[idx]), ty[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        model.net.fc.weight.mul_(1000.0)
        model.net.fc.bias.mul_(1000.0)
    return model


def _reference_setup(tmp_path):
    """(reference interpreter, trained test model, its checkpoint path); skips only when the
    registry is unreachable (the reference cannot be installed)."""
    from bench.autoattack import reference_python, registry_reachable

    try:
        python = reference_python()
    except Exception:
        if not registry_reachable():
            pytest.skip("the package registry is unreachable, so the reference (pyautoattack 0.2.0) cannot be installed")
        raise
    model = _trained_shapes_model()
    return python, model, ckpt.save_checkpoint(model, ckpt.make_card(model, "shapes"), tmp_path / "agree")


@pytest.mark.slow
def test_agrees_with_the_reference_autoattack(tmp_path):
    from bench.autoattack import run_reference

    python, model, path = _reference_setup(tmp_path)
    x, y = take(load_dataset("shapes", image_size=16), 100)
    eps = 0.004
    ours = evaluate_autoattack(model, x, y, AutoAttack(eps=eps, seed=0), batch_size=250)
    ref = run_reference(str(path), x, y, eps, seed=0, batch_size=250, threads=1, python=python)["runs"][0]
    ref_acc = sum(ref["robust"]) / len(y)
    after = {s["attack"]: s["robust_acc_after"] for s in ours.per_attack}
    # a real evaluation: APGD-T adds to APGD-CE (whose saturated cross-entropy may break nothing at all
    # on some CPUs: the ×1000 logits are there to make it miss points)
    assert ours.clean_acc >= after["apgd-ce"] > ours.robust_acc > 0
    assert abs(ours.robust_acc - ref_acc) <= 0.005, (ours.robust_acc, ref_acc)
    for name, acc in ref["after"].items():
        assert abs(after[name] - acc) <= 0.005, (name, after[name], acc)


@pytest.mark.slow
def test_fab_t_and_square_agree_with_the_reference_in_l2(tmp_path):
    """Square then FAB-T (ℓ₂), each breaking points (no APGD before them), with shorter budgets."""
    from bench.autoattack import run_reference

    python, model, path = _reference_setup(tmp_path)
    x, y = take(load_dataset("shapes", image_size=16), 60)
    eps = 0.1
    ours = evaluate_autoattack(model, x, y, AutoAttack(eps=eps, norm="l2", version="custom",
                                                      attacks=("square", "fab-t"), steps=20, queries=300))
    ref = run_reference(str(path), x, y, eps, "l2", version="custom", attacks=["square", "fab-t"], threads=1,
                        overrides={"fab.n_iter": 20, "square.n_queries": 300}, python=python)["runs"][0]
    broke = {s["attack"]: s["broken"] for s in ours.per_attack}
    assert broke["fab-t"] > 0 and broke["square"] > 0  # both attacks have work to agree on
    after = {s["attack"]: s["robust_acc_after"] for s in ours.per_attack}
    assert abs(ours.robust_acc - sum(ref["robust"]) / len(y)) <= 0.005
    for name, acc in ref["after"].items():
        assert abs(after[name] - acc) <= 0.005, (name, after[name], acc)


# ------------------------------------------------------------------------------ CLI and report


@pytest.fixture
def tiny_ckpt(tmp_path):
    """A seeded (untrained) small_cnn on shapes whose card records a PGD figure."""
    spec = get_spec("shapes")
    torch.manual_seed(0)
    net = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=4, hidden=16)
    card = ckpt.make_card(net, "shapes", name="tiny", training={"method": "pgd", "norm": "linf", "eps": 0.5},
                          metrics={"clean_acc": 0.2, "robust_acc": 0.1, "n_test": 512,
                                   "attack": {"attack": "pgd", "eps": 0.5, "steps": 40}})
    return ckpt.save_checkpoint(net.eval(), card, tmp_path / "tiny")


def test_cli_evaluate_autoattack_json_and_record(tiny_ckpt, capsys):
    argv = ["evaluate", "--checkpoint", str(tiny_ckpt), "--attack", "autoattack", "--norm", "linf", "--eps", "0.5",
            "--n", "12", "--json", "--record"]
    assert cli_main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert [s["attack"] for s in out["per_attack"]] == list(VERSIONS["standard"])
    accs = [out["attack_clean_acc"]] + [s["robust_acc_after"] for s in out["per_attack"]]
    assert accs == sorted(accs, reverse=True) and out["robust_acc"] == accs[-1]
    assert sum(s["broken"] for s in out["per_attack"]) == round((out["attack_clean_acc"] - out["robust_acc"]) * 12)
    assert out["seed"] == 0 and out["version"] == "standard" and out["robustscope_version"]
    assert all(s["seconds"] >= 0 for s in out["per_attack"]) and out["attack_seconds"] > 0
    metrics = engine.load(tiny_ckpt).card.to_dict()["metrics"]
    assert metrics["autoattack"]["robust_acc"] == out["robust_acc"] == metrics["autoattack_acc"]
    assert metrics["autoattack"]["n"] == 12 and "--record" not in metrics["autoattack"]["measured_with"]
    assert metrics["autoattack"]["subset"] == "the first 12 images of the test split"
    assert metrics["autoattack"]["torch"] == torch.__version__ and metrics["autoattack"]["device_name"] == "cpu"
    # the PGD headline and the clean figure are kept
    assert metrics["robust_acc"] == 0.1 and metrics["attack"]["attack"] == "pgd" and metrics["clean_acc"] == 0.2


def test_cli_evaluate_single_members(tiny_ckpt, capsys):
    assert cli_main(["evaluate", "--checkpoint", str(tiny_ckpt), "--attack", "square", "--eps", "0.5", "--n", "6",
                     "--queries", "30", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["per_attack"][0]["attack"] == "square" and out["attack"]["queries"] == 30
    assert cli_main(["evaluate", "--checkpoint", str(tiny_ckpt), "--attack", "apgd-t", "--eps", "0.1", "--n", "4",
                     "--steps", "3", "--n-targets", "2"]) == 0
    assert "after apgd-t" in capsys.readouterr().out
    assert cli_main(["evaluate", "--checkpoint", str(tiny_ckpt), "--attack", "square", "--n", "4", "--steps", "5"]) == 2
    assert "does not take steps" in capsys.readouterr().err
    assert cli_main(["evaluate", "--checkpoint", str(tiny_ckpt), "--attack", "apgd-ce", "--n", "4", "--alpha", "0.1"]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_report_json_and_out(tiny_ckpt, tmp_path, capsys):
    assert cli_main(["report", "--checkpoint", str(tiny_ckpt), "--n", "8", "--json", "--sweep", "0,0.1,0.5"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["eps"] == 0.5 and rep["norm"] == "linf"  # the card's training threat
    assert rep["autoattack"]["robust_acc"] <= rep["pgd"]["robust_acc"] + 1 / 8
    assert [r["eps"] for r in rep["sweep"]] == [0.0, 0.1, 0.5] and rep["sweep"][0]["robust_acc"] == rep["clean_acc"]
    assert {c["name"] for c in rep["masking"]["checks"]} >= {"eps_growth", "unbounded", "whitebox_vs_blackbox"}
    out = tmp_path / "rep"
    assert cli_main(["report", "--checkpoint", str(tiny_ckpt), "--n", "4", "--no-masking", "--sweep", "0.5",
                     "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"report.json", "summary.csv", "autoattack.csv", "sweep.csv"}
    assert "AutoAttack (standard)" in (out / "summary.csv").read_text()
    assert cli_main(["report", "--checkpoint", str(tiny_ckpt), "--n", "4", "--sweep", "a,b"]) == 2


def test_cli_report_quick(tiny_ckpt, capsys):
    import argparse

    from engine.cli.report import register, report_request

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    quick = report_request(parser.parse_args(["report", "--checkpoint", str(tiny_ckpt), "--quick"]))
    full = report_request(parser.parse_args(["report", "--checkpoint", str(tiny_ckpt)]))
    assert (quick.preset, quick.n) == ("quick", 100) and (full.preset, full.n) == ("full", 500)  # the default: full
    assert cli_main(["report", "--checkpoint", str(tiny_ckpt), "--quick", "--n", "4", "--no-masking", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["preset"] == "quick" and [s["attack"] for s in rep["autoattack"]["per_attack"]] == ["apgd-ce", "apgd-t"]
    assert [r["eps"] for r in rep["sweep"]] == pytest.approx([0.0, 0.125, 0.25, 0.5])
    assert cli_main(["report", "--checkpoint", str(tiny_ckpt), "--quick", "--n", "4", "--no-masking"]) == 0
    text = capsys.readouterr().out
    assert "quick: APGD-CE + APGD-T (upper bound)" in text and "not AutoAttack" in text
    assert cli_main(["report", "--checkpoint", str(tiny_ckpt), "--quick", "--version", "plus", "--n", "4"]) == 2
    assert "full report" in capsys.readouterr().err


def test_report_puts_the_leaderboard_beside_ours():
    model = Linear(11)
    x, y = batch(model, 8, 11)
    spec = get_spec("shapes")
    small = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=4, hidden=16)
    card = ckpt.make_card(small, "shapes", metrics={"robust_acc": 0.5}).replace(source={"leaderboard": {
        "clean_acc": 0.9, "autoattack_acc": 0.6, "norm": "linf", "eps": 0.3, "eps_text": "0.3", "from": "the board"}})
    rep = robustness_report(model, x, y, 0.3, card=card, masking=False, sweep_eps=[0.3], square_queries=20)
    rows = {r["measure"]: r for r in rep.summary_rows()}
    assert rows["AutoAttack (leaderboard)"]["accuracy"] == 0.6 and rows["AutoAttack (leaderboard)"]["source"] == "the board"
    assert rows["AutoAttack (standard)"]["source"] == "measured"
    assert rep.card_metrics == {"robust_acc": 0.5} and not rep.stopped
    fig = rep.figure()
    assert "AutoAttack (leaderboard)" in {t.name for t in fig.data}
    stopped = robustness_report(model, x, y, 0.3, masking=False, should_stop=lambda: True)
    assert stopped.stopped and stopped.clean_acc == 1.0 and stopped.autoattack is None


def test_quick_report_runs_apgd_ce_and_apgd_t_only_and_equals_their_direct_call():
    from engine.attacks.report import QUICK_LABEL, QUICK_SWEEP_FACTORS

    model = Linear(12)
    x, y = batch(model, 16, 12)
    eps = 0.05
    quick = robustness_report(model, x, y, eps, preset="quick", pgd_steps=5)
    assert quick.preset == "quick" and quick.quick and not quick.stopped
    assert [s["attack"] for s in quick.autoattack["per_attack"]] == ["apgd-ce", "apgd-t"]
    direct = evaluate_autoattack(model, x, y, AutoAttack(eps=eps, version="custom", attacks=("apgd-ce", "apgd-t")))
    assert quick.autoattack["robust_acc"] == direct.robust_acc
    assert [s["robust_acc_after"] for s in quick.autoattack["per_attack"]] == \
        [s["robust_acc_after"] for s in direct.per_attack]
    assert direct.per_attack[1]["config"]["n_target_classes"] == 9 and direct.per_attack[1]["config"]["steps"] == 100
    # the same first two attacks as the full report's AutoAttack: its "after apgd-t" row is the quick figure
    full = robustness_report(model, x, y, eps, pgd_steps=5, square_queries=20)
    assert full.preset == "full" and [s["attack"] for s in full.autoattack["per_attack"]] == list(VERSIONS["standard"])
    assert full.autoattack["per_attack"][1]["robust_acc_after"] == quick.autoattack["robust_acc"]
    assert full.autoattack["robust_acc"] <= quick.autoattack["robust_acc"]
    # the masking checks: the cheap ones measured as the full report measures them, the others skipped
    status = {c["name"]: c["status"] for c in quick.masking["checks"]}
    assert list(status) == [c["name"] for c in full.masking["checks"]]
    assert status["whitebox_vs_blackbox"] == status["more_effort"] == "skipped"
    assert status["whitebox_vs_transfer"] == "skipped"  # no standard model given
    for name in ("eps_growth", "unbounded", "iterative_vs_single"):
        assert status[name] != "skipped"
        assert next(c for c in quick.masking["checks"] if c["name"] == name) == \
            next(c for c in full.masking["checks"] if c["name"] == name)
    assert quick.masking["ladder"] == full.masking["ladder"]
    # the quick sweep: 4 points read off the ladder; both sweeps agree with APGD-CE run directly
    assert [r["eps"] for r in quick.sweep] == pytest.approx([f * eps for f in QUICK_SWEEP_FACTORS])
    for row in quick.sweep[1:] + full.sweep[1:3]:
        assert row["robust_acc"] == robust_accuracy(model, x, y, APGD(eps=row["eps"]), 256).robust_acc
    # it says what it is
    rows = {r["measure"]: r["accuracy"] for r in quick.summary_rows()}
    assert rows[f"{QUICK_LABEL} (upper bound)"] == quick.autoattack["robust_acc"]
    assert not any(m.startswith("AutoAttack") for m in rows) and "AutoAttack (standard)" in \
        {r["measure"] for r in full.summary_rows()}
    assert "upper bound" in quick.caveat and "not AutoAttack" in quick.caveat and "standard AutoAttack" in quick.caveat
    assert {t.name for t in quick.figure().data} >= {f"{QUICK_LABEL} (upper bound)"}
    with pytest.raises(InvalidParameterError, match="preset"):
        robustness_report(model, x, y, eps, preset="fast")


def test_models_page_report_section(tiny_checkpoints):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    page = str(Path(__file__).resolve().parents[3] / "pages" / "models.py")
    at = AppTest.from_file(page, default_timeout=300)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Robustness report" in [s.value for s in at.subheader]
    at.number_input(key="report_eps_A_shapes_linf").set_value(0.5)  # large: every image falls to APGD-CE
    at.select_slider(key="report_n").set_value(16)
    at.radio(key="report_mode").set_value("here")
    at.button(key="report_run").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    from engine.analysis import load_result

    report = load_result(at.query_params["result"]).value()  # the stored result the page shows
    assert report.n == 16 and report.autoattack["robust_acc"] == 0.0 and math.isclose(report.eps, 0.5)
    labels = {b.label for b in at.get("download_button")}
    assert {"Report (JSON)", "Summary (CSV)", "Checks (CSV)"} <= labels


def test_attack_lab_square_shows_its_query_count(tiny_checkpoints):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    page = str(Path(__file__).resolve().parents[3] / "pages" / "attack_lab.py")
    at = AppTest.from_file(page, default_timeout=300)
    at.run()
    at.selectbox(key="atk_name").set_value("square")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    model = engine.load(tiny_checkpoints["standard"]).model  # model A; the page attacks its first correct image
    images, labels = take(load_dataset("shapes"), 256)
    with torch.no_grad():
        index = int((model(images).argmax(1) == labels).nonzero()[0])
    at.number_input(key="atk_index").set_value(index)
    at.number_input(key="atk_square_queries_shapes_linf").set_value(200)
    at.number_input(key="atk_square_eps_shapes_linf").set_value(0.02)
    at.button(key="atk_craft").click()
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    result = at.session_state["atk_state"]["result"]
    queries = int(result.queries[0])
    assert 1 <= queries <= 201 and float(result.linf_norm[0]) <= 0.02 + 1e-6
    assert any(f"**{queries:,}** times" in c.value for c in at.caption)
    at.selectbox(key="atk_name").set_value("autoattack")
    at.run()
    assert at.selectbox(key="atk_autoattack_version_shapes_linf").value == "standard"


def test_at_eps_zero_nothing_is_attacked_and_robust_equals_clean():
    """ε = 0 allows no perturbation: AutoAttack returns at once with robust = clean, every attack
    listed as skipped, and the report skips the masking checks (they need ε > 0)."""
    model = Linear(3)
    x, y = batch(model, 16, 3)
    res = evaluate_autoattack(model, x, y, AutoAttack(eps=0.0, seed=0))
    assert res.robust_acc == res.clean_acc and bool((res.found_by == -1).all()) and torch.equal(res.adv, x)
    assert [s["broken"] for s in res.per_attack] == [0, 0, 0, 0]
    assert all(s["skipped"].startswith("ε = 0") and s["seconds"] == 0.0 for s in res.per_attack)
    rep = robustness_report(model, x, y, 0.0, masking=True, sweep_eps=[0.0], square_queries=20)
    assert rep.masking is None and rep.autoattack["robust_acc"] == rep.clean_acc and not rep.stopped


@pytest.mark.parametrize("name, params", [("pgd", {"steps": 500}), ("fgsm", {}), ("square", {"queries": 5000}),
                                          ("apgd-ce", {"steps": 500}), ("apgd-t", {"steps": 500})])
def test_a_bounded_attack_at_eps_zero_is_one_forward_pass(name, params):
    """ε = 0 in evaluate, the sweeps, transfer and the Attack Lab: a bounded attack returns the
    clean images after the clean forward pass (robust = clean), however many steps it was given."""
    from engine.attacks import eps_sweep

    model = Linear(3)
    x, y = batch(model, 16, 3)
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    res = robust_accuracy(model, x, y, make_attack(name, None, eps=0.0, **params))
    assert res.robust_acc == res.clean_acc and len(calls) == 1
    swept = eps_sweep({"A": model}, x, y, name, [0.0, 0.3])
    assert swept.accuracy["A"][0] == res.clean_acc and swept.accuracy["A"][1] <= res.clean_acc
