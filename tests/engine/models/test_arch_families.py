"""Architecture families with the original code's keys: RobustBench, DeepMind, MadryLab robustness,
torchvision and timm.

Each comparison builds the net with the *original library's own code* (tests/peer_code.py loads
RobustBench's and robustness' architecture files from their wheels; torchvision and timm are our
dependencies), randomises its weights and BatchNorm statistics, saves it in that library's on-disk
layout, imports the file through ``engine.checkpoints.import_checkpoint`` (once through the CLI)
and compares logits on the same random images: ``ours(x)`` against ``theirs(normalised x)``, and
against ``theirs(x)`` where the original normalises inside.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import peer_code
from engine.attribution import attribute
from engine.checkpoints import import_checkpoint, load
from engine.data.base import DatasetSpec
from engine.errors import CheckpointError, InvalidParameterError
from engine.models import (
    ARCHITECTURES,
    Normalization,
    build_model,
    default_layers,
    default_normalization,
    get_arch,
    guided_backprop_problem,
    list_layers,
    record_activations,
)
from engine.models.cifar_zoo import DM_CIFAR10_MEAN, DM_CIFAR10_STD, DM_CIFAR100_MEAN, DM_CIFAR100_STD

REPO = Path(__file__).resolve().parents[3]
CIFAR = (3, 32, 32)
ZOO_FAMILIES = ("wide_resnet", "dm_wide_resnet", "dm_preact_resnet", "preact_resnet18", "cifar_resnet18", "cifar_resnet50")


# --- helpers ----------------------------------------------------------------------------------


def randomise_(net: nn.Module, shape=CIFAR, seed: int = 0) -> nn.Module:
    """Random norm-layer affine parameters and biases, then BatchNorm statistics measured on random
    images of ``shape`` (so activations stay input-dependent however deep the net), in eval mode:
    a swapped or ignored tensor changes the logits."""
    gen = torch.Generator().manual_seed(seed)
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, norms) and getattr(module, "weight", None) is not None:
                module.weight.copy_(0.5 + torch.rand(module.weight.shape, generator=gen))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
            if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=gen))
        batchnorms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if batchnorms:
            for bn in batchnorms:
                bn.reset_running_stats()
                bn.momentum = None  # cumulative average over the calibration batch
            net.train()
            net(torch.rand((4, *shape), generator=gen))
    return net.eval()


def assert_same_logits(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Max abs difference <= 1e-5 of the logits' scale (at least 1), on logits that do depend on
    the image (a net whose output is constant would make the comparison empty)."""
    assert ours.shape == theirs.shape
    scale = max(1.0, float(theirs.abs().max()))
    assert float((theirs - theirs[:1]).abs().max()) > 1e-3 * float(theirs.abs().max()), "logits do not depend on the image"
    diff = float((ours - theirs).abs().max())
    assert diff <= 1e-5 * scale, f"logits differ by {diff:.3g} (scale {scale:.3g})"


def spec_for(shape, classes=10, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)) -> DatasetSpec:
    """A dataset spec for imports at a given image size and class count."""
    return DatasetSpec(
        name="cifar10", num_classes=classes, class_names=tuple(f"c{i}" for i in range(classes)),
        input_shape=tuple(shape), mean=tuple(mean), std=tuple(std), default_arch="small_cnn",
        description="test spec",
    )


def images(shape, n=3, seed=1) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(seed))


def compare_imported(loaded_model, theirs: nn.Module, x: torch.Tensor) -> None:
    """ours(x) == theirs(ours' normalisation of x): same net, whatever normalisation was chosen."""
    with torch.no_grad():
        assert_same_logits(loaded_model(x), theirs(loaded_model.normalize(x)))


def rb_arch(module: str):
    return peer_code.robustbench_module(f"model_zoo.architectures.{module}")


# --- RobustBench / TRADES WideResNet ----------------------------------------------------------


def test_wide_resnet_matches_robustbench_with_sub_block1_via_cli(tmp_path):
    theirs = randomise_(rb_arch("wide_resnet").WideResNet(depth=10, num_classes=10, widen_factor=2, sub_block1=True))
    src = tmp_path / "Carmon2019Unlabeled.pt"
    torch.save({"state_dict": theirs.state_dict()}, src)  # RobustBench's layout (also module.-prefixed in the wild)
    out = tmp_path / "out"
    kwargs = {"depth": 10, "widen_factor": 2, "sub_block1": True}
    result = subprocess.run(
        [sys.executable, "-m", "engine", "import", str(src), "--arch", "wide_resnet", "--dataset", "cifar10",
         "--arch-kwargs", json.dumps(kwargs), "--out-dir", str(out), "--name", "carmon"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    loaded = load(out / "carmon")
    assert loaded.card.arch == "wide_resnet" and dict(loaded.card.arch_kwargs) == {**kwargs, "bias_last": True}
    assert any(k.startswith("net.sub_block1.") for k in loaded.model.state_dict())
    compare_imported(loaded.model, theirs, images(CIFAR))


def test_wide_resnet_keys_and_logits_match_the_original():
    theirs = randomise_(rb_arch("wide_resnet").WideResNet(depth=16, num_classes=7, widen_factor=1, bias_last=False))
    ours = build_model("wide_resnet", 7, CIFAR, [0.0] * 3, [1.0] * 3, depth=16, widen_factor=1, bias_last=False).eval()
    assert list(ours.net.state_dict()) == list(theirs.state_dict())  # same keys, same order
    ours.net.load_state_dict(theirs.state_dict())
    x = images(CIFAR)
    with torch.no_grad():
        assert_same_logits(ours(x), theirs(x))  # RobustBench's convention: raw [0, 1] input
    assert default_normalization("wide_resnet", source="robustbench") == Normalization((0.0,) * 3, (1.0,) * 3, CIFAR)


def test_a_sub_block1_file_needs_sub_block1(tmp_path):
    theirs = rb_arch("wide_resnet").WideResNet(depth=10, num_classes=10, widen_factor=1, sub_block1=True)
    src = tmp_path / "wrn.pt"
    torch.save(theirs.state_dict(), src)
    with pytest.raises(CheckpointError, match="sub_block1"):
        import_checkpoint(src, "wide_resnet", "cifar10", fmt="robustbench", arch_kwargs={"depth": 10, "widen_factor": 1})


# --- DeepMind WideResNet / PreActResNet -------------------------------------------------------


@pytest.mark.parametrize("activation", ["swish", "silu", "relu"])
def test_dm_wide_resnet_matches_deepmind(tmp_path, activation):
    dm = rb_arch("dm_wide_resnet")
    act = {"swish": dm.Swish, "silu": nn.SiLU, "relu": nn.ReLU}[activation]
    theirs = randomise_(dm.DMWideResNet(num_classes=10, depth=16, width=2, activation_fn=act))
    src = tmp_path / "Gowal2020Uncovering.pt"
    torch.save({"state_dict": theirs.state_dict()}, src)
    kwargs = {"depth": 16, "width": 2, "activation": activation}
    loaded = import_checkpoint(src, "dm_wide_resnet", "cifar10", fmt="robustbench", arch_kwargs=kwargs)
    x = images(CIFAR)
    # The original subtracts DeepMind's CIFAR-10 mean/std in its forward; ours does it in the Classifier.
    norm = default_normalization("dm_wide_resnet", kwargs, dataset="cifar10")
    assert norm == Normalization(DM_CIFAR10_MEAN, DM_CIFAR10_STD, CIFAR)
    ours = build_model("dm_wide_resnet", 10, CIFAR, norm.mean, norm.std, **kwargs).eval()
    ours.load_state_dict(loaded.model.state_dict() | {k: v for k, v in ours.state_dict().items() if k.startswith("normalize.")})
    with torch.no_grad():
        assert_same_logits(ours(x), theirs(x))
    # whatever normalisation the importer chose, the net is DeepMind's
    theirs_bare = dm.DMWideResNet(num_classes=10, depth=16, width=2, activation_fn=act, mean=(0.0,) * 3, std=(1.0,) * 3)
    theirs_bare.load_state_dict(theirs.state_dict())
    theirs_bare.eval()
    compare_imported(loaded.model, theirs_bare, x)


def test_dm_nets_can_normalise_in_code_like_the_original():
    dm = rb_arch("dm_wide_resnet")
    theirs = randomise_(dm.DMWideResNet(num_classes=100, depth=10, width=1, activation_fn=dm.Swish,
                                        mean=DM_CIFAR100_MEAN, std=DM_CIFAR100_STD))
    kwargs = {"depth": 10, "width": 1, "net_mean": list(DM_CIFAR100_MEAN), "net_std": list(DM_CIFAR100_STD)}
    norm = default_normalization("dm_wide_resnet", kwargs)
    assert norm.mean == (0.0,) * 3 and norm.std == (1.0,) * 3
    ours = build_model("dm_wide_resnet", 100, CIFAR, norm.mean, norm.std, **kwargs).eval()
    assert "net.mean" not in ours.state_dict()  # non-persistent, as in the original
    ours.net.load_state_dict(theirs.state_dict())
    x = images(CIFAR)
    with torch.no_grad():
        assert_same_logits(ours(x), theirs(x))
        other = build_model("dm_wide_resnet", 100, CIFAR, norm.mean, norm.std, **{**kwargs, "activation": "relu"}).eval()
        other.net.load_state_dict(theirs.state_dict())
        assert (other(x) - theirs(x)).abs().max() > 1e-3  # the comparison can fail
    assert default_normalization("dm_wide_resnet", dataset="cifar100").mean == DM_CIFAR100_MEAN


@pytest.mark.parametrize("depth", [18, 34])
def test_dm_preact_resnet_matches_deepmind(tmp_path, depth):
    dm = rb_arch("dm_wide_resnet")
    theirs = randomise_(dm.DMPreActResNet(num_classes=10, depth=depth, width=0, activation_fn=dm.Swish, mean=(0.0,) * 3, std=(1.0,) * 3))
    src = tmp_path / "Rebuffi2021Fixing_R18.pt"
    torch.save(theirs.state_dict(), src)
    loaded = import_checkpoint(src, "dm_preact_resnet", "cifar10", fmt="robustbench", arch_kwargs={"depth": depth})
    compare_imported(loaded.model, theirs, images(CIFAR, n=2))


# --- RobustBench PreActResNet-18 --------------------------------------------------------------


@pytest.mark.parametrize("options", [{}, {"out_shortcut": True, "bn_before_fc": True}])
def test_preact_resnet18_matches_robustbench(tmp_path, options):
    rn = rb_arch("resnet")
    block = rn.PreActBlockV2 if options else rn.PreActBlock  # V2 = shortcut from the activated input
    theirs = randomise_(rn.PreActResNet(block, [2, 2, 2, 2], num_classes=10, bn_before_fc=bool(options)))
    src = tmp_path / "Wong2020Fast.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, src)  # DataParallel keys
    loaded = import_checkpoint(src, "preact_resnet18", "cifar10", fmt="robustbench", arch_kwargs=options)
    compare_imported(loaded.model, theirs, images(CIFAR))


# --- MadryLab robustness CIFAR ResNets (= RobustBench's ResNet) -------------------------------


def robustness_file(path: Path, net: nn.Module, mean, std) -> None:
    """Save ``net`` as robustness does: ``DataParallel(AttackerModel(net, dataset)).state_dict()``
    under ``model``, beside ``optimizer``, ``schedule`` and ``epoch`` (pickled with the standard
    pickle here; robustness uses dill, which writes the same opcodes for these types)."""
    attacker = peer_code.robustness_module("attacker")
    dataset = type("Dataset", (), {"mean": torch.tensor(mean), "std": torch.tensor(std)})()
    wrapped = nn.DataParallel(attacker.AttackerModel(net, dataset))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=50)
    torch.save({"model": wrapped.state_dict(), "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(), "epoch": 150}, path)
    return wrapped


@pytest.mark.parametrize("arch,builder", [("cifar_resnet18", "ResNet18"), ("cifar_resnet50", "ResNet50")])
def test_cifar_resnets_match_robustness_and_robustbench(tmp_path, arch, builder):
    theirs = randomise_(getattr(peer_code.robustness_module("cifar_models.resnet"), builder)(num_classes=10))
    mean, std = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
    src = tmp_path / "cifar_l2_0_5.pt"
    wrapped = robustness_file(src, theirs, mean, std)
    assert any(k.startswith("module.attacker.model.") for k in wrapped.state_dict())
    loaded = import_checkpoint(src, arch, "cifar10", fmt="robustness")
    x = images(CIFAR)
    with torch.no_grad():
        assert_same_logits(loaded.model(x), wrapped(x)[0])  # (logits, image): the file's normaliser, end to end
    # RobustBench's ResNet has the same keys (Engstrom2019Robustness is robustness' ResNet-50)
    rb = rb_arch("resnet")
    rb_net = getattr(rb, builder)()
    assert list(rb_net.state_dict()) == list(theirs.state_dict()) == list(loaded.model.net.state_dict())


def test_robustness_wide_multiplier():
    theirs = randomise_(peer_code.robustness_module("cifar_models.resnet").ResNet(
        peer_code.robustness_module("cifar_models.resnet").BasicBlock, [2, 2, 2, 2], num_classes=10, wm=0.25))
    ours = build_model("cifar_resnet18", 10, CIFAR, [0.0] * 3, [1.0] * 3, wm=0.25).eval()
    ours.net.load_state_dict(theirs.state_dict())
    x = images(CIFAR)
    with torch.no_grad():
        assert_same_logits(ours(x), theirs(x))


# --- torchvision ------------------------------------------------------------------------------


def test_robustness_imagenet_resnet_is_torchvision(tmp_path):
    shape = (3, 64, 64)
    theirs = randomise_(peer_code.robustness_module("imagenet_models.resnet").resnet18(num_classes=10), shape)
    src = tmp_path / "imagenet_linf_4.pt"
    wrapped = robustness_file(src, theirs, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    loaded = import_checkpoint(src, "torchvision:resnet18", spec_for(shape), fmt="robustness")
    with torch.no_grad():
        assert_same_logits(loaded.model(images(shape)), wrapped(images(shape))[0])


@pytest.mark.parametrize("name,shape", [
    ("vgg11_bn", (3, 32, 32)), ("efficientnet_b0", (3, 64, 64)), ("wide_resnet50_2", (3, 64, 64)),
])
def test_torchvision_models_by_name(tmp_path, name, shape):
    import torchvision

    theirs = randomise_(getattr(torchvision.models, name)(weights=None, num_classes=10), shape)
    src = tmp_path / f"{name}.pth"
    torch.save(theirs.state_dict(), src)  # what torch.hub caches and users save
    loaded = import_checkpoint(src, f"torchvision:{name}", spec_for(shape), fmt="torchvision")
    compare_imported(loaded.model, theirs, images(shape, n=2))
    assert not any(getattr(m, "inplace", False) for m in loaded.model.modules())
    with record_activations(loaded.model, default_layers(loaded.model)) as rec, torch.no_grad():
        loaded.model(images(shape, n=1))
    assert set(rec.outputs) == set(default_layers(loaded.model))


def test_torchvision_builds_as_for_pretrained_weights(monkeypatch):
    """Inception v3 with weights: torchvision sets transform_input (different logits) and keeps the
    auxiliary head; ours builds the same net offline. torchvision's own builder is run with the
    weights enum, its download replaced by our state dict."""
    import torchvision
    from torchvision.models import Inception_V3_Weights

    shape = (3, 96, 96)
    norm = default_normalization("torchvision:inception_v3")
    assert norm == Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (3, 299, 299))
    ours = randomise_(build_model("torchvision:inception_v3", 1000, shape, norm.mean, norm.std), shape)
    assert ours.arch_kwargs == {"weights": "IMAGENET1K_V1", "aux_logits": True}
    state = ours.net.state_dict()
    monkeypatch.setattr(type(Inception_V3_Weights.IMAGENET1K_V1), "get_state_dict", lambda self, *a, **k: state)
    theirs = torchvision.models.inception_v3(weights=Inception_V3_Weights.IMAGENET1K_V1).eval()
    x = images(shape, n=2)
    with torch.no_grad():
        assert_same_logits(ours(x), theirs(ours.normalize(x)))
        scratch = build_model("torchvision:inception_v3", 1000, shape, norm.mean, norm.std, weights=None).eval()
        scratch.net.load_state_dict(state)
        assert (scratch(x) - ours(x)).abs().max() > 1e-3  # transform_input matters: the test can fail


def test_torchvision_sizes_and_weights_are_checked():
    assert default_normalization("torchvision:resnet50", {"weights": "IMAGENET1K_V2"}).input_shape == (3, 224, 224)
    assert default_normalization("torchvision:resnet50", {"weights": None}) is None
    with pytest.raises(InvalidParameterError, match="224x224 images only"):
        build_model("torchvision:vit_b_16", 10, (3, 32, 32), [0.5] * 3, [0.2] * 3)
    with pytest.raises(InvalidParameterError, match="weights must be"):
        build_model("torchvision:resnet18", 10, (3, 64, 64), [0.5] * 3, [0.2] * 3, weights="BOGUS")
    with pytest.raises(InvalidParameterError, match="3-channel"):
        build_model("torchvision:resnet18", 10, (1, 64, 64), [0.5], [0.2])
    with pytest.raises(InvalidParameterError, match="unknown torchvision"):
        get_arch("torchvision:resnet9000")


# --- timm -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,shape", [
    ("vit_tiny_patch16_224", (3, 224, 224)),
    ("convnext_tiny", (3, 64, 64)),
    ("swin_tiny_patch4_window7_224", (3, 224, 224)),
    ("xcit_nano_12_p16_224", (3, 224, 224)),
])
def test_timm_models_by_name(tmp_path, name, shape):
    import timm

    theirs = randomise_(timm.create_model(name, pretrained=False, num_classes=10), shape)
    src = tmp_path / f"{name}.pth"
    torch.save(theirs.state_dict(), src)
    cfg = theirs.pretrained_cfg
    norm = default_normalization(f"timm:{name}")
    assert norm == Normalization(tuple(cfg["mean"]), tuple(cfg["std"]), tuple(cfg["input_size"]))
    loaded = import_checkpoint(src, f"timm:{name}", spec_for(shape, mean=norm.mean, std=norm.std), fmt="plain")
    compare_imported(loaded.model, theirs, images(shape, n=2))
    layers = default_layers(loaded.model)
    assert layers[-1] == "net.head" and 3 <= len(layers) <= 7
    with pytest.raises(InvalidParameterError, match="guided backprop"):
        attribute(loaded.model, images(shape, n=1), 0, "guided_backprop")


def test_timm_names_tags_and_sizes_are_checked():
    tagged = default_normalization("timm:vit_tiny_patch16_224.augreg_in21k")
    assert tagged.mean == (0.5, 0.5, 0.5) and tagged.input_shape == (3, 224, 224)
    with pytest.raises(InvalidParameterError, match="unknown timm model"):
        get_arch("timm:no_such_net")
    with pytest.raises(InvalidParameterError, match="pretrained tag|Invalid pretrained tag"):
        get_arch("timm:vit_tiny_patch16_224.no_such_tag")
    with pytest.raises(InvalidParameterError, match="unknown timm model"):
        get_arch("timm:hf-hub:timm/vit_tiny_patch16_224")
    with pytest.raises(InvalidParameterError, match="224x224 images only"):
        build_model("timm:vit_tiny_patch16_224", 10, CIFAR, [0.5] * 3, [0.2] * 3)
    with pytest.raises(InvalidParameterError, match="BatchNorm variants"):
        build_model("timm:efficientnet_b0", 10, (3, 64, 64), [0.5] * 3, [0.2] * 3, dual_bn=True)


# --- conventions across families ---------------------------------------------------------------


SMALL = {
    "wide_resnet": {"depth": 10, "widen_factor": 1},
    "dm_wide_resnet": {"depth": 10, "width": 1, "activation": "relu"},
    "dm_preact_resnet": {"activation": "relu"},
    "preact_resnet18": {},
    "cifar_resnet18": {"wm": 0.25},
    "cifar_resnet50": {"wm": 0.25},
}


@pytest.mark.parametrize("arch", ZOO_FAMILIES)
def test_zoo_families_follow_the_conventions(arch):
    assert arch in ARCHITECTURES and ARCHITECTURES[arch].default_layers
    model = build_model(arch, 10, CIFAR, [0.5] * 3, [0.25] * 3, **SMALL[arch]).eval()
    x = images(CIFAR, n=1)
    assert guided_backprop_problem(model, x) is None  # ReLU modules, each used once, non-inplace
    assert not any(m.inplace for m in model.modules() if isinstance(m, nn.ReLU))
    names = {info.name for info in list_layers(model)}
    assert set(default_layers(model)) <= names
    dual = build_model(arch, 10, CIFAR, [0.5] * 3, [0.25] * 3, dual_bn=True, **SMALL[arch])
    assert any(".main.running_mean" in k for k in dual.state_dict())
    with torch.device("meta"):  # how checkpoints.load checks a card before allocating
        skeleton = build_model(arch, 10, CIFAR, [0.5] * 3, [0.25] * 3, **SMALL[arch])
    assert list(skeleton.state_dict()) == list(model.state_dict())
    with torch.no_grad():
        assert attribute(model, x, 0, "guided_backprop").maps.shape == x.shape


def test_swish_nets_and_shared_relus_refuse_guided_backprop():
    swish = build_model("dm_wide_resnet", 10, CIFAR, [0.5] * 3, [0.25] * 3, depth=10, width=1)
    assert "sigmoid" in guided_backprop_problem(swish, images(CIFAR, n=1))
    with pytest.raises(InvalidParameterError, match="guided backprop"):
        attribute(swish, images(CIFAR, n=1), 0, "guided_backprop")
    mixed = build_model("torchvision:mobilenet_v3_small", 10, CIFAR, [0.5] * 3, [0.25] * 3)
    with pytest.raises(InvalidParameterError, match="hardswish"):  # ReLU modules, but also h-swish gates
        attribute(mixed, images(CIFAR, n=1), 0, "guided_backprop")
    relu = nn.ReLU()
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 8), relu, nn.Linear(8, 8), relu, nn.Linear(8, 2))
    assert "more than once" in guided_backprop_problem(net, torch.rand(1, 3, 2, 2))
    resnet = build_model("torchvision:resnet18", 10, (3, 64, 64), [0.5] * 3, [0.25] * 3)
    assert guided_backprop_problem(resnet, images((3, 64, 64), n=1)) is None  # ReLUs split per use


@pytest.mark.parametrize("arch,kwargs,fragment", [
    ("wide_resnet", {"widen_factor": 10**9}, "widen_factor must be an integer from 1 to 32"),
    ("wide_resnet", {"depth": 10**6}, "depth must be an integer from 10 to 200"),
    ("wide_resnet", {"depth": 30}, "6n+4"),
    ("wide_resnet", {"depth": 196, "widen_factor": 32}, "G parameters"),
    ("wide_resnet", {"sub_block1": "yes"}, "true or false"),
    ("dm_wide_resnet", {"width": 33}, "width must be an integer from 1 to 32"),
    ("dm_wide_resnet", {"activation": "gelu"}, "activation must be one of"),
    ("dm_wide_resnet", {"net_mean": [0.5, 0.5]}, "give both"),
    ("dm_wide_resnet", {"net_mean": [0.5, 0.5], "net_std": [1, 1]}, "3 finite numbers"),
    ("dm_wide_resnet", {"net_mean": [0.5] * 3, "net_std": [1, 0, 1]}, "> 0"),
    ("dm_preact_resnet", {"depth": 50}, "18 or 34"),
    ("cifar_resnet50", {"wm": 10**9}, "width multiplier"),
    ("preact_resnet18", {"width": 2}, "no option"),
])
def test_options_are_bounded_before_allocation(arch, kwargs, fragment):
    with pytest.raises(InvalidParameterError) as info:
        build_model(arch, 10, CIFAR, [0.5] * 3, [0.25] * 3, **kwargs)
    assert fragment in str(info.value)


def test_class_count_is_bounded():
    with pytest.raises(InvalidParameterError, match="num_classes must be at most"):
        build_model("wide_resnet", 10**9, CIFAR, [0.5] * 3, [0.25] * 3, depth=10, widen_factor=1)


def test_default_normalization_for_other_families():
    assert default_normalization("small_cnn") is None
    assert default_normalization("wide_resnet") is None  # who trained it decides (robustness files carry theirs)
    assert default_normalization("dm_wide_resnet", dataset="mnist") is None
    with pytest.raises(InvalidParameterError, match="unknown architecture"):
        default_normalization("vgg99")
