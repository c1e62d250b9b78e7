"""Any torchvision or timm classification model by name: ``torchvision:NAME`` and ``timm:NAME``.

The nets are the libraries' own classes, built offline with no weights (nothing is downloaded), so
their state-dict keys are exactly those of the files the libraries publish and of
``model.state_dict()`` in user code; the logits equal the library's on the same normalised input.
RobustScope's conventions are applied without changing any logit:

- every module with an ``inplace`` flag (``nn.ReLU(inplace=True)``, ``nn.SiLU``, timm's
  activations, ...) is switched to out-of-place, so a recorded activation is never overwritten;
- torchvision's ResNet family (``resnet*``, ``wide_resnet*``, ``resnext*``) gets one ReLU module
  per use (``engine.models.base.split_relus``; keys unchanged), so guided backprop
  works on it. Other nets keep their activations; guided backprop refuses the ones it cannot
  handle (``engine.models.activations.guided_backprop_problem``).

``torchvision:NAME`` takes one option, ``weights``: the name of a member of the model's weights enum
("DEFAULT", "IMAGENET1K_V2", ...; ``None`` for a net trained from scratch). Nothing is downloaded:
it selects how torchvision builds the net for those weights (Inception/GoogLeNet's
``transform_input`` and auxiliary heads, ViT's and MaxViT's image size) and the normalisation and
input size :func:`default_normalization` reports. Inception v3 and GoogLeNet also take
``aux_logits`` (default true: torchvision's weights files carry the auxiliary heads' weights; they
are kept as a :class:`DormantHead` that never runs, false drops them as torchvision does for
``aux_logits=False``).

``timm:NAME`` accepts any name ``timm.is_model`` knows, with an optional pretrained tag
(``timm:vit_base_patch16_224.augreg_in21k``); the tag chooses the pretrained config (mean, std,
input size). Models whose config says ``fixed_input_size`` accept only that size.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

from torch import nn

from engine.errors import InvalidParameterError
from engine.models.base import ArchSpec, split_relus

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
#: torchvision builders that change the architecture when given weights (see module docstring).
_TV_AUX = {"inception_v3": "AuxLogits", "googlenet": "aux1"}
#: Smallest image side for timm models whose config names none (``min_input_size``).
_TIMM_MIN_SIDE = 32
#: How many evenly spaced blocks of a long trunk :func:`pick_default_layers` lists, and at most
#: how many layers in all.
_TRUNK_PICKS = 4
_MAX_DEFAULT_LAYERS = 7
#: Auxiliary classifier heads (torchvision Inception/GoogLeNet) that run only in training.
_AUX_HEADS = ("AuxLogits", "aux1", "aux2")


class Normalization(NamedTuple):
    """What a family's published weights expect: per-channel ``mean``/``std`` of [0, 1] images
    and the (C, H, W) ``input_shape`` they were evaluated at."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_shape: tuple[int, int, int]


def is_external(arch) -> bool:
    """Whether ``arch`` names a torchvision/timm model (``torchvision:NAME`` / ``timm:NAME``)."""
    return isinstance(arch, str) and arch.startswith((TORCHVISION_PREFIX, TIMM_PREFIX))


def no_inplace(net: nn.Module) -> nn.Module:
    """Switch every module's boolean ``inplace`` flag off (same function, nothing overwritten)."""
    for module in net.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    return net


# ---------------------------------------------------------------------------------------------
# torchvision


@functools.lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """Every torchvision classification model name (``torchvision.models.list_models``)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def _tv_name(arch: str) -> str:
    name = arch[len(TORCHVISION_PREFIX):]
    if name not in torchvision_names():
        raise InvalidParameterError(
            f"unknown torchvision classification model {name!r} in {arch!r}; use one of "
            f"torchvision.models.list_models(module=torchvision.models), e.g. resnet50, vgg16, "
            f"wide_resnet50_2, efficientnet_b0, convnext_tiny, vit_b_16"
        )
    return name


def _tv_weights(name: str, weights):
    """The weights enum member ``weights`` names (None for a from-scratch net)."""
    import torchvision

    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(name)
    members = [m.name for m in enum]
    if weights == "DEFAULT":
        return enum.DEFAULT
    if not isinstance(weights, str) or weights not in members:
        raise InvalidParameterError(
            f"torchvision:{name} weights must be null, 'DEFAULT' or one of {', '.join(members)}; got {weights!r}"
        )
    return enum[weights]


def _tv_min_size(name: str, weights) -> tuple[int, int]:
    import torchvision

    meta = (weights or torchvision.models.get_model_weights(name).DEFAULT).meta
    return tuple(int(s) for s in meta.get("min_size", (1, 1)))


def _tv_fixed_size(name: str, weights) -> int | None:
    """The only image side a ViT/MaxViT built for ``weights`` accepts (None: any size works)."""
    if name.startswith(("vit_", "maxvit_")):
        return _tv_min_size(name, weights)[0] if weights is not None else 224
    return None


def _tv_overrides(name: str, weights) -> dict[str, Any]:
    """The constructor arguments torchvision's builder sets when it is given ``weights``."""
    if name in _TV_AUX:
        return {"transform_input": weights is not None, "aux_logits": True, "init_weights": weights is None}
    if weights is None:
        return {}
    size = _tv_min_size(name, weights)[0]
    if name.startswith("vit_"):
        return {"image_size": size}
    if name.startswith("maxvit_"):
        return {"input_size": (size, size)}
    return {}


class DormantHead(nn.Module):
    """An auxiliary classifier head kept for its weights only (its state-dict keys are unchanged):
    it never runs and returns None, so torchvision's Inception/GoogLeNet skip it in training mode
    too (it would need >= 299-pixel inputs there, and its logits are dropped anyway)."""

    def __init__(self, head: nn.Module):
        super().__init__()
        for child_name, child in head.named_children():
            self.add_module(child_name, child)

    def forward(self, x):
        return None


def _torchvision_builder(name: str):
    def build(in_channels: int, num_classes: int, weights="DEFAULT", aux_logits: bool = True) -> nn.Module:
        import torchvision

        resolved = _tv_weights(name, weights)
        if in_channels != 3:
            raise InvalidParameterError(
                f"torchvision:{name} takes 3-channel images, got {in_channels}; use a timm model "
                "(timm adapts the first layer) or an engine architecture"
            )
        if not isinstance(aux_logits, bool):
            raise InvalidParameterError(f"aux_logits must be true or false, got {aux_logits!r}")
        net = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **_tv_overrides(name, resolved))
        if name in _TV_AUX:
            net.aux_logits = False  # the logits alone, also in training mode (eval logits unchanged)
            for attr in _AUX_HEADS:
                if getattr(net, attr, None) is not None:
                    setattr(net, attr, DormantHead(getattr(net, attr)) if aux_logits else None)
        if isinstance(net, torchvision.models.ResNet):
            split_relus(net)
        return no_inplace(net)

    build.__name__ = f"build_torchvision_{name}"
    return build


def _torchvision_check(name: str):
    def check(shape: tuple[int, int, int], kwargs: dict) -> None:
        weights = _tv_weights(name, kwargs.get("weights"))
        fixed = _tv_fixed_size(name, weights)
        if fixed is not None and shape[1:] != (fixed, fixed):
            raise InvalidParameterError(
                f"torchvision:{name} (weights {kwargs.get('weights')}) takes {fixed}x{fixed} images only, "
                f"got {shape[1]}x{shape[2]}"
            )
        low = _tv_min_size(name, weights)
        if shape[1] < low[0] or shape[2] < low[1]:
            raise InvalidParameterError(
                f"torchvision:{name} needs images of at least {low[0]}x{low[1]} pixels, got {shape[1]}x{shape[2]}"
            )

    return check


def _torchvision_canonical(name: str):
    def canonical(kwargs: dict) -> dict:
        weights = _tv_weights(name, kwargs.get("weights"))
        return dict(kwargs, weights=weights.name if weights is not None else None)

    return canonical


def _torchvision_normalization(name: str, kwargs: dict) -> Normalization | None:
    weights = _tv_weights(name, kwargs.get("weights", "DEFAULT"))
    if weights is None:
        return None
    transform = weights.transforms()
    crop = int(transform.crop_size[0])
    return Normalization(tuple(map(float, transform.mean)), tuple(map(float, transform.std)), (3, crop, crop))


# ---------------------------------------------------------------------------------------------
# timm


def _timm_name(arch: str) -> str:
    import timm

    name = arch[len(TIMM_PREFIX):]
    if not name or any(c in name for c in ":/\\") or not timm.is_model(name):
        raise InvalidParameterError(
            f"unknown timm model {name!r} in {arch!r}; use a name from timm.list_models(), optionally with a "
            "pretrained tag (e.g. timm:vit_tiny_patch16_224, timm:convnext_tiny.fb_in1k)"
        )
    _timm_cfg(name)
    return name


def _timm_cfg(name: str):
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError as exc:  # an unknown pretrained tag
        raise InvalidParameterError(f"timm model {name!r}: {exc}") from None
    if cfg is None:
        raise InvalidParameterError(f"timm model {name!r} has no pretrained config")
    return cfg


def _timm_builder(name: str):
    def build(in_channels: int, num_classes: int) -> nn.Module:
        import timm

        net = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
        return no_inplace(net)

    build.__name__ = f"build_timm_{name}"
    return build


def _timm_check(name: str):
    def check(shape: tuple[int, int, int], kwargs: dict) -> None:
        cfg = _timm_cfg(name)
        size = tuple(int(s) for s in cfg.input_size[1:])
        if cfg.fixed_input_size and shape[1:] != size:
            raise InvalidParameterError(
                f"timm:{name} takes {size[0]}x{size[1]} images only (its pretrained config has "
                f"fixed_input_size), got {shape[1]}x{shape[2]}"
            )
        low = tuple(int(s) for s in cfg.min_input_size[1:]) if cfg.min_input_size else (_TIMM_MIN_SIDE,) * 2
        if shape[1] < low[0] or shape[2] < low[1]:
            raise InvalidParameterError(
                f"timm:{name} needs images of at least {low[0]}x{low[1]} pixels, got {shape[1]}x{shape[2]}"
            )

    return check


def _timm_normalization(name: str) -> Normalization:
    cfg = _timm_cfg(name)
    channels, height, width = (int(s) for s in cfg.input_size)
    return Normalization(tuple(map(float, cfg.mean)), tuple(map(float, cfg.std)), (channels, height, width))


# ---------------------------------------------------------------------------------------------
# specs and layers


def _evenly(items: list, count: int) -> list:
    """``count`` evenly spaced members of ``items``, ending with the last (all when fewer)."""
    if len(items) <= count:
        return list(items)
    return [items[round((i + 1) * len(items) / count) - 1] for i in range(count)]


def pick_default_layers(net: nn.Module) -> list[str]:
    """Main blocks of a library net, in module order (at most :data:`_MAX_DEFAULT_LAYERS`).

    Its top-level children with parameters (when three or more are composite blocks, the single
    layers of the stem are left out, the last child, the head, is kept); the trunk (the container
    with most children, when it has at least 4 and at least as many as the net has such children:
    ViT ``blocks``, VGG ``features``, ConvNeXt ``stages``) is replaced by :data:`_TRUNK_PICKS`
    evenly spaced members ending with its last; ``nn.ModuleList`` children (which never run as a
    whole) are always expanded; auxiliary heads that run only in training are left out.
    """
    children = [(n, c) for n, c in net.named_children()
                if n not in _AUX_HEADS and any(True for _ in c.parameters())]
    if sum(1 for _, c in children if any(True for _ in c.children())) >= 3:
        children = [(n, c) for i, (n, c) in enumerate(children)
                    if any(True for _ in c.children()) or i == len(children) - 1]
    containers = [(len(c), n) for n, c in children if isinstance(c, (nn.Sequential, nn.ModuleList))]
    trunk_len, trunk = max(containers) if containers else (0, None)
    names: list[str] = []
    for name, child in children:
        if isinstance(child, nn.ModuleList) or (name == trunk and trunk_len >= max(4, len(children))):
            members = [n for n, c in child.named_children() if any(True for _ in c.parameters())]
            names += [f"{name}.{member}" for member in _evenly(members, _TRUNK_PICKS)]
        else:
            names.append(name)
    return _evenly(names, _MAX_DEFAULT_LAYERS)


@functools.lru_cache(maxsize=256)
def external_spec(arch: str):
    """The :class:`~engine.models.base.ArchSpec` of ``torchvision:NAME``/``timm:NAME``.

    Raises:
        InvalidParameterError: an unknown model name (or timm pretrained tag).
    """
    if arch.startswith(TORCHVISION_PREFIX):
        name = _tv_name(arch)
        kwargs = {"weights": "DEFAULT"}
        if name in _TV_AUX:
            kwargs["aux_logits"] = True
        return ArchSpec(
            builder=_torchvision_builder(name),
            description=f"torchvision.models.{name} (torchvision's own class and state-dict keys)",
            default_kwargs=kwargs, has_bn=True, min_input=1, layers_for=pick_default_layers,
            check_input=_torchvision_check(name), canonical_kwargs=_torchvision_canonical(name),
        )
    name = _timm_name(arch)
    return ArchSpec(
        builder=_timm_builder(name),
        description=f"timm model {name} (timm's own class and state-dict keys)",
        default_kwargs={}, has_bn=True, min_input=1, layers_for=pick_default_layers,
        check_input=_timm_check(name),
    )


def external_normalization(arch: str, arch_kwargs: dict) -> Normalization | None:
    """:func:`engine.models.default_normalization` for torchvision/timm names."""
    if arch.startswith(TORCHVISION_PREFIX):
        return _torchvision_normalization(_tv_name(arch), arch_kwargs)
    return _timm_normalization(_timm_name(arch))

