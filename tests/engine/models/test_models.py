"""engine.models: [0,1] wrapper, architectures, dual BN (AdvProp), layer listing, activation hooks."""
from __future__ import annotations

import threading

import pytest
import torch
from torch import nn

from engine.errors import InvalidParameterError
from engine.models import (
    ARCHITECTURES,
    ArchSpec,
    Classifier,
    DualBatchNorm2d,
    bn_branch,
    build_model,
    convert_to_dual_bn,
    default_layers,
    list_layers,
    record_activations,
)

# (arch, input shape, kwargs): small options so every architecture builds and runs fast on CPU.
ARCH_CASES = [
    ("small_cnn", (1, 28, 28), {}),
    ("small_cnn", (5, 17, 20), {"width": 4}),
    ("cifar_resnet", (3, 32, 32), {"depth": 8, "width": 1}),
    ("cifar_resnet", (3, 32, 32), {"depth": 8, "width": 2}),
    ("resnet18", (3, 32, 32), {}),
    ("resnet18", (1, 32, 32), {}),
    ("resnet50", (3, 64, 64), {}),
]


def tiny(arch="small_cnn", shape=(3, 16, 16), classes=3, dual_bn=False, **kwargs):
    kwargs = kwargs or ({"width": 4} if arch == "small_cnn" else {})
    return build_model(arch, classes, shape, [0.4] * shape[0], [0.2] * shape[0], dual_bn=dual_bn, **kwargs)


def all_hooks_removed(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# --- [0, 1] wrapper ---------------------------------------------------------------------------


def test_classifier_normalises_inside():
    model = build_model("small_cnn", 4, (2, 20, 20), [0.2, 0.7], [0.5, 0.1], width=4).eval()
    x = torch.rand(3, 2, 20, 20)
    manual = (x - torch.tensor([0.2, 0.7]).view(1, 2, 1, 1)) / torch.tensor([0.5, 0.1]).view(1, 2, 1, 1)
    with torch.no_grad():
        assert torch.equal(model(x), model.net(manual))
        assert not torch.equal(model(x), model.net(x))
    assert isinstance(model, Classifier)
    assert model.mean == pytest.approx((0.2, 0.7)) and model.std == pytest.approx((0.5, 0.1))
    assert {"normalize.mean", "normalize.std"} <= set(model.state_dict())


def test_classifier_attributes():
    model = build_model("cifar_resnet", 7, (3, 32, 32), [0.5] * 3, [0.25] * 3, depth=8)
    assert (model.arch, model.num_classes, model.input_shape, model.dual_bn) == ("cifar_resnet", 7, (3, 32, 32), False)
    assert model.arch_kwargs == {"depth": 8, "width": 1}  # defaults filled in


@pytest.mark.parametrize("arch,shape,kwargs", ARCH_CASES, ids=[f"{a}-{s}" for a, s, _ in ARCH_CASES])
def test_every_architecture_gives_logits(arch, shape, kwargs):
    torch.manual_seed(0)
    model = build_model(arch, 6, shape, [0.5] * shape[0], [0.25] * shape[0], **kwargs).eval()
    with torch.no_grad():
        out = model(torch.rand(2, *shape))
    assert out.shape == (2, 6)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch,shape,kwargs", ARCH_CASES[:5], ids=[f"{a}-{s}" for a, s, _ in ARCH_CASES[:5]])
def test_every_relu_is_a_separate_non_inplace_module(arch, shape, kwargs):
    model = build_model(arch, 3, shape, [0.5] * shape[0], [0.25] * shape[0], **kwargs).eval()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and not any(r.inplace for r in relus)
    calls = {id(r): 0 for r in relus}
    handles = [r.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls[id(m)] + 1)) for r in relus]
    try:
        with torch.no_grad():
            model(torch.rand(1, *shape))
    finally:
        for h in handles:
            h.remove()
    assert set(calls.values()) == {1}, "each ReLU module must be used exactly once per forward pass"


def test_small_cnn_is_compact():
    params = sum(p.numel() for p in build_model("small_cnn", 10, (1, 28, 28), [0.1], [0.3]).parameters())
    assert 100_000 <= params <= 400_000


def test_registry_specs_are_consistent():
    for name, spec in ARCHITECTURES.items():
        assert isinstance(spec, ArchSpec) and spec.description and spec.min_input >= 1
        assert spec.default_layers, name


@pytest.mark.parametrize(
    "call,fragment",
    [
        (lambda: build_model("vgg99", 3, (3, 32, 32), [0.5] * 3, [0.2] * 3), "unknown architecture"),
        (lambda: build_model("small_cnn", 3, (3, 32, 32), [0.5] * 3, [0.2] * 3, depth=3), "no option"),
        (lambda: build_model("small_cnn", 3, (3, 8, 8), [0.5] * 3, [0.2] * 3), "at least 16x16"),
        (lambda: build_model("small_cnn", 3, (3, 32, 32), [0.5], [0.2]), "one per channel"),
        (lambda: build_model("small_cnn", 3, (3, 32, 32), [0.5] * 3, [0.2, 0.0, 0.2]), "std"),
        (lambda: build_model("small_cnn", 0, (3, 32, 32), [0.5] * 3, [0.2] * 3), "num_classes"),
        (lambda: build_model("cifar_resnet", 3, (3, 32, 32), [0.5] * 3, [0.2] * 3, depth=10), "6n+2"),
        (lambda: build_model("small_cnn", 3, (3, 32), [0.5] * 3, [0.2] * 3), "(C, H, W)"),
    ],
)
def test_build_model_rejects_bad_input(call, fragment):
    with pytest.raises(InvalidParameterError, match=None) as info:
        call()
    assert fragment in str(info.value)


def test_dual_bn_on_an_architecture_without_bn_is_refused(monkeypatch):
    spec = ArchSpec(builder=lambda c, k: nn.Sequential(nn.Flatten(), nn.Linear(c * 16 * 16, k)),
                    description="test mlp", has_bn=False, min_input=16)
    monkeypatch.setitem(ARCHITECTURES, "test_mlp", spec)
    assert build_model("test_mlp", 3, (1, 16, 16), [0.5], [0.2])(torch.rand(1, 1, 16, 16)).shape == (1, 3)
    with pytest.raises(InvalidParameterError, match="no BatchNorm"):
        build_model("test_mlp", 3, (1, 16, 16), [0.5], [0.2], dual_bn=True)


# --- dual BatchNorm ---------------------------------------------------------------------------


def bn_state(model: nn.Module, branch: str) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items() if f".{branch}." in k}


def test_dual_bn_replaces_every_batchnorm_and_keys_are_stable():
    for arch, shape in (("small_cnn", (3, 16, 16)), ("resnet18", (3, 32, 32))):
        model = tiny(arch, shape, dual_bn=True)
        plain = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and not n.endswith((".main", ".aux"))]
        assert plain == []
        assert model.dual_bn
    model = tiny(dual_bn=True)
    keys = set(model.state_dict())
    assert {"net.block1.1.main.running_mean", "net.block1.1.aux.running_mean", "net.block1.1.aux.weight"} <= keys
    assert "net.block1.1.running_mean" not in keys
    assert len([m for m in model.modules() if isinstance(m, DualBatchNorm2d)]) == 3


@pytest.mark.parametrize("branch,other", [("aux", "main"), ("main", "aux")])
def test_bn_branch_updates_only_the_chosen_branch(branch, other):
    model = tiny(dual_bn=True).train()
    before_other, before_branch = bn_state(model, other), bn_state(model, branch)
    rest = {k: v.clone() for k, v in model.state_dict().items() if ".main." not in k and ".aux." not in k}
    x = torch.rand(8, 3, 16, 16)
    with bn_branch(model, branch):
        loss = model(x).logsumexp(1).mean()
    loss.backward()
    after = model.state_dict()
    for key, value in before_other.items():
        assert torch.equal(after[key], value), f"{key} changed though branch {other!r} was not used"
    changed = [k for k in before_branch if "running_mean" in k and not torch.equal(after[k], before_branch[k])]
    assert len(changed) == 3, "every running mean of the chosen branch must move"
    assert all(torch.equal(after[k], v) for k, v in rest.items())
    for layer in (m for m in model.modules() if isinstance(m, DualBatchNorm2d)):
        assert getattr(layer, other).weight.grad is None
        assert getattr(layer, branch).weight.grad is not None


def test_bn_branch_defaults_to_main_and_restores_after_errors():
    model = tiny(dual_bn=True)
    layer = next(m for m in model.modules() if isinstance(m, DualBatchNorm2d))
    assert layer.active_branch == "main"
    with pytest.raises(RuntimeError):
        with bn_branch(model, "aux"):
            assert layer.active_branch == "aux"
            with bn_branch(model, "main"):
                assert layer.active_branch == "main"
            assert layer.active_branch == "aux"
            raise RuntimeError("boom")
    assert layer.active_branch == "main"


def test_bn_branch_is_per_model_and_per_thread():
    a, b = tiny(dual_bn=True), tiny(dual_bn=True)
    layer_a = next(m for m in a.modules() if isinstance(m, DualBatchNorm2d))
    layer_b = next(m for m in b.modules() if isinstance(m, DualBatchNorm2d))
    seen = []
    with bn_branch(a, "aux"):
        thread = threading.Thread(target=lambda: seen.append(layer_a.active_branch))
        thread.start()
        thread.join()
        assert (layer_a.active_branch, layer_b.active_branch) == ("aux", "main")
    assert seen == ["main"]


def test_branches_give_different_outputs_in_eval_after_aux_training():
    model = tiny(dual_bn=True).train()
    with bn_branch(model, "aux"):
        for _ in range(3):
            model(torch.rand(8, 3, 16, 16) * 3)
    model.eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad(), bn_branch(model, "aux"):
        aux = model(x)
    with torch.no_grad():
        main = model(x)
    assert not torch.allclose(aux, main)


def test_bn_branch_rejects_bad_requests():
    plain = tiny()
    with bn_branch(plain, "main"):  # allowed: a no-op for models without dual BN
        plain.eval()(torch.rand(1, 3, 16, 16))
    with pytest.raises(InvalidParameterError, match="dual_bn=True"):
        with bn_branch(plain, "aux"):
            pass
    with pytest.raises(InvalidParameterError, match="unknown BN branch"):
        with bn_branch(tiny(dual_bn=True), "adv"):
            pass


def test_convert_copies_batchnorm_state_into_separate_branches():
    bn = nn.BatchNorm2d(4)
    bn.running_mean.copy_(torch.arange(4.0))
    bn.weight.data.fill_(2.0)
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), bn)
    assert convert_to_dual_bn(seq) == 1
    dual = seq[1]
    for branch in (dual.main, dual.aux):
        assert torch.equal(branch.running_mean, torch.arange(4.0)) and torch.equal(branch.weight, torch.full((4,), 2.0))
    assert dual.main.weight.data_ptr() != dual.aux.weight.data_ptr()


# --- layer listing ----------------------------------------------------------------------------


def test_list_layers_names_kinds_and_shapes():
    model = build_model("small_cnn", 5, (3, 32, 32), [0.5] * 3, [0.2] * 3, width=8).train()
    running = model.net.block1[1].running_mean.clone()
    layers = list_layers(model)
    by_name = {info.name: info for info in layers}
    for info in layers:
        assert type(model.get_submodule(info.name)).__name__ == info.kind
    assert by_name["normalize"].output_shape == (3, 32, 32)
    assert by_name["net.block1"].output_shape == (8, 16, 16)
    assert by_name["net.block2"].output_shape == (16, 8, 8)
    assert by_name["net.block3"].output_shape == (16, 8, 8)
    assert by_name["net.pool"].output_shape == (16, 4, 4)
    assert by_name["net.hidden"].output_shape == (128,)
    assert by_name["net.fc"].output_shape == (5,)
    assert by_name["net.block1.0"].kind == "Conv2d"
    assert model.training and all_hooks_removed(model)
    assert torch.equal(model.net.block1[1].running_mean, running)
    model.eval()
    list_layers(model)
    assert not model.training


@pytest.mark.parametrize("arch,shape", [("small_cnn", (1, 28, 28)), ("cifar_resnet", (3, 32, 32)), ("resnet18", (3, 32, 32))])
def test_default_layers_are_listed_layers(arch, shape):
    model = build_model(arch, 4, shape, [0.5] * shape[0], [0.2] * shape[0], **({"depth": 8} if arch == "cifar_resnet" else {}))
    names = {info.name for info in list_layers(model)}
    defaults = default_layers(model)
    assert defaults[-1] == "net.fc" and len(defaults) >= 4
    assert set(defaults) <= names


def test_list_layers_of_dual_bn_model_skips_branches():
    names = [info.name for info in list_layers(tiny(dual_bn=True))]
    assert "net.block1.1" in names
    assert not [n for n in names if n.endswith((".main", ".aux"))]


def test_list_layers_for_plain_modules():
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    assert [(i.name, i.output_shape) for i in list_layers(seq, input_shape=(1, 8, 8))] == [
        ("0", (2, 6, 6)), ("1", (2, 6, 6)), ("2", (72,)), ("3", (3,))]
    assert default_layers(seq) == ["0", "3"]
    with pytest.raises(InvalidParameterError, match="input_shape"):
        list_layers(seq)


# --- activation hooks -------------------------------------------------------------------------


def hook_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def test_record_activations_returns_the_layer_outputs():
    model = hook_model()
    x1, x2 = torch.rand(2, 2, 6, 6), torch.rand(2, 2, 6, 6)
    with record_activations(model, ["0", "1"]) as rec:
        model(x1)
        model(x2)  # the latest pass wins
    assert torch.equal(rec.outputs["0"], model[0](x2).detach())
    assert torch.equal(rec.outputs["1"], torch.relu(model[0](x2)).detach())
    assert not rec.outputs["0"].requires_grad
    assert all_hooks_removed(model)


def test_record_activations_keeps_graph_when_asked():
    model = hook_model()
    x = torch.rand(1, 2, 6, 6)
    with record_activations(model, "1", detach=False) as rec:
        model(x)
    rec.outputs["1"].sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.abs().sum() > 0


def test_record_activations_removes_hooks_after_an_error():
    model = tiny()
    with pytest.raises(ValueError, match="inside"):
        with record_activations(model, ["net.block1", "net.fc"]):
            assert model.net.block1._forward_hooks
            raise ValueError("inside")
    assert all_hooks_removed(model)


def test_record_activations_rejects_unknown_layers_before_hooking():
    model = tiny()
    with pytest.raises(InvalidParameterError) as info:
        with record_activations(model, ["net.block1", "net.nope"]):
            pass
    assert "net.nope" in str(info.value) and "normalize" in str(info.value)
    assert all_hooks_removed(model)
    with pytest.raises(InvalidParameterError):
        with record_activations(model, []):
            pass


@pytest.mark.parametrize("arch, shape, options, expected", [
    ("small_cnn", (1, 28, 28), {"width": 10**9}, "too many parameters to count"),
    ("small_cnn", (1, 28, 28), {"hidden": 10**9}, "1,035,000,055,914 parameters"),
    ("cifar_resnet", (3, 32, 32), {"width": 10**6}, "parameters"),
])
def test_an_architecture_too_large_for_memory_is_refused_before_allocation(arch, shape, options, expected):
    """A training config's or card's size options (width 10⁹) are counted on the meta device and
    refused above MAX_PARAMETERS with the options named — not torch's overflow or a 4 TB allocation."""
    from engine.models.architectures import MAX_PARAMETERS

    with pytest.raises(InvalidParameterError, match=f"{arch} with .*{expected}.*at most {MAX_PARAMETERS:,}"):
        build_model(arch, 10, shape, [0.0] * shape[0], [1.0] * shape[0], **options)
