"""Architecture registry and :func:`build_model`.

Conventions every architecture follows (docs/ENGINE_API.md):
- each ReLU is its own non-inplace ``nn.ReLU`` module, used once (captum's guided backprop and
  forward hooks need module ReLUs; an inplace ReLU would overwrite a recorded activation);
- the net takes *normalised* images; :class:`~engine.models.wrapper.Classifier` adds the
  normalisation so the model as a whole takes images in [0, 1].

torchvision ResNets: torchvision's blocks share one ``ReLU(inplace=True)`` for all their uses.
:func:`engine.models.base.split_relus` replaces every block by a ``ResidualBlock`` holding the same
conv/BN/downsample modules (so state-dict keys stay torchvision's, ``layer1.0.conv1.weight`` ...) plus
one non-inplace ReLU per use (``relu1``, ``relu2`` [, ``relu3``]); the stem's ReLU is made non-inplace.

The zoo families (``wide_resnet``, ``dm_wide_resnet``, ``dm_preact_resnet``, ``preact_resnet18``,
``cifar_resnet18``, ``cifar_resnet50``) live in :mod:`engine.models.cifar_zoo` with the original
code's state-dict keys; ``torchvision:NAME`` and ``timm:NAME`` (any classification model of those
libraries) in :mod:`engine.models.external`. :func:`default_normalization` says which
normalisation and input size the published weights of a family expect.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from engine import catalogue
from engine.catalogue import require_names
from engine.errors import InvalidParameterError
import engine.models.cifar_zoo as cifar_zoo
from engine.models.base import ArchSpec, split_relus
from engine.models.dual_bn import BN_BRANCHES, convert_to_dual_bn
from engine.models.external import Normalization, external_normalization, external_spec, is_external
from engine.models.wrapper import Classifier

#: Largest accepted number of classes (ImageNet-21k has 21,843): more is refused before allocation.
MAX_CLASSES = 100_000
#: Largest accepted model, in parameters (4 GB in float32; ViT-H has 632 M): a built-in
#: architecture's options are first built on the meta device (no memory) and refused above it.
MAX_PARAMETERS = 1_000_000_000


def _positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameterError(f"{name} must be a positive integer, got {value!r}")
    return value


def conv_bn_relu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    """[3x3 conv (no bias), BatchNorm2d, ReLU] as three separate modules."""
    return [
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


# ---------------------------------------------------------------------------------------------
# small_cnn


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU blocks and a two-layer head; small enough to (adversarially) train on CPU.

    Blocks: ``block1`` (C -> w, max-pool /2), ``block2`` (w -> 2w, max-pool /2), ``block3``
    (2w -> 2w); then adaptive average pooling to 4x4, so any input >= 16x16 works; ``hidden``
    (Linear + ReLU, 128 units) and ``fc``. With width 32: about 0.19 M parameters.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, hidden: int = 128):
        super().__init__()
        w = _positive_int("width", width)
        hidden = _positive_int("hidden", hidden)
        self.block1 = nn.Sequential(*conv_bn_relu(in_channels, w), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(*conv_bn_relu(w, 2 * w), nn.MaxPool2d(2))
        self.block3 = nn.Sequential(*conv_bn_relu(2 * w, 2 * w))
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.flatten = nn.Flatten()
        self.hidden = nn.Sequential(nn.Linear(2 * w * 16, hidden), nn.ReLU())
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) normalised -> (B, num_classes)."""
        x = self.block3(self.block2(self.block1(x)))  # (B, 2w, H/4, W/4)
        return self.fc(self.hidden(self.flatten(self.pool(x))))


# ---------------------------------------------------------------------------------------------
# cifar_resnet


class BasicBlock(nn.Module):
    """CIFAR ResNet basic block (He et al. 2016): two 3x3 conv-BN, projection shortcut when needed."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """CIFAR ResNet (He et al. 2016, section 4.2): depth 6n+2, stages of 16w/32w/64w channels.

    ``depth`` 8, 14, 20, 32, 44, 56 ...; ``width`` multiplies every stage's channels (a wide
    variant, as robust training prefers capacity). Global average pooling, so inputs other than
    32x32 work too. Layers: ``stem``, ``layer1``..``layer3``, ``pool``, ``flatten``, ``fc``.
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 20, width: int = 1):
        super().__init__()
        depth = _positive_int("depth", depth)
        width = _positive_int("width", width)
        if depth < 8 or (depth - 2) % 6:
            raise InvalidParameterError(f"cifar_resnet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), got {depth}")
        blocks = (depth - 2) // 6
        channels = [16 * width, 32 * width, 64 * width]
        self.stem = nn.Sequential(*conv_bn_relu(in_channels, channels[0]))
        self.layer1 = self._stage(channels[0], channels[0], blocks, stride=1)
        self.layer2 = self._stage(channels[0], channels[1], blocks, stride=2)
        self.layer3 = self._stage(channels[1], channels[2], blocks, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels[2], num_classes)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride)]
        layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) normalised -> (B, num_classes)."""
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))  # (B, 64w, H/4, W/4)
        return self.fc(self.flatten(self.pool(x)))


# ---------------------------------------------------------------------------------------------
# torchvision resnet18 / resnet50


def _torchvision_resnet(name: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, num_classes: int) -> nn.Module:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return split_relus(net)

    build.__name__ = f"build_{name}"
    return build


# ---------------------------------------------------------------------------------------------
# registry


def _dm_canonical(kwargs: dict) -> dict:
    """DeepMind nets: in-code mean/std as JSON lists of floats (or None)."""
    return dict(kwargs, **{k: None if kwargs[k] is None else [float(v) for v in kwargs[k]] for k in ("net_mean", "net_std")})


ARCHITECTURES: dict[str, ArchSpec] = {
    "small_cnn": ArchSpec(
        builder=SmallCNN,
        description="Small CNN: 3 conv-BN-ReLU blocks + 2 linear layers (~0.2 M params); any size >= 16x16",
        default_kwargs={"width": 32, "hidden": 128},
        has_bn=True,
        min_input=16,
        default_layers=("block1", "block2", "block3", "hidden", "fc"),
    ),
    "cifar_resnet": ArchSpec(
        builder=CifarResNet,
        description="CIFAR ResNet (He et al. 2016) for 32x32 images; depth 6n+2, width multiplier",
        default_kwargs={"depth": 20, "width": 1},
        has_bn=True,
        min_input=16,
        default_layers=("stem", "layer1", "layer2", "layer3", "fc"),
    ),
    "resnet18": ArchSpec(
        builder=_torchvision_resnet("resnet18"),
        description="torchvision ResNet-18 for ImageNet-size images (e.g. 224x224)",
        default_kwargs={},
        has_bn=True,
        min_input=32,
        default_layers=("layer1", "layer2", "layer3", "layer4", "fc"),
    ),
    "resnet50": ArchSpec(
        builder=_torchvision_resnet("resnet50"),
        description="torchvision ResNet-50 for ImageNet-size images (e.g. 224x224)",
        default_kwargs={},
        has_bn=True,
        min_input=32,
        default_layers=("layer1", "layer2", "layer3", "layer4", "fc"),
    ),
    "wide_resnet": ArchSpec(
        builder=cifar_zoo.WideResNet,
        description="WideResNet-depth-k of RobustBench/TRADES (their keys: conv1, block1..3.layer.i, bn1, fc)",
        default_kwargs={"depth": 28, "widen_factor": 10, "sub_block1": False, "bias_last": True},
        has_bn=True,
        min_input=16,
        default_layers=("block1", "block2", "block3", "relu", "fc"),
    ),
    "dm_wide_resnet": ArchSpec(
        builder=cifar_zoo.DMWideResNet,
        description="DeepMind WideResNet (Gowal 2020, Rebuffi 2021) as in RobustBench (keys init_conv, layer, logits)",
        default_kwargs={"depth": 28, "width": 10, "activation": "swish", "net_mean": None, "net_std": None},
        has_bn=True,
        min_input=16,
        default_layers=("layer.0", "layer.1", "layer.2", "relu", "logits"),
        canonical_kwargs=_dm_canonical,
    ),
    "dm_preact_resnet": ArchSpec(
        builder=cifar_zoo.DMPreActResNet,
        description="DeepMind pre-activation ResNet-18/34 (Rebuffi 2021) as in RobustBench (keys conv_2d, layer_0..3)",
        default_kwargs={"depth": 18, "activation": "swish", "net_mean": None, "net_std": None},
        has_bn=True,
        min_input=16,
        default_layers=("layer_0", "layer_1", "layer_2", "layer_3", "relu", "logits"),
        canonical_kwargs=_dm_canonical,
    ),
    "preact_resnet18": ArchSpec(
        builder=cifar_zoo.PreActResNet18,
        description="Pre-activation ResNet-18 of RobustBench (Wong2020Fast, ...; keys conv1, layer1..4, linear)",
        default_kwargs={"out_shortcut": False, "bn_before_fc": False},
        has_bn=True,
        min_input=16,
        default_layers=("layer1", "layer2", "layer3", "layer4", "linear"),
    ),
    "cifar_resnet18": ArchSpec(
        builder=cifar_zoo.madry_resnet("cifar_resnet18"),
        description="CIFAR ResNet-18 of MadryLab robustness / RobustBench (3x3 stem; keys conv1, layer1..4, linear)",
        default_kwargs={"wm": 1},
        has_bn=True,
        min_input=16,
        default_layers=("layer1", "layer2", "layer3", "layer4", "linear"),
    ),
    "cifar_resnet50": ArchSpec(
        builder=cifar_zoo.madry_resnet("cifar_resnet50"),
        description="CIFAR ResNet-50 of MadryLab robustness / RobustBench (Engstrom2019; keys conv1, layer1..4, linear)",
        default_kwargs={"wm": 1},
        has_bn=True,
        min_input=16,
        default_layers=("layer1", "layer2", "layer3", "layer4", "linear"),
    ),
}

require_names(ARCHITECTURES, catalogue.ARCHITECTURES, "engine.models.ARCHITECTURES vs engine.catalogue.ARCHITECTURES")
require_names(BN_BRANCHES, catalogue.BN_BRANCHES, "engine.models.BN_BRANCHES vs engine.catalogue.BN_BRANCHES")

#: The DeepMind families (normalisation: DeepMind's constants per dataset, unless in code).
_DM_FAMILIES = ("dm_wide_resnet", "dm_preact_resnet")
_DM_NORMALISATION = {
    "cifar10": (cifar_zoo.DM_CIFAR10_MEAN, cifar_zoo.DM_CIFAR10_STD),
    "cifar100": (cifar_zoo.DM_CIFAR100_MEAN, cifar_zoo.DM_CIFAR100_STD),
}
#: Families whose RobustBench files take raw [0, 1] images (unless the zoo entry says otherwise).
_RAW_INPUT_FAMILIES = ("wide_resnet", "preact_resnet18", "cifar_resnet18", "cifar_resnet50")


def get_arch(name: str) -> ArchSpec:
    """The :class:`ArchSpec` called ``name``: a key of :data:`ARCHITECTURES`, or
    ``torchvision:NAME`` / ``timm:NAME`` (built on demand). An unknown name raises
    ``InvalidParameterError``."""
    if is_external(name):
        return external_spec(name)
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise InvalidParameterError(
            f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}, "
            "or torchvision:NAME / timm:NAME for any model of those libraries"
        ) from None


def arch_default_layers(model: nn.Module) -> list[str] | None:
    """The main blocks of a ``Classifier`` of a known architecture (``net.``-prefixed), else None."""
    arch, net = getattr(model, "arch", None), getattr(model, "net", None)
    if not isinstance(net, nn.Module) or not (is_external(arch) or arch in ARCHITECTURES):
        return None
    try:
        spec = get_arch(arch)
    except InvalidParameterError:
        return None
    names = spec.layers_for(net) if spec.layers_for is not None else list(spec.default_layers)
    return [f"net.{name}" for name in names]


def default_normalization(
    arch: str, arch_kwargs: dict | None = None, source: str | None = None, dataset: str | None = None,
) -> Normalization | None:
    """The normalisation and input size a family's published weights expect, or None.

    Importers call it to fill the model's ``Normalize`` (``Classifier.mean``/``std``) when the
    file records no normalisation of its own (an explicit choice or a zoo table comes first):

    - ``timm:NAME[.tag]``: the model's pretrained config ``mean``, ``std``, ``input_size``;
    - ``torchvision:NAME``: the ``mean``/``std`` and crop size of the transforms of the weights
      named by ``arch_kwargs["weights"]`` (default "DEFAULT"; ImageNet's mean/std for every
      torchvision classification weight today), input ``(3, crop, crop)``; None for
      ``weights=None`` (a net trained from scratch: nothing is documented);
    - ``dm_wide_resnet``, ``dm_preact_resnet``: DeepMind's constants at (3, 32, 32) —
      :data:`~engine.models.cifar_zoo.DM_CIFAR100_MEAN`/``STD`` for ``dataset="cifar100"``,
      the CIFAR-10 ones for "cifar10" or no dataset, None for another dataset; the identity
      when ``arch_kwargs`` has ``net_mean``/``net_std`` (the net then normalises in its forward,
      as DeepMind's code does);
    - ``wide_resnet``, ``preact_resnet18``, ``cifar_resnet18``, ``cifar_resnet50``: with
      ``source="robustbench"`` the identity at (3, 32, 32) — most RobustBench models take raw
      [0, 1] images (a few zoo entries normalise in code with ``mu``/``sigma`` buffers; their
      values come from the zoo table); otherwise None: whoever trained the net chose (MadryLab
      ``robustness`` files carry their ``normalizer.new_mean``/``new_std``);
    - every other architecture: None (use the dataset's mean/std).

    Args:
        arch: architecture name (see :func:`get_arch`).
        arch_kwargs: the architecture options (``weights`` for torchvision, ``net_mean``/
            ``net_std`` for the DeepMind nets); missing ones take their defaults.
        source: where the weights come from, if known ("robustbench", "robustness", ...).
        dataset: the dataset name the weights were trained on, if known ("cifar10", ...).

    Returns:
        :class:`~engine.models.external.Normalization` ``(mean, std, input_shape)`` or None.

    Raises:
        InvalidParameterError: unknown architecture or option value.
    """
    spec = get_arch(arch)
    kwargs = {**spec.default_kwargs, **(arch_kwargs or {})}
    if is_external(arch):
        return external_normalization(arch, kwargs)
    if arch in _DM_FAMILIES:
        if kwargs.get("net_mean") is not None:
            channels = len(kwargs["net_mean"])
            return Normalization((0.0,) * channels, (1.0,) * channels, (channels, 32, 32))
        if dataset not in (None, *_DM_NORMALISATION):
            return None
        mean, std = _DM_NORMALISATION[dataset or "cifar10"]
        return Normalization(tuple(mean), tuple(std), (3, 32, 32))
    if source == "robustbench" and arch in _RAW_INPUT_FAMILIES:
        return Normalization((0.0,) * 3, (1.0,) * 3, (3, 32, 32))
    return None


def _check_input_shape(input_shape: Sequence[int], spec: ArchSpec, arch: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"input_shape must be (C, H, W) integers, got {input_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise InvalidParameterError(f"input_shape must be (C, H, W) with positive sizes, got {input_shape!r}")
    if min(shape[1:]) < spec.min_input:
        raise InvalidParameterError(
            f"{arch} needs images of at least {spec.min_input}x{spec.min_input} pixels, got {shape[1]}x{shape[2]}"
        )
    return shape


def _check_dual_bn_convertible(net: nn.Module, arch: str) -> None:
    """Dual BN copies plain ``nn.BatchNorm2d`` layers; a subclass (timm's ``BatchNormAct2d`` also
    applies an activation) would lose what it adds."""
    variants = sorted({type(m).__name__ for m in net.modules()
                       if isinstance(m, nn.BatchNorm2d) and type(m) is not nn.BatchNorm2d})
    if variants:
        raise InvalidParameterError(
            f"{arch} uses BatchNorm variants ({', '.join(variants)}) that dual BN (AdvProp) cannot copy faithfully"
        )


def _check_parameter_count(arch: str, spec: ArchSpec, shape, num_classes: int, kwargs: dict) -> None:
    """Refuse a built-in architecture whose options make more than :data:`MAX_PARAMETERS`
    parameters (a width of 10⁹ ...), counted on the meta device before any memory is allocated.
    External (torchvision/timm) models have fixed sizes and are not counted here."""
    if is_external(arch) or torch.empty(0).device.type == "meta":
        return
    try:
        with torch.device("meta"):
            skeleton = spec.builder(shape[0], num_classes, **kwargs)
        count = sum(p.numel() for p in skeleton.parameters())
    except RuntimeError as exc:  # a tensor too large for torch to even describe
        if "overflow" not in str(exc):
            raise
        count = None
    if count is None or count > MAX_PARAMETERS:
        options = {k: v for k, v in kwargs.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        size = "too many parameters to count" if count is None else f"{count:,} parameters"
        raise InvalidParameterError(f"{arch} with {options} would have {size}; at most {MAX_PARAMETERS:,} are "
                                    "allowed (use smaller size options)")


def build_model(
    arch: str,
    num_classes: int,
    input_shape: Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    dual_bn: bool = False,
    **arch_kwargs,
) -> Classifier:
    """Build a freshly initialised classifier that takes images in [0, 1].

    Args:
        arch: a key of :data:`ARCHITECTURES` ("small_cnn", "cifar_resnet", "resnet18", "resnet50",
            "wide_resnet", "dm_wide_resnet", "dm_preact_resnet", "preact_resnet18",
            "cifar_resnet18", "cifar_resnet50") or ``torchvision:NAME`` / ``timm:NAME``.
        num_classes: number of classes (>= 1).
        input_shape: (C, H, W) of the images; H and W >= the architecture's ``min_input``.
        mean, std: per-channel normalisation (C values each), applied inside the model.
        dual_bn: replace every BatchNorm2d by a :class:`DualBatchNorm2d` (AdvProp).
        **arch_kwargs: architecture options (see ``get_arch(arch).default_kwargs``), e.g.
            ``width`` for small_cnn, ``depth`` and ``widen_factor`` for wide_resnet, ``weights``
            for torchvision models. Sizes are bounded (the architecture's own option checks,
            at most :data:`MAX_PARAMETERS` parameters counted on the meta device, at most
            :data:`MAX_CLASSES` classes) and checked before anything is allocated.

    Returns:
        A :class:`Classifier` in training mode (call ``.eval()`` for inference); its forward maps
        (B, C, H, W) in [0, 1] to logits (B, num_classes).

    Raises:
        InvalidParameterError: unknown arch or option, bad option value, bad shape/size/mean/std,
            or ``dual_bn`` for an architecture without (plain) BatchNorm.
    """
    spec = get_arch(arch)
    num_classes = _positive_int("num_classes", num_classes)
    if num_classes > MAX_CLASSES:
        raise InvalidParameterError(f"num_classes must be at most {MAX_CLASSES:,}, got {num_classes:,}")
    shape = _check_input_shape(input_shape, spec, arch)
    unknown = sorted(set(arch_kwargs) - set(spec.default_kwargs))
    if unknown:
        accepted = ", ".join(spec.default_kwargs) or "none"
        raise InvalidParameterError(f"{arch} has no option(s) {', '.join(unknown)}; accepted: {accepted}")
    if len(mean) != shape[0] or len(std) != shape[0]:
        raise InvalidParameterError(
            f"mean and std need {shape[0]} values (one per channel), got {len(mean)} and {len(std)}"
        )
    if dual_bn and not spec.has_bn:
        raise InvalidParameterError(f"{arch} has no BatchNorm layers, so it has no dual-BN (AdvProp) variant")
    kwargs = {**spec.default_kwargs, **arch_kwargs}
    if spec.check_input is not None:
        spec.check_input(shape, kwargs)
    _check_parameter_count(arch, spec, shape, num_classes, kwargs)
    net = spec.builder(shape[0], num_classes, **kwargs)  # validates the options before allocating
    if spec.canonical_kwargs is not None:
        kwargs = spec.canonical_kwargs(kwargs)
    if dual_bn:
        _check_dual_bn_convertible(net, arch)
        if convert_to_dual_bn(net) == 0:
            raise InvalidParameterError(f"{arch} has no BatchNorm2d layers to make dual")
    return Classifier(
        net, arch=arch, arch_kwargs=kwargs, num_classes=num_classes, input_shape=shape,
        mean=mean, std=std, dual_bn=bool(dual_bn),
    )
