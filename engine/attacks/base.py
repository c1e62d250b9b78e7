"""What every attack shares: the result type, input checks, model-state safety, the forward pass.

An attack is a small dataclass holding its parameters with one verb, ``__call__(model, x, y)``,
returning an :class:`AttackResult`. Subclasses implement ``_craft`` only; this module does the
checking, the device moves, the eval-mode/``requires_grad`` save-and-restore (``engine.models.state``),
optional bf16 autocast / channels-last on CUDA, cancellation and the final bookkeeping.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.models.state import frozen_eval, model_device
from engine.errors import InvalidParameterError, RobustScopeError
from engine.attacks.losses import Loss, get_loss, loss_name
from engine.attacks.steps import STEPS
from engine.runtime import Progress, ShouldStop



class AttackCancelled(RobustScopeError):
    """The caller's ``should_stop()`` returned True while an attack was running."""


@dataclass
class AttackResult:
    """The outcome of one attack on a batch (every tensor on the device of the input images).

    Attributes:
        adv: adversarial images (B, C, H, W) in [0, 1].
        perturbation: ``adv - x`` (B, C, H, W).
        success: (B,) bool: targeted: predicted class == target; untargeted: prediction != label.
        linf_norm, l2_norm: (B,) per-example ℓ∞ and ℓ₂ norms of the perturbation.
        logits_clean, logits_adv: (B, K) model logits on the clean and adversarial images.
        labels: (B,) true labels; targets: (B,) target labels for targeted attacks, else None.
        config: the attack's name and parameters (JSON-friendly).
        queries: (B,) model queries (forward passes) each example used, for attacks that count
            them (score-based black-box attacks such as Square), else None.
        found_by: (B,) for an ensemble of attacks (AutoAttack): the position in
            ``config["attacks"]`` of the attack whose example is kept, -1 where none succeeded
            (and for images misclassified before any attack); else None.
    """

    adv: torch.Tensor
    perturbation: torch.Tensor
    success: torch.Tensor
    linf_norm: torch.Tensor
    l2_norm: torch.Tensor
    logits_clean: torch.Tensor
    logits_adv: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor | None
    config: dict
    queries: torch.Tensor | None = None
    found_by: torch.Tensor | None = None

    @property
    def preds_clean(self) -> torch.Tensor:
        """(B,) predicted classes on the clean images."""
        return self.logits_clean.argmax(dim=1)

    @property
    def preds_adv(self) -> torch.Tensor:
        """(B,) predicted classes on the adversarial images."""
        return self.logits_adv.argmax(dim=1)

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def cat(cls, results: list["AttackResult"]) -> "AttackResult":
        """Concatenate per-batch results (same config) into one."""
        if not results:
            raise InvalidParameterError("no attack results to concatenate")
        fields = {}
        for f in dataclasses.fields(cls):
            values = [getattr(r, f.name) for r in results]
            if f.name == "config":
                fields[f.name] = values[0]
            elif any(v is None for v in values):
                fields[f.name] = None
            else:
                fields[f.name] = torch.cat(values)
        return cls(**fields)


@contextmanager
def channels_last(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Convert 4-D parameters/buffers to channels-last for the block and back to their layout after."""
    if not enabled:
        yield
        return
    def four_d(m):
        return {n: t for n, t in list(m.named_parameters()) + list(m.named_buffers()) if t.dim() == 4}

    plain = [n for n, t in four_d(model).items() if not t.is_contiguous(memory_format=torch.channels_last)
             or t.is_contiguous()]
    model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        now = four_d(model)
        for n in plain:
            now[n].data = now[n].data.contiguous()


class Forward:
    """The model's forward pass as the attacks use it: float32 logits, optional bf16 autocast and
    channels-last inputs (CUDA only), plus the cancel/progress hooks of one call."""

    def __init__(self, model, device, amp=False, channels_last=False, progress=None, should_stop=None):
        self.model = model
        self.device = device
        self.amp = bool(amp) and device.type == "cuda"
        self.channels_last = bool(channels_last) and device.type == "cuda"
        self.progress = progress
        self.should_stop = should_stop

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) in [0, 1] -> (B, K) float32 logits."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            return self.model(x).float()

    def input_grad(self, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor]):
        """``(∇ₓ loss_fn(logits(x)).sum(), logits)`` for a detached ``x``."""
        x = x.detach().requires_grad_(True)
        logits = self(x)
        (grad,) = torch.autograd.grad(loss_fn(logits).sum(), x)
        return grad, logits.detach()

    def tick(self, done: int, total: int) -> None:
        """Report progress and raise :class:`AttackCancelled` if asked to stop."""
        if self.should_stop is not None and self.should_stop():
            raise AttackCancelled("attack stopped by the user")
        if self.progress is not None:
            self.progress(done, total)


def margin(logits: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
    """(B,) ``logit[cls] - max_{j != cls} logit[j]`` (positive iff ``cls`` is predicted)."""
    own = logits.gather(1, cls[:, None]).squeeze(1)
    others = logits.scatter(1, cls[:, None], float("-inf")).amax(dim=1)
    return own - others


def is_success(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor:
    """(B,) bool: prediction == target (targeted), or prediction != label (untargeted)."""
    preds = logits.argmax(dim=1)
    return preds == targets if targets is not None else preds != labels


def attack_loss(logits, labels, targets, loss: str | Loss = "ce"):
    """(B,) loss to *ascend*: by default CE with the label (untargeted) or minus CE with the
    target. ``loss``: a name of :data:`engine.attacks.losses.LOSSES` ("ce", "dlr", "margin") or
    a callable ``loss(logits, labels, targets) -> (B,)``."""
    if isinstance(loss, str) and loss == "ce":
        if targets is not None:
            return -F.cross_entropy(logits, targets, reduction="none")
        return F.cross_entropy(logits, labels, reduction="none")
    return get_loss(loss)(logits, labels, targets)


def check_loss(loss) -> str | Loss:
    """``loss`` if it names a loss of :data:`engine.attacks.losses.LOSSES` or is callable, else
    InvalidParameterError listing the names."""
    get_loss(loss)
    return loss


def runner_up(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(B,) the most likely class other than the label: the default target of targeted attacks."""
    return logits.scatter(1, labels[:, None], float("-inf")).argmax(dim=1)


# ---------------------------------------------------------------- parameter checks
#: Upper bounds that keep one attack call's time finite (PGD at 10,000 steps is already ~100x
#: the usual 40-100; more restarts than 100 never change a robust-accuracy figure measurably).
MAX_STEPS = 10_000
MAX_RESTARTS = 100
#: binary-search rounds of the penalty attacks (each halves/doubles the constant: 100 is 2^±100)
MAX_SEARCH_STEPS = 100


def max_eps(norm: str, input_shape=None) -> float | None:
    """The largest meaningful ε of ``norm`` for images in [0, 1]: 1 for ℓ∞ (the whole pixel
    range), the diameter ``sqrt(C·H·W)`` of the image cube for ℓ₂ (None while the shape is unknown)."""
    if norm == "linf":
        return 1.0
    if norm == "l2" and input_shape is not None:
        return math.sqrt(math.prod(int(s) for s in input_shape))
    return None


def check_eps(eps, norm: str | None = None, input_shape=None) -> float:
    """``eps`` as a float, checked: finite, >= 0 and (when ``norm`` is given) at most
    :func:`max_eps` of that norm (ℓ₂ only once ``input_shape`` (C, H, W) is known)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise InvalidParameterError(f"epsilon must be a finite number >= 0, got {eps!r}")
    high = max_eps(norm, input_shape) if norm is not None else None
    if high is not None and eps > high + 1e-9:
        if norm == "linf":
            why = "images are in [0, 1], so no pixel can move further"
        else:
            why = f"the diameter sqrt(C·H·W) of [0, 1] images of shape {tuple(int(s) for s in input_shape)}"
        raise InvalidParameterError(f"{'ℓ∞' if norm == 'linf' else 'ℓ₂'} epsilon must be in [0, {high:.4g}] "
                                    f"({why}), got {eps!r}")
    return float(eps)


def check_positive_int(name: str, value, high: int | None = None) -> int:
    """``value`` if it is an integer >= 1 (and <= ``high`` when given), else InvalidParameterError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (high is not None and value > high):
        bound = f"in [1, {high:,}]" if high is not None else ">= 1"
        raise InvalidParameterError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidParameterError(f"{name} must be a finite number {bound}, got {value!r}")
    return float(value)


def check_norm(norm: str) -> str:
    if norm not in STEPS:
        raise InvalidParameterError(f"unknown norm {norm!r}; choose one of {', '.join(STEPS)}")
    return norm


def check_inputs(model, x, y, targets):
    """Validate images (B,C,H,W) in [0,1] matching ``model.input_shape``, labels and targets."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidParameterError(f"images must be a (B, C, H, W) tensor, got {shape}")
    if x.shape[0] == 0:
        raise InvalidParameterError("no images to attack (empty batch)")
    expected = getattr(model, "input_shape", None)
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        raise InvalidParameterError(
            f"image size {tuple(x.shape[1:])} does not match the model's input shape {tuple(expected)}"
        )
    if not torch.is_floating_point(x):
        raise InvalidParameterError(f"images must be floating point in [0, 1], got dtype {x.dtype}")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6 or not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidParameterError(f"images must lie in [0, 1]; got values in [{lo:.3g}, {hi:.3g}]")
    for name, t in (("labels", y), ("targets", targets)):
        if t is None:
            continue
        t = torch.as_tensor(t)
        if t.shape != (x.shape[0],):
            raise InvalidParameterError(f"{name} must have shape ({x.shape[0]},), got {tuple(t.shape)}")
        k = getattr(model, "num_classes", None)
        if k is not None and len(t) and (int(t.min()) < 0 or int(t.max()) >= k):
            raise InvalidParameterError(f"{name} must be class indices in [0, {k - 1}]")


@dataclass
class Attack:
    """Base class of every attack; subclasses are dataclasses of their parameters.

    Common flags: ``amp`` (bf16 autocast for the forward/backward, CUDA only) and ``channels_last``
    (CUDA only); both are ignored on CPU.
    """

    name = "attack"
    title = "Attack"
    #: True when the attack works inside a fixed ε-ball (FGSM, PGD); False for minimal-norm attacks.
    bounded = True

    def config(self) -> dict:
        """The attack's name and parameters, JSON-friendly (a callable ``loss`` by its name)."""
        config = {"attack": self.name, **dataclasses.asdict(self)}
        if "loss" in config:
            config["loss"] = loss_name(getattr(self, "loss"))
        return config

    def __call__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        progress: Progress | None = None,
        should_stop: ShouldStop | None = None,
    ) -> AttackResult:
        """Attack ``model`` on images ``x`` (B,C,H,W) in [0, 1] with labels ``y`` (B,).

        Args:
            targets: (B,) target classes for a targeted attack; when the attack is targeted and
                this is None, the clean runner-up class of each image is used.
            progress: ``progress(done, total)`` over the attack's iterations.
            should_stop: polled every iteration; when it returns True, :class:`AttackCancelled`
                is raised.
        Returns:
            :class:`AttackResult` on ``x``'s device. The model's train/eval flags and every
            parameter's ``requires_grad`` are as before, also on error.
        """
        check_inputs(model, x, y, targets)
        if self.bounded and getattr(self, "eps", None) is not None:  # ℓ₂ radius vs this image size
            check_eps(self.eps, getattr(self, "norm", "linf"), tuple(x.shape[1:]))
        device = model_device(model)
        out_device = x.device
        x = x.detach().to(device, torch.float32).clamp(0.0, 1.0)
        y = torch.as_tensor(y).to(device, torch.long)
        fwd = Forward(model, device, getattr(self, "amp", False), getattr(self, "channels_last", False),
                      progress, should_stop)
        with frozen_eval(model), channels_last(model, fwd.channels_last):
            with torch.no_grad():
                logits_clean = fwd(x)
            if targets is not None:
                targets = torch.as_tensor(targets).to(device, torch.long)
            elif getattr(self, "targeted", False):
                targets = runner_up(logits_clean, y)
            crafted = (x, logits_clean) if self.nothing_to_do else self._craft(fwd, x, y, targets, logits_clean)
            adv, logits_adv = crafted[0], crafted[1]
            extras = crafted[2] if len(crafted) > 2 else {}
            if logits_adv is None:
                with torch.no_grad():
                    logits_adv = fwd(adv)
        adv = adv.detach()
        delta = adv - x
        result = AttackResult(
            adv=adv, perturbation=delta,
            success=is_success(logits_adv, y, targets),
            linf_norm=delta.flatten(1).abs().amax(dim=1), l2_norm=delta.flatten(1).norm(dim=1),
            logits_clean=logits_clean, logits_adv=logits_adv.detach(), labels=y, targets=targets,
            config=self.config(), queries=extras.get("queries"), found_by=extras.get("found_by"),
        )
        if out_device != device:
            result = AttackResult(**{
                f.name: (v.to(out_device) if isinstance(v, torch.Tensor) else v)
                for f in dataclasses.fields(result) for v in [getattr(result, f.name)]
            })
        return result

    @property
    def nothing_to_do(self) -> bool:
        """True for a bounded attack with ε = 0: no image can change, so the attack returns the
        clean images after the one clean forward pass (robust accuracy = clean accuracy at once,
        in evaluate, the sweeps, transfer and the Attack Lab)."""
        return self.bounded and getattr(self, "eps", None) == 0

    def _craft(self, fwd: Forward, x, y, targets, logits_clean):
        """Return ``(adv (B,C,H,W), logits_adv (B,K) or None)``, optionally with a third item, a
        dict of per-example extras (``queries``, ``found_by``: see :class:`AttackResult`);
        implemented by each attack."""
        raise NotImplementedError
