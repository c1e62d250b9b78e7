"""Dual BatchNorm for AdvProp (Xie et al. 2019): a main and an auxiliary BN per BN layer.

Clean images go through the *main* branch, adversarial images through the *aux* branch; each branch
has its own running statistics and its own affine parameters. At test time the main branch is used.

State-dict keys: a converted ``X.bn1`` (``nn.BatchNorm2d``) becomes ``X.bn1.main.*`` and
``X.bn1.aux.*`` (``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked``).

The branch is chosen with :func:`bn_branch`; the choice lives in a ``contextvars.ContextVar`` keyed
by module, so it affects only the given model and only the current thread (two dashboard sessions
sharing a cached model cannot switch each other's branch). A forward pass outside any ``bn_branch``
block uses "main". Module replicas made by ``nn.DataParallel`` are new objects and use "main";
use DDP (one process per device) for AdvProp training.
"""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Iterator, Mapping

import torch
from torch import nn

from engine.errors import InvalidParameterError

#: The BN branch names; "main" is the default and the one used for evaluation.
BN_BRANCHES = ("main", "aux")

# id(DualBatchNorm2d) -> branch name, for the modules switched by an enclosing bn_branch block.
# Never mutated: bn_branch sets a new mapping and resets it on exit.
_ACTIVE: ContextVar[Mapping[int, str]] = ContextVar("robustscope_bn_branch", default=MappingProxyType({}))


class DualBatchNorm2d(nn.Module):
    """Two independent ``nn.BatchNorm2d`` layers, ``main`` and ``aux``; a forward pass uses one.

    Args: as ``nn.BatchNorm2d`` (num_features, eps, momentum, affine, track_running_stats).
    Input/output: (B, C, H, W). The unused branch's parameters and running statistics are untouched.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True):
        super().__init__()
        options = dict(eps=eps, momentum=momentum, affine=affine, track_running_stats=track_running_stats)
        self.main = nn.BatchNorm2d(num_features, **options)
        self.aux = nn.BatchNorm2d(num_features, **options)
        #: the branch used outside any ``bn_branch`` block (see :func:`use_branch`); not saved.
        self.default_branch = "main"

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> "DualBatchNorm2d":
        """A dual BN whose two branches both start as copies of ``bn`` (parameters and statistics)."""
        dual = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        state = bn.state_dict()
        for branch in (dual.main, dual.aux):
            branch.load_state_dict(state)
        tensors = list(state.values())
        return dual.to(tensors[0].device) if tensors else dual

    @property
    def active_branch(self) -> str:
        """The branch the next forward pass in this context will use."""
        return _ACTIVE.get().get(id(self), self.default_branch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W) through the active branch's BatchNorm."""
        return getattr(self, self.active_branch)(x)


def convert_to_dual_bn(module: nn.Module) -> int:
    """Replace every ``nn.BatchNorm2d`` inside ``module`` (in place) by a ``DualBatchNorm2d``.

    Both branches of each new layer start as copies of the replaced BN. Returns how many layers
    were replaced.
    """
    replaced = 0
    for name, child in list(module.named_children()):
        if isinstance(child, DualBatchNorm2d):
            continue
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, DualBatchNorm2d.from_batchnorm(child))
            replaced += 1
        else:
            replaced += convert_to_dual_bn(child)
    return replaced


def dual_bn_layers(model: nn.Module) -> list[DualBatchNorm2d]:
    """All ``DualBatchNorm2d`` modules of ``model``, in module order."""
    return [m for m in model.modules() if isinstance(m, DualBatchNorm2d)]


def _check_branch(model: nn.Module, branch: str) -> list[DualBatchNorm2d]:
    if branch not in BN_BRANCHES:
        raise InvalidParameterError(f"unknown BN branch {branch!r}; use one of {', '.join(BN_BRANCHES)}")
    layers = dual_bn_layers(model)
    if not layers and branch != "main":
        raise InvalidParameterError(
            f"this model has no dual BatchNorm, so it has no {branch!r} branch; only AdvProp models "
            "(built with dual_bn=True) have an auxiliary branch"
        )
    return layers


def use_branch(model: nn.Module, branch: str = "main") -> nn.Module:
    """Make ``branch`` the BN branch ``model`` uses outside any :func:`bn_branch` block.

    For inspecting an AdvProp model branch by branch: load the checkpoint twice and give each copy
    its branch, e.g. to compute CKA between the two branches' representations. Only which
    statistics and affine parameters the forward pass reads changes; nothing is copied, and the
    other branch's parameters and running statistics are never touched.

    Returns:
        ``model`` (its ``bn_branch_default`` attribute says the branch).

    Raises:
        InvalidParameterError: unknown branch, or "aux" for a model without dual BatchNorm.
    """
    for layer in _check_branch(model, branch):
        layer.default_branch = branch
    model.bn_branch_default = branch
    return model


@contextmanager
def bn_branch(model: nn.Module, branch: str = "main") -> Iterator[nn.Module]:
    """Use BN branch ``branch`` ("main" or "aux") for every forward pass of ``model`` inside the block.

    Example (AdvProp step)::

        with bn_branch(model, "aux"):
            loss_adv = F.cross_entropy(model(x_adv), y)   # aux BN statistics/affine only

    Args:
        model: a model built with ``dual_bn=True``. "main" on a model without dual BN is allowed
            (a no-op), so evaluation code can call it for any model.
        branch: "main" or "aux".

    Yields:
        ``model`` itself.

    Raises:
        InvalidParameterError: unknown branch, or "aux" for a model without dual BatchNorm.
    """
    layers = _check_branch(model, branch)
    mapping = dict(_ACTIVE.get())
    mapping.update({id(layer): branch for layer in layers})
    token = _ACTIVE.set(MappingProxyType(mapping))
    try:
        yield model
    finally:
        _ACTIVE.reset(token)
