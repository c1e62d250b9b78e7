"""Listing a model's hookable layers with readable names and output shapes."""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn

from engine.errors import InvalidParameterError
from engine.models.dual_bn import DualBatchNorm2d
from engine.models.hooks import record_activations


class LayerInfo(NamedTuple):
    """One hookable layer.

    Attributes:
        name: dotted name, valid for ``model.get_submodule(name)`` and ``record_activations``.
        kind: the module's class name ("Conv2d", "ReLU", "Sequential", "ResidualBlock" ...).
        output_shape: the layer's output shape for one image, without the batch dimension
            (e.g. (64, 16, 16) or (128,)); ``None`` if the output is not a single tensor.
    """

    name: str
    kind: str
    output_shape: tuple[int, ...] | None


def _input_shape(model: nn.Module, input_shape: Sequence[int] | None) -> tuple[int, ...]:
    shape = input_shape if input_shape is not None else getattr(model, "input_shape", None)
    if shape is None:
        raise InvalidParameterError("list_layers needs input_shape=(C, H, W) for a model without .input_shape")
    return tuple(int(s) for s in shape)


def _model_device(model: nn.Module) -> torch.device:
    tensor = next(model.parameters(), None)
    if tensor is None:
        tensor = next(model.buffers(), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _is_inside_dual_bn(name: str, dual_names: set[str]) -> bool:
    return any(name.startswith(prefix + ".") for prefix in dual_names)


def list_layers(model: nn.Module, input_shape: Sequence[int] | None = None) -> list[LayerInfo]:
    """Every submodule that runs in a forward pass, in module order, with its output shape.

    Output shapes come from one forward pass of a zero image (batch of 2) in eval mode under
    ``torch.no_grad()``; the model's train/eval mode is restored afterwards. The root module and
    the two branches inside a ``DualBatchNorm2d`` (the dual layer itself is listed) are left out,
    as are modules that do not run in the forward pass.

    Args:
        model: any ``nn.Module``; a ``Classifier`` knows its input shape.
        input_shape: (C, H, W); needed only for models without an ``input_shape`` attribute.

    Returns:
        ``list[LayerInfo]``; names are usable with ``model.get_submodule`` and
        ``engine.models.hooks.record_activations``.
    """
    shape = _input_shape(model, input_shape)
    dual_names = {n for n, m in model.named_modules() if isinstance(m, DualBatchNorm2d)}
    modules = [(n, m) for n, m in model.named_modules() if n and not _is_inside_dual_bn(n, dual_names)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), record_activations(model, [n for n, _ in modules]) as rec:
            model(torch.zeros((2, *shape), device=_model_device(model)))
    finally:
        model.train(was_training)
    infos = []
    for name, module in modules:
        if name not in rec.outputs:
            continue
        out = rec.outputs[name]
        out_shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
        infos.append(LayerInfo(name, type(module).__name__, out_shape))
    return infos


def default_layers(model: nn.Module) -> list[str]:
    """The main blocks of ``model`` (what CKA and the feature pages use by default).

    For a ``Classifier`` of a registered architecture: its spec's blocks, e.g. ``net.block1`` ..
    ``net.hidden``, ``net.fc`` for small_cnn, ``net.layer1`` .. ``net.layer4``, ``net.fc`` for the
    torchvision ResNets, ``net.block1`` .. ``net.block3``, ``net.relu``, ``net.fc`` for
    wide_resnet; for ``torchvision:NAME``/``timm:NAME`` the net's top-level blocks with its trunk
    (ViT ``blocks``, VGG ``features``, ...) thinned to four evenly spaced members. For any other
    model: its top-level children that have parameters (the children of ``net`` for a wrapper
    with a ``net`` attribute).
    """
    from engine.models.architectures import arch_default_layers

    names = arch_default_layers(model)
    if names is not None:
        return names
    root, prefix = (model.net, "net.") if isinstance(getattr(model, "net", None), nn.Module) else (model, "")
    return [prefix + name for name, child in root.named_children() if any(True for _ in child.parameters())]


def block_layers(model: nn.Module) -> list[str]:
    """A finer layer set than :func:`default_layers`: each default layer that is a stage of
    repeated blocks (an ``nn.Sequential`` whose children are all of one block class, e.g. a ResNet's
    ``layer1`` of ``BasicBlock``s) is replaced by its blocks; others are kept. Within-model CKA
    maps over these layers show block structure (Nguyen et al. 2021, Cianfarani et al. 2022)."""
    modules = dict(model.named_modules())
    names: list[str] = []
    for name in default_layers(model):
        module = modules.get(name)
        children = list(module.named_children()) if isinstance(module, nn.Sequential) else []
        same_kind = len(children) > 1 and len({type(child) for _, child in children}) == 1
        repeated = same_kind and all(any(True for _ in child.children()) for _, child in children)
        names += [f"{name}.{child}" for child, _ in children] if repeated else [name]
    return names
