"""The CIFAR architectures of the robust-model zoos, with their original state-dict keys.

Each class computes the same function as the code that trained the published weights, and names
its parameters exactly as that code does, so a file from RobustBench, TRADES, DeepMind or MadryLab
``robustness`` loads with no key mapping. They differ from the originals only where RobustScope's
conventions ask (docs/ENGINE_API.md), never at the price of different logits:

- every activation is its own non-inplace module, used once (the originals use inplace ReLUs or
  ``F.relu``); modules without parameters add no state-dict keys;
- the final average pooling is global (``nn.AdaptiveAvgPool2d(1)``): on the 32x32 images the
  originals were written for it equals their fixed ``F.avg_pool2d(out, 8)``/``(out, 4)``, and
  other sizes work too;
- the number of input channels is a parameter (the originals hard-code 3).

Families (registry names in ``engine.models.ARCHITECTURES``):

- ``wide_resnet`` — :class:`WideResNet`: RobustBench/TRADES ``WideResNet(depth, widen_factor,
  sub_block1, bias_last)``; keys ``conv1``, ``block{1,2,3}.layer.i.{bn1,conv1,bn2,conv2,
  convShortcut}``, ``bn1``, ``fc``. ``sub_block1=True`` adds the unused ``sub_block1`` group that
  RobustBench builds (and whose weights its files carry) for Carmon2019, Wang2020, ... .
- ``dm_wide_resnet`` — :class:`DMWideResNet`: DeepMind's WideResNet (Gowal et al. 2020, Rebuffi
  et al. 2021) as RobustBench ships it; keys ``init_conv``, ``layer.g.block.i.{batchnorm_0,conv_0,
  batchnorm_1,conv_1,shortcut}``, ``batchnorm``, ``logits``. The original subtracts a mean and
  divides by a std in its own forward (non-persistent buffers, not in the files); here that
  normalisation is the ``Classifier``'s, like every other net's (the same arithmetic, so the same
  logits; :data:`DM_CIFAR10_MEAN` ... are DeepMind's values). ``net_mean``/``net_std`` put it back
  inside the net instead, as the original has it.
- ``dm_preact_resnet`` — :class:`DMPreActResNet`: DeepMind's pre-activation ResNet-18/34; keys
  ``conv_2d``, ``layer_g.i.{batchnorm_0,conv_2d_1,batchnorm_1,conv_2d_2,shortcut}``,
  ``batchnorm``, ``logits``; normalisation as for ``dm_wide_resnet``.
- ``preact_resnet18`` — :class:`PreActResNet18`: RobustBench's ``PreActResNet(PreActBlock,
  [2, 2, 2, 2])`` (Wong2020Fast, Andriushchenko2020, ...); ``out_shortcut=True`` gives its
  ``PreActBlockV2`` and ``bn_before_fc=True`` its extra final ``bn``.
- ``cifar_resnet18`` / ``cifar_resnet50`` — :class:`MadryResNet`: the CIFAR ResNets of MadryLab
  ``robustness.cifar_models`` and RobustBench's ``ResNet`` (identical keys: ``conv1``, ``bn1``,
  ``layer{1..4}.i.{conv1,bn1,conv2,bn2[,conv3,bn3],shortcut.{0,1}}``, ``linear``); ``wm`` is
  ``robustness``' width multiplier.

References: Zagoruyko & Komodakis 2016 (WRN); Zhang et al. 2019 (TRADES); He et al. 2016
(pre-activation ResNet); Gowal et al. 2020 (DeepMind's WRN with Swish).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import InvalidParameterError

#: Largest accepted depth, width factor and parameter count: a card or ``--arch-kwargs`` asking for
#: more is refused before anything is allocated (WRN-94-16, the largest zoo net, has ~0.37 G).
MAX_DEPTH = 200
MAX_WIDTH = 32
MAX_PARAMS = 1_000_000_000

#: The normalisation constants DeepMind's models (and RobustBench's copies) subtract in code.
DM_CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
DM_CIFAR10_STD = (0.2471, 0.2435, 0.2616)
DM_CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
DM_CIFAR100_STD = (0.2673, 0.2564, 0.2762)

#: Activations of the DeepMind families: "relu" (nn.ReLU), "swish" (x * sigmoid(x), DeepMind's
#: ``Swish``), "silu" (nn.SiLU; the same function, as some RobustBench entries use).
DM_ACTIVATIONS = ("relu", "swish", "silu")


# ---------------------------------------------------------------------------------------------
# option checks (all before any allocation)


def _int_in(name: str, value, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidParameterError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameterError(f"{name} must be true or false, got {value!r}")
    return value


def _wrn_depth(arch: str, depth) -> int:
    depth = _int_in(f"{arch} depth", depth, 10, MAX_DEPTH)
    if (depth - 4) % 6:
        raise InvalidParameterError(
            f"{arch} depth must be 6n+4 (10, 16, 22, 28, 34, 70, ...), got {depth}"
        )
    return depth


def _wrn_params(in_channels: int, depth: int, width: int, num_classes: int, extra_group: bool) -> int:
    """Weights of a (DM) WideResNet, counted before building it (convolutions and the classifier)."""
    n = (depth - 4) // 6
    channels = [16, 16 * width, 32 * width, 64 * width]
    total = 9 * in_channels * 16 + 64 * width * (num_classes + 1)
    for index, (cin, cout) in enumerate(zip(channels[:-1], channels[1:])):
        group = 9 * cin * cout + 9 * cout * cout + (cin * cout if cin != cout else 0)
        group += (n - 1) * 18 * cout * cout
        total += group * (2 if (index == 0 and extra_group) else 1)
    return total


def _check_size(arch: str, params: int) -> None:
    if params > MAX_PARAMS:
        raise InvalidParameterError(
            f"{arch} with these options would have about {params / 1e9:.1f} G parameters; "
            f"at most {MAX_PARAMS / 1e9:.0f} G are allowed"
        )


def _channel_values(name: str, values, channels: int, positive: bool) -> list[float]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidParameterError(f"{name} must be a list of {channels} numbers, got {values!r}")
    if len(values) != channels or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    ):
        raise InvalidParameterError(f"{name} must be {channels} finite numbers (one per channel), got {list(values)!r}")
    if positive and not all(v > 0 for v in values):
        raise InvalidParameterError(f"every {name} value must be > 0, got {list(values)!r}")
    return [float(v) for v in values]


def _activation(name) -> type[nn.Module]:
    if name == "relu":
        return nn.ReLU
    if name == "swish":
        return Swish
    if name == "silu":
        return nn.SiLU
    raise InvalidParameterError(f"activation must be one of {', '.join(DM_ACTIVATIONS)}, got {name!r}")


class Swish(nn.Module):
    """``x * sigmoid(x)`` (Ramachandran et al. 2017), as DeepMind's ``Swish`` computes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def _global_pool_head() -> tuple[nn.Module, nn.Module]:
    return nn.AdaptiveAvgPool2d(1), nn.Flatten()


# ---------------------------------------------------------------------------------------------
# wide_resnet (RobustBench / TRADES)


class WRNBlock(nn.Module):
    """Pre-activation WRN basic block; keys ``bn1, conv1, bn2, conv2[, convShortcut]``.

    When the channel count changes, the shortcut (``convShortcut``, 1x1) reads the *activated*
    input, otherwise the raw input is added (as in the TRADES code).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return (x if self.equal_in_out else self.convShortcut(act)) + out


class WRNGroup(nn.Module):
    """``n`` WRN blocks in ``self.layer`` (so keys read ``block1.layer.0.bn1.weight``)."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[
            WRNBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
            for i in range(blocks)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WideResNet-``depth``-``widen_factor`` as in TRADES/RobustBench (Zagoruyko & Komodakis 2016).

    Args:
        in_channels, num_classes: image channels, logits.
        depth: 6n+4 (28 and 34 in the zoo; 10 .. 200).
        widen_factor: channel multiplier k (stages of 16k, 32k, 64k channels; 1 .. 32).
        sub_block1: also build RobustBench's unused ``sub_block1`` group, so files that carry its
            weights load strictly (it never runs).
        bias_last: the final ``fc`` has a bias (RobustBench's default; False for a few entries).

    Layers: ``conv1``, ``block1``..``block3``, ``bn1``, ``relu``, ``pool``, ``flatten``, ``fc``.
    Input (B, C, H, W) -> logits (B, num_classes).
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, widen_factor: int = 10,
                 sub_block1: bool = False, bias_last: bool = True):
        super().__init__()
        depth = _wrn_depth("wide_resnet", depth)
        k = _int_in("wide_resnet widen_factor", widen_factor, 1, MAX_WIDTH)
        sub_block1, bias_last = _flag("sub_block1", sub_block1), _flag("bias_last", bias_last)
        _check_size("wide_resnet", _wrn_params(in_channels, depth, k, num_classes, sub_block1))
        n = (depth - 4) // 6
        channels = [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WRNGroup(n, channels[0], channels[1], 1)
        if sub_block1:
            self.sub_block1 = WRNGroup(n, channels[0], channels[1], 1)
        self.block2 = WRNGroup(n, channels[1], channels[2], 2)
        self.block3 = WRNGroup(n, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU()
        self.pool, self.flatten = _global_pool_head()
        self.fc = nn.Linear(channels[3], num_classes, bias=bias_last)
        for m in self.modules():  # the TRADES initialisation
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, num_classes)."""
        out = self.block3(self.block2(self.block1(self.conv1(x))))  # (B, 64k, H/4, W/4)
        out = self.relu(self.bn1(out))
        return self.fc(self.flatten(self.pool(out)))


# ---------------------------------------------------------------------------------------------
# dm_wide_resnet / dm_preact_resnet (DeepMind, as shipped by RobustBench)


def _same_pad(x: torch.Tensor, stride: int) -> torch.Tensor:
    """TensorFlow's 'SAME' padding for a 3x3 convolution (DeepMind pads by hand before conv)."""
    return F.pad(x, (1, 1, 1, 1) if stride == 1 else (0, 1, 0, 1))


class _InputNormalized(nn.Module):
    """Base for the DeepMind nets: optionally ``(x - net_mean) / net_std`` in their own forward."""

    def _set_normalisation(self, in_channels: int, net_mean, net_std) -> None:
        self.in_code = net_mean is not None or net_std is not None
        if not self.in_code:
            return
        if net_mean is None or net_std is None:
            raise InvalidParameterError("give both net_mean and net_std (or neither: the Classifier normalises)")
        mean = _channel_values("net_mean", net_mean, in_channels, positive=False)
        std = _channel_values("net_std", net_std, in_channels, positive=True)
        # persistent=False, as in the original: the file has no such keys.
        self.register_buffer("mean", torch.tensor(mean).view(in_channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(in_channels, 1, 1), persistent=False)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.in_code else x


class DMBlock(nn.Module):
    """DeepMind WRN block; keys ``batchnorm_0, conv_0, batchnorm_1, conv_1[, shortcut]``."""

    def __init__(self, in_planes: int, out_planes: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = act()
        self.conv_0 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = act()
        self.conv_1 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.has_shortcut = in_planes != out_planes
        self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False) if self.has_shortcut else None
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu_0(self.batchnorm_0(x))
        out = self.conv_0(_same_pad(act, self.stride))
        out = self.conv_1(self.relu_1(self.batchnorm_1(out)))
        return (self.shortcut(act) if self.has_shortcut else x) + out


class DMGroup(nn.Module):
    """``n`` DeepMind WRN blocks in ``self.block`` (keys ``layer.0.block.0.conv_0.weight``)."""

    def __init__(self, blocks: int, in_planes: int, out_planes: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.block = nn.Sequential(*[
            DMBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, act)
            for i in range(blocks)
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class DMWideResNet(_InputNormalized):
    """DeepMind's WideResNet (Gowal et al. 2020; Rebuffi et al. 2021), RobustBench's ``DMWideResNet``.

    Args:
        in_channels, num_classes: image channels, logits.
        depth: 6n+4 (28, 70, 94, 106 in the zoo; 10 .. 200); width: 1 .. 32 (10, 16, 20 in the zoo).
        activation: "swish" (default; what the published models use), "silu" or "relu".
        net_mean, net_std: None (default: the ``Classifier`` normalises), or what the net itself
            subtracts/divides in its forward, as DeepMind's ``mean``/``std`` (e.g.
            :data:`DM_CIFAR10_MEAN`, :data:`DM_CIFAR10_STD`); then the ``Classifier``'s
            normalisation should be the identity.

    Layers: ``init_conv``, ``layer.0``..``layer.2``, ``batchnorm``, ``relu``, ``pool``, ``flatten``,
    ``logits``. Input (B, C, H, W) in [0, 1] -> logits (B, num_classes).
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 28, width: int = 10,
                 activation: str = "swish", net_mean=None, net_std=None):
        super().__init__()
        depth = _wrn_depth("dm_wide_resnet", depth)
        width = _int_in("dm_wide_resnet width", width, 1, MAX_WIDTH)
        act = _activation(activation)
        _check_size("dm_wide_resnet", _wrn_params(in_channels, depth, width, num_classes, False))
        self._set_normalisation(in_channels, net_mean, net_std)
        n = (depth - 4) // 6
        channels = [16, 16 * width, 32 * width, 64 * width]
        self.init_conv = nn.Conv2d(in_channels, channels[0], 3, stride=1, padding=1, bias=False)
        self.layer = nn.Sequential(
            DMGroup(n, channels[0], channels[1], 1, act),
            DMGroup(n, channels[1], channels[2], 2, act),
            DMGroup(n, channels[2], channels[3], 2, act),
        )
        self.batchnorm = nn.BatchNorm2d(channels[3])
        self.relu = act()
        self.pool, self.flatten = _global_pool_head()
        self.logits = nn.Linear(channels[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, num_classes)."""
        out = self.layer(self.init_conv(self._normalise(x)))  # (B, 64w, H/4, W/4)
        out = self.relu(self.batchnorm(out))
        return self.logits(self.flatten(self.pool(out)))


class DMPreActBlock(nn.Module):
    """DeepMind pre-activation block; keys ``batchnorm_0, conv_2d_1, batchnorm_1, conv_2d_2[, shortcut]``.

    The shortcut (a 3x3 convolution, when the shape changes) reads the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, act: type[nn.Module]):
        super().__init__()
        self.stride = stride
        self.batchnorm_0 = nn.BatchNorm2d(in_planes)
        self.relu_0 = act()
        self.conv_2d_1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)
        self.batchnorm_1 = nn.BatchNorm2d(out_planes)
        self.relu_1 = act()
        self.conv_2d_2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.has_shortcut = stride != 1 or in_planes != out_planes
        if self.has_shortcut:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu_0(self.batchnorm_0(x))
        shortcut = self.shortcut(_same_pad(x, self.stride)) if self.has_shortcut else x
        out = self.conv_2d_1(_same_pad(out, self.stride))
        out = self.conv_2d_2(self.relu_1(self.batchnorm_1(out)))
        return out + shortcut


DM_PREACT_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class DMPreActResNet(_InputNormalized):
    """DeepMind's pre-activation ResNet (Rebuffi et al. 2021), RobustBench's ``DMPreActResNet``.

    Args:
        in_channels, num_classes: image channels, logits.
        depth: 18 or 34.
        activation, net_mean, net_std: as for :class:`DMWideResNet`.

    Layers: ``conv_2d``, ``layer_0``..``layer_3``, ``batchnorm``, ``relu``, ``pool``, ``flatten``,
    ``logits``.
    """

    def __init__(self, in_channels: int, num_classes: int, depth: int = 18, activation: str = "swish",
                 net_mean=None, net_std=None):
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth not in DM_PREACT_BLOCKS:
            raise InvalidParameterError(f"dm_preact_resnet depth must be 18 or 34, got {depth!r}")
        act = _activation(activation)
        self._set_normalisation(in_channels, net_mean, net_std)
        self.conv_2d = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        planes = (64, 128, 256, 512)
        in_planes = 64
        for index, (out_planes, blocks) in enumerate(zip(planes, DM_PREACT_BLOCKS[depth])):
            stride = 1 if index == 0 else 2
            layers = [DMPreActBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, act)
                      for i in range(blocks)]
            setattr(self, f"layer_{index}", nn.Sequential(*layers))
            in_planes = out_planes
        self.batchnorm = nn.BatchNorm2d(512)
        self.relu = act()
        self.pool, self.flatten = _global_pool_head()
        self.logits = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, num_classes)."""
        out = self.conv_2d(self._normalise(x))
        out = self.layer_3(self.layer_2(self.layer_1(self.layer_0(out))))  # (B, 512, H/8, W/8)
        out = self.relu(self.batchnorm(out))
        return self.logits(self.flatten(self.pool(out)))


# ---------------------------------------------------------------------------------------------
# preact_resnet18 (RobustBench PreActResNet)


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016b); keys ``bn1, conv1, bn2, conv2[, shortcut.0]``.

    ``out_shortcut``: the 1x1 shortcut reads the activated input (RobustBench's ``PreActBlockV2``)
    instead of the raw one.
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, out_shortcut: bool = False):
        super().__init__()
        self.out_shortcut = out_shortcut
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.has_shortcut = stride != 1 or in_planes != planes
        if self.has_shortcut:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(x))
        shortcut = self.shortcut(out if self.out_shortcut else x) if self.has_shortcut else x
        out = self.conv2(self.relu2(self.bn2(self.conv1(out))))
        return out + shortcut


class PreActResNet18(nn.Module):
    """RobustBench's ``PreActResNet(PreActBlock, [2, 2, 2, 2])`` (e.g. Wong et al. 2020, fast AT).

    Args:
        in_channels, num_classes: image channels, logits.
        out_shortcut: shortcuts read the activated input (``PreActBlockV2``, ``out_shortcut=True``).
        bn_before_fc: a final ``bn`` + ReLU before pooling (``bn_before_fc=True``).

    Layers: ``conv1``, ``layer1``..``layer4``, [``bn``, ``relu``], ``pool``, ``flatten``, ``linear``.
    """

    def __init__(self, in_channels: int, num_classes: int, out_shortcut: bool = False, bn_before_fc: bool = False):
        super().__init__()
        out_shortcut, bn_before_fc = _flag("out_shortcut", out_shortcut), _flag("bn_before_fc", bn_before_fc)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        in_planes = 64
        for index, planes in enumerate((64, 128, 256, 512)):
            stride = 1 if index == 0 else 2
            blocks = [PreActBlock(in_planes, planes, stride, out_shortcut), PreActBlock(planes, planes, 1, out_shortcut)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            in_planes = planes
        self.bn_before_fc = bn_before_fc
        if bn_before_fc:
            self.bn = nn.BatchNorm2d(512)
            self.relu = nn.ReLU()
        self.pool, self.flatten = _global_pool_head()
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, num_classes)."""
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))  # (B, 512, H/8, W/8)
        if self.bn_before_fc:
            out = self.relu(self.bn(out))
        return self.linear(self.flatten(self.pool(out)))


# ---------------------------------------------------------------------------------------------
# cifar_resnet18 / cifar_resnet50 (MadryLab robustness.cifar_models, RobustBench ResNet)


class MadryBasicBlock(nn.Module):
    """Basic block with keys ``conv1, bn1, conv2, bn2[, shortcut.0, shortcut.1]``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class MadryBottleneck(nn.Module):
    """Bottleneck block with keys ``conv1..3, bn1..3[, shortcut.0, shortcut.1]`` (expansion 4)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.shortcut = _projection(in_planes, planes * self.expansion, stride)
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """An empty ``nn.Sequential`` (identity, no keys) or 1x1 conv + BN, as the originals build it."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


MADRY_RESNETS = {
    "cifar_resnet18": (MadryBasicBlock, (2, 2, 2, 2)),
    "cifar_resnet50": (MadryBottleneck, (3, 4, 6, 3)),
}


class MadryResNet(nn.Module):
    """CIFAR ResNet-18/50 of ``robustness.cifar_models`` (= RobustBench's ``ResNet``): 3x3 stem, no
    max-pool.

    Args:
        in_channels, num_classes: image channels, logits.
        variant: "cifar_resnet18" or "cifar_resnet50".
        wm: ``robustness``' width multiplier (stage widths ``int(64 wm)``, ...; 1 = the standard
            nets, 5 = its ``ResNet18Wide``); a number from 1/64 to 32.

    Layers: ``conv1``, ``bn1``, ``relu``, ``layer1``..``layer4``, ``pool``, ``flatten``, ``linear``.
    """

    def __init__(self, in_channels: int, num_classes: int, variant: str = "cifar_resnet50", wm: float = 1):
        super().__init__()
        block, counts = MADRY_RESNETS[variant]
        if isinstance(wm, bool) or not isinstance(wm, (int, float)) or not (1 / 64 <= wm <= MAX_WIDTH):
            raise InvalidParameterError(f"{variant} wm (width multiplier) must be a number from 1/64 to {MAX_WIDTH}, got {wm!r}")
        widths = [int(w * wm) for w in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_planes = widths[0]
        for index, (planes, blocks) in enumerate(zip(widths, counts)):
            stride = 1 if index == 0 else 2
            layers = []
            for i in range(blocks):
                layers.append(block(in_planes, planes, stride if i == 0 else 1))
                in_planes = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*layers))
        self.pool, self.flatten = _global_pool_head()
        self.linear = nn.Linear(widths[3] * block.expansion, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, num_classes)."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))  # (B, 512 e wm, H/8, W/8)
        return self.linear(self.flatten(self.pool(out)))


def madry_resnet(variant: str):
    """``builder(in_channels, num_classes, wm=1)`` for ``cifar_resnet18``/``cifar_resnet50``."""

    def build(in_channels: int, num_classes: int, wm: float = 1) -> MadryResNet:
        return MadryResNet(in_channels, num_classes, variant=variant, wm=wm)

    build.__name__ = f"build_{variant}"
    return build
