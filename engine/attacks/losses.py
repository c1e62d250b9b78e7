"""Attack losses: what an attack *ascends*, per example, on the model's logits.

Every loss has the signature ``loss(logits (B, K), labels (B,), targets (B,) or None) -> (B,)``
and is to be maximised: untargeted, it grows as the label loses; targeted (``targets`` given), it
grows as the target wins. ``LOSSES`` maps the names attacks accept in their ``loss`` option to
these functions; an attack's ``loss`` may also be any callable with that signature.

- ``"ce"``: cross-entropy with the label (untargeted), minus the cross-entropy with the target.
- ``"dlr"``: the Difference of Logits Ratio (Croce & Hein 2020, "Reliable evaluation of adversarial
  robustness with an ensemble of diverse parameter-free attacks"), with z sorted descending
  (z_π1 ≥ z_π2 ≥ ...):

      untargeted  DLR(z, y)    = −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)
      targeted    DLR_T(z, y, t) = −(z_y − z_t) / (z_π1 − (z_π3 + z_π4) / 2)

  The ratio is invariant to shifting and scaling the logits, so a model that saturates its
  softmax (which flattens the cross-entropy's gradient) cannot hide behind the scale. The
  untargeted form needs at least 3 classes, the targeted one at least 4.
- ``"margin"``: the Carlini-Wagner margin, max_{i≠y} z_i − z_y (untargeted) or
  z_t − max_{i≠t} z_i (targeted); positive exactly when the attack has succeeded.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from engine.errors import InvalidParameterError

Loss = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]

#: added to the DLR denominators (the reference's constant), so equal logits do not divide by 0
DLR_EPS = 1e-12


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) CE with the label (untargeted) or −CE with the target (targeted)."""
    if targets is not None:
        return -F.cross_entropy(logits, targets, reduction="none")
    return F.cross_entropy(logits, labels, reduction="none")


def _others_max(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """(B,) the largest logit other than ``cls``'s."""
    return logits.scatter(1, cls[:, None], float("-inf")).amax(dim=1)


def _own(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    return logits.gather(1, cls[:, None]).squeeze(1)


def dlr(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) the (targeted) Difference of Logits Ratio; see the module docstring."""
    k = logits.shape[1]
    need = 4 if targets is not None else 3
    if k < need:
        kind = "targeted DLR" if targets is not None else "DLR"
        raise InvalidParameterError(f"the {kind} loss needs at least {need} classes; the model has {k}")
    top = logits.topk(need, dim=1).values  # (B, need), descending
    if targets is None:
        return -(_own(logits, labels) - _others_max(logits, labels)) / (top[:, 0] - top[:, 2] + DLR_EPS)
    return -(_own(logits, labels) - _own(logits, targets)) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + DLR_EPS)


def margin(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
    """(B,) the CW margin: > 0 exactly when the attack succeeded (see the module docstring)."""
    if targets is not None:
        return _own(logits, targets) - _others_max(logits, targets)
    return _others_max(logits, labels) - _own(logits, labels)


#: loss name -> function (the choices of every attack's ``loss`` option)
LOSSES: dict[str, Loss] = {"ce": cross_entropy, "dlr": dlr, "margin": margin}


def get_loss(loss: str | Loss) -> Loss:
    """The loss function ``loss`` names (a key of :data:`LOSSES`), or ``loss`` itself if callable."""
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]
    raise InvalidParameterError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)} or pass a callable "
                                "loss(logits, labels, targets) -> (B,) to maximise")


def loss_name(loss: str | Loss) -> str:
    """How a loss appears in an attack's config: its name, or ``custom:<function name>``."""
    if isinstance(loss, str):
        return loss
    return f"custom:{getattr(loss, '__name__', type(loss).__name__)}"
