"""Architecture registry and :func:`build_model`.

Conventions every architecture follows (docs/ENGINE_API.md):
- each ReLU is its own non-inplace ``nn.ReLU`` module, used once (captum's guided backprop and
  forward hooks need module ReLUs; an inplace ReLU would overwrite a recorded activation);
- the net takes *normalised* images; :class:`~engine.models.wrapper.Classifier` adds the
  normalisation so the model as a whole takes images in [0, 1].

torchvision ResNets: torchvision's blocks share one ``ReLU(inplace=True)`` for all their uses.
:func:`_split_relus` replaces every block by a :class:`ResidualBlock` holding the same conv/BN/
downsample modules (so state-dict keys stay torchvision's, ``layer1.0.conv1.weight`` ...) plus one
non-inplace ReLU per use (``relu1``, ``relu2`` [, ``relu3``]); the stem's ReLU is made non-inplace.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from engine.errors import InvalidParameterError
from engine.models.dual_bn import convert_to_dual_bn
from engine.models.wrapper import Classifier


@dataclass(frozen=True)
class ArchSpec:
    """One registered architecture.

    Attributes:
        builder: ``builder(in_channels, num_classes, **kwargs) -> nn.Module`` taking normalised
            (B, in_channels, H, W) images and returning (B, num_classes) logits.
        description: one line for select boxes and ``--help``.
        default_kwargs: every accepted keyword argument with its default.
        has_bn: whether the net has BatchNorm2d layers (so a dual-BN variant exists).
        min_input: smallest accepted image side (H and W), in pixels.
        default_layers: the main blocks, relative to the net (``Classifier`` prefixes ``net.``).
    """

    builder: Callable[..., nn.Module]
    description: str
    default_kwargs: dict = field(default_factory=dict)
    has_bn: bool = True
    min_input: int = 16
    default_layers: tuple[str, ...] = ()


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


class ResidualBlock(nn.Module):
    """A torchvision ``BasicBlock``/``Bottleneck`` rebuilt with one non-inplace ReLU per use.

    Holds the block's own ``conv1, bn1, conv2, bn2[, conv3, bn3]`` and ``downsample`` modules
    (state-dict keys unchanged) and ReLUs ``relu1 .. reluN`` (``reluN`` after the residual sum).
    """

    def __init__(self, block: nn.Module):
        super().__init__()
        self.depth = 3 if hasattr(block, "conv3") else 2
        for i in range(1, self.depth + 1):
            setattr(self, f"conv{i}", getattr(block, f"conv{i}"))
            setattr(self, f"bn{i}", getattr(block, f"bn{i}"))
            setattr(self, f"relu{i}", nn.ReLU())
        self.downsample = block.downsample if block.downsample is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.depth:
                out = getattr(self, f"relu{i}")(out)
        return getattr(self, f"relu{self.depth}")(out + self.downsample(x))


def _split_relus(net: nn.Module) -> nn.Module:
    """Make a torchvision ResNet use separate non-inplace ReLU modules (see module docstring)."""
    net.relu = nn.ReLU()
    for stage_name in ("layer1", "layer2", "layer3", "layer4"):
        stage = getattr(net, stage_name)
        for index, block in list(stage.named_children()):
            setattr(stage, index, ResidualBlock(block))
    return net


def _torchvision_resnet(name: str) -> Callable[..., nn.Module]:
    def build(in_channels: int, num_classes: int) -> nn.Module:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return _split_relus(net)

    build.__name__ = f"build_{name}"
    return build


# ---------------------------------------------------------------------------------------------
# registry


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
}


def get_arch(name: str) -> ArchSpec:
    """The :class:`ArchSpec` called ``name``; an unknown name raises ``InvalidParameterError``."""
    try:
        return ARCHITECTURES[name]
    except (KeyError, TypeError):
        raise InvalidParameterError(
            f"unknown architecture {name!r}; choose one of {', '.join(ARCHITECTURES)}"
        ) from None


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
        arch: a key of :data:`ARCHITECTURES` ("small_cnn", "cifar_resnet", "resnet18", "resnet50").
        num_classes: number of classes (>= 1).
        input_shape: (C, H, W) of the images; H and W >= the architecture's ``min_input``.
        mean, std: per-channel normalisation (C values each), applied inside the model.
        dual_bn: replace every BatchNorm2d by a :class:`DualBatchNorm2d` (AdvProp).
        **arch_kwargs: architecture options (see ``ARCHITECTURES[arch].default_kwargs``), e.g.
            ``width`` for small_cnn, ``depth`` and ``width`` for cifar_resnet.

    Returns:
        A :class:`Classifier` in training mode (call ``.eval()`` for inference); its forward maps
        (B, C, H, W) in [0, 1] to logits (B, num_classes).

    Raises:
        InvalidParameterError: unknown arch or option, bad shape/size/mean/std, or ``dual_bn`` for
            an architecture without BatchNorm.
    """
    spec = get_arch(arch)
    num_classes = _positive_int("num_classes", num_classes)
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
    net = spec.builder(shape[0], num_classes, **kwargs)
    if dual_bn and convert_to_dual_bn(net) == 0:
        raise InvalidParameterError(f"{arch} has no BatchNorm2d layers to make dual")
    return Classifier(
        net, arch=arch, arch_kwargs=kwargs, num_classes=num_classes, input_shape=shape,
        mean=mean, std=std, dual_bn=bool(dual_bn),
    )
