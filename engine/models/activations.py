"""Which non-linearities a model runs: can guided backprop be applied to it faithfully?

captum's ``GuidedBackprop`` rewrites the backward pass of ``nn.ReLU`` *modules* only. Its hooks
keep one gradient per module, so a ReLU module called twice in a forward pass (torchvision's
blocks share one) gets the other call's gradient; functional ``F.relu`` calls are not seen at all;
and other non-linearities (GELU, SiLU/Swish, sigmoid gates, softmax attention, ...) keep their plain
gradient. On such nets the "guided" map is a silently wrong mixture. :func:`guided_backprop_problem`
runs one forward pass and names what would go wrong, so the attribution code can refuse.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

#: Functions (by ``__name__``) whose gradient guided backprop leaves unguided.
OTHER_NONLINEARITIES = frozenset({
    "gelu", "silu", "sigmoid", "hardswish", "hardsigmoid", "mish", "elu", "selu", "celu",
    "leaky_relu", "relu6", "hardtanh", "softplus", "tanh", "softmax", "log_softmax", "prelu",
    "rrelu", "glu", "logsigmoid", "softsign", "scaled_dot_product_attention",
})
_RELU_NAMES = ("relu", "relu_")


@dataclass(frozen=True)
class ActivationReport:
    """What one forward pass ran.

    Attributes:
        relu_module_calls: ``{module name: calls}`` for every ``nn.ReLU`` module that ran.
        functional_relu_calls: ReLU calls made outside ``nn.ReLU`` modules (``F.relu`` ...).
        other_calls: ``{function name: calls}`` of other non-linearities (gelu, silu, ...).
    """

    relu_module_calls: dict[str, int] = field(default_factory=dict)
    functional_relu_calls: int = 0
    other_calls: dict[str, int] = field(default_factory=dict)


class _Counter(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls: Counter[str] = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in _RELU_NAMES or name in OTHER_NONLINEARITIES:
            self.calls["relu" if name in _RELU_NAMES else name] += 1
        return func(*args, **(kwargs or {}))


@torch.no_grad()
def activation_report(model: nn.Module, images: torch.Tensor) -> ActivationReport:
    """Run ``model(images)`` once in eval mode and count its non-linearities (hooks removed after;
    the train/eval mode is restored)."""
    calls: Counter[str] = Counter()
    names = {id(m): n for n, m in model.named_modules() if isinstance(m, nn.ReLU)}

    def hook(module, _inputs, _output):
        calls[names[id(module)]] += 1

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    was_training = model.training
    model.eval()
    try:
        with _Counter() as counter:
            model(images)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    module_calls = sum(calls.values())
    other = {k: v for k, v in counter.calls.items() if k != "relu"}
    return ActivationReport(dict(calls), max(0, counter.calls["relu"] - module_calls), other)


def guided_backprop_problem(model: nn.Module, images: torch.Tensor) -> str | None:
    """Why guided backprop would be wrong on ``model`` (None when it is sound).

    Sound means: the model's only non-linearities are ``nn.ReLU`` modules (max-pooling and other
    piecewise-linear maps are fine), at least one runs, and each runs once per forward pass.

    Args:
        model: any module taking ``images``.
        images: (B, C, H, W) a small batch (one image is enough).

    Returns:
        A sentence naming the problem, or None.
    """
    report = activation_report(model, images)
    if report.functional_relu_calls:
        return (f"the model makes {report.functional_relu_calls} functional ReLU call(s) (F.relu / torch.relu) "
                "that guided backprop cannot hook")
    if report.other_calls:
        found = ", ".join(f"{k} x{v}" for k, v in sorted(report.other_calls.items()))
        return (f"the model runs non-linearities other than ReLU ({found}); guided backprop is defined for ReLU "
                "nets only and would leave these unguided")
    reused = sorted(n for n, c in report.relu_module_calls.items() if c > 1)
    if reused:
        return (f"ReLU module(s) {', '.join(reused[:4])} run more than once per forward pass; captum's guided "
                "backprop keeps one gradient per module and would mix them up")
    if not report.relu_module_calls:
        return "the model runs no nn.ReLU module; guided backprop would equal the plain gradient"
    return None
