"""Recording intermediate activations with forward hooks that are always removed.

Everyone who needs a layer's output (CKA, feature visualisation, unit statistics) uses
:func:`record_activations`, so hook bookkeeping lives in exactly one place.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from engine.errors import InvalidParameterError

#: How many valid layer names an "unknown layer" error lists.
_NAMES_IN_ERROR = 8


class ActivationRecorder:
    """Holds the outputs of the recorded layers of the latest forward pass.

    Attributes:
        layers: the recorded layer names (dotted, as in ``model.get_submodule``), in order.
        outputs: ``{layer name: output tensor}`` of the latest forward pass; a layer that has not
            run yet is absent. Detached from the graph unless ``detach=False`` was asked for.
    """

    def __init__(self, layers: Sequence[str], detach: bool = True):
        self.layers = list(layers)
        self.detach = detach
        self.outputs: dict[str, torch.Tensor] = {}

    def clear(self) -> None:
        """Forget the recorded outputs (the hooks stay in place)."""
        self.outputs.clear()

    def _hook_for(self, name: str):
        def hook(_module: nn.Module, _inputs, output) -> None:
            self.outputs[name] = _maybe_detach(output, self.detach)

        return hook


def _maybe_detach(output, detach: bool):
    """Detach a tensor (or each tensor of a tuple/list output) when ``detach`` is set."""
    if not detach:
        return output
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, (tuple, list)):
        return type(output)(_maybe_detach(o, detach) for o in output)
    return output


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Return ``model.get_submodule(name)``, or raise a readable error listing valid names.

    Raises:
        InvalidParameterError: ``name`` is not a submodule of ``model``; the message lists a few
            valid names.
    """
    if not isinstance(name, str):
        raise InvalidParameterError(f"layer names must be strings, got {name!r}")
    try:
        return model.get_submodule(name)
    except AttributeError:
        valid = [n for n, _ in model.named_modules() if n]
        shown = ", ".join(valid[:_NAMES_IN_ERROR])
        more = f" (and {len(valid) - _NAMES_IN_ERROR} more)" if len(valid) > _NAMES_IN_ERROR else ""
        raise InvalidParameterError(
            f"unknown layer {name!r}; valid layer names include: {shown}{more}"
        ) from None


@contextmanager
def record_activations(
    model: nn.Module, layers: str | Sequence[str], detach: bool = True
) -> Iterator[ActivationRecorder]:
    """Record the outputs of the named layers of ``model`` while inside the ``with`` block.

    Example::

        with record_activations(model, ["net.layer1", "net.fc"]) as rec:
            model(images)                     # images: (B, C, H, W) in [0, 1]
        feats = rec.outputs["net.layer1"]     # (B, C', H', W')

    Args:
        model: any ``nn.Module`` (typically an ``engine.models.Classifier``).
        layers: one dotted layer name or a sequence of them, each valid for
            ``model.get_submodule`` (see ``engine.models.list_layers``). Duplicates are ignored.
        detach: store detached outputs (default); ``False`` keeps the autograd graph, e.g. for
            feature visualisation objectives.

    Returns:
        An :class:`ActivationRecorder` whose ``outputs`` dict holds each layer's output of the
        latest forward pass. All hooks are removed on exit, also when the block raises.

    Raises:
        InvalidParameterError: no layers given, or a name that is not a submodule of ``model``
            (checked before any hook is registered).
    """
    names = [layers] if isinstance(layers, str) else list(dict.fromkeys(layers))
    if not names:
        raise InvalidParameterError("record_activations needs at least one layer name")
    modules = [resolve_layer(model, name) for name in names]
    recorder = ActivationRecorder(names, detach=detach)
    handles = []
    try:
        for name, module in zip(names, modules):
            handles.append(module.register_forward_hook(recorder._hook_for(name)))
        yield recorder
    finally:
        for handle in handles:
            handle.remove()
