"""The model card: one JSON file beside each weights file, read and written as :class:`ModelCard`.

A card is schema-versioned (``format_version``), validated when it is read and when it is written,
and keeps keys it does not know (a newer writer's fields survive a round trip through an older
reader). Fields::

    format            "robustscope-checkpoint"      format_version  2 (1 is read too)
    name, description free text (name defaults to the file stem)
    arch, arch_kwargs engine.models.ARCHITECTURES key and its full keyword arguments
    dataset           engine.data dataset name the model was trained on
    input_shape       [C, H, W];  mean, std: per-channel normalisation (applied inside the model)
    num_classes, class_names
    dual_bn           true for AdvProp models (main/aux BatchNorm)
    training          :class:`Recipe`: method ("standard", "pgd", "trades", "fast", "advprop", ...),
                      norm, eps, steps, alpha, epochs, seed, bn_mode, ... (other keys kept); a
                      model RobustScope trained stores its whole training config once, as
                      ``config``, and the typed fields are read from it
    metrics           :class:`Metrics`: clean_acc, robust_acc, attack (:class:`AttackRecord`,
                      written ``{"attack": name, **its config}``), n_test, history, ... (other
                      keys kept)
    versions          library versions at save time (python, torch, torchvision, safetensors, robustscope)
    created           ISO 8601 UTC time
    source            (imports) the original file, its format and sha256; provenance such as a
                      leaderboard's reported figures
    weights_sha256    sha256 of the weights file; the loader refuses weights that do not match

Reading is bounded: a card file over :data:`MAX_CARD_BYTES`, nested deeper than
:data:`MAX_DEPTH` (text nested too deeply for Python's JSON decoder included:
:func:`decode_card_json`), or describing an implausible model (input larger than
:data:`MAX_INPUT_PIXELS`, more than :data:`MAX_CLASSES` classes, an architecture size option over
:data:`MAX_SIZE_OPTIONS`) is refused with a :class:`CheckpointError` naming the field before
anything is built from it.

This module imports no torch: cards are read, validated and written without it (finding a
checkpoint's files and reading its card: :mod:`engine.checkpoints.files`). Making a card from a
model (``make_card``, ``merge_structure``, ``model_fields``) is in :mod:`engine.checkpoints.making`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields as dc_fields, replace
from typing import Any, Mapping

from engine.catalogue import norm_symbol, training_attack, training_bn_mode
from engine.errors import CheckpointError, InvalidParameterError

CARD_FORMAT = "robustscope-checkpoint"
CARD_VERSION = 2
READABLE_VERSIONS = (1, 2)

#: Card fields the loader needs to rebuild the model.
REQUIRED_FIELDS = ("arch", "num_classes", "input_shape", "mean", "std")
#: Card fields that describe the model's structure (must agree with the model being saved).
STRUCTURE_FIELDS = ("arch", "arch_kwargs", "num_classes", "input_shape", "mean", "std", "dual_bn")

#: Bounds that keep a card from making the process allocate more than a real model needs.
MAX_CARD_BYTES = 8 << 20
MAX_DEPTH = 24
MAX_CLASSES = 100_000
MAX_CHANNELS = 16
MAX_SIDE = 4096
MAX_INPUT_PIXELS = 3 * 1024 * 1024
MAX_TEXT = 10_000
MAX_ARCH_KWARGS = 32
#: Largest value of each architecture option that sets a model's size, whatever the architecture
#: (small_cnn's ``width`` counts channels, 32 by default; cifar_resnet's multiplies them; its
#: ``depth`` of 1202 is the deepest in He et al. 2016). Over these a model is refused before it is
#: built: ``width`` 10**9 overflows torch's storage-size computation even on the meta device.
MAX_SIZE_OPTIONS = {"width": 4096, "hidden": 65_536, "depth": 1202, "widen_factor": 64, "wm": 64}


# ---------------------------------------------------------------------------------------------
# small validators (each raises CheckpointError naming the field)


def _fail(where: str, key: str, why: str) -> CheckpointError:
    return CheckpointError(f"model card {where}: field {key!r} {why}")


def _as_int(value: Any, where: str, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise _fail(where, key, f"must be an integer, got {value!r}")
    value = int(value)
    if not low <= value <= high:
        raise _fail(where, key, f"must be between {low} and {high}, got {value}")
    return value


def _as_float(value: Any, where: str, key: str, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise _fail(where, key, f"must be a finite number, got {value!r}")
    return float(value)


def _as_str(value: Any, where: str, key: str, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _fail(where, key, f"must be a string of at most {MAX_TEXT} characters, got {type(value).__name__}")
    return value


def _as_dict(value: Any, where: str, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(where, key, f"must be a JSON object, got {type(value).__name__}")
    return {str(k): v for k, v in value.items()}


def _depth(value: Any) -> int:
    """Nesting depth of a JSON value, computed without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        if isinstance(item, Mapping):
            stack += [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            stack += [(v, depth + 1) for v in item]
    return deepest


def decode_card_json(text: str | bytes, where: str = "") -> Any:
    """Card JSON text decoded, guarded: over :data:`MAX_CARD_BYTES`, invalid JSON, or nested too
    deeply for Python's decoder (100,000 nested arrays raise RecursionError inside ``json``) is a
    :class:`CheckpointError` naming the card (``where``)."""
    if len(text) > MAX_CARD_BYTES:
        raise CheckpointError(f"model card {where} is {len(text)} bytes; a card is at most {MAX_CARD_BYTES >> 20} MiB")
    try:
        return json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"model card {where} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise CheckpointError(
            f"model card {where} is nested too deeply to be a model card (at most {MAX_DEPTH} levels)"
        ) from None


def size_option_problem(arch_kwargs: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(option, why)`` for the first architecture size option over :data:`MAX_SIZE_OPTIONS`
    (or not a finite number where it is a number), else None."""
    for key, high in MAX_SIZE_OPTIONS.items():
        value = arch_kwargs.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not value <= high:
            return key, f"is {value!r}; an architecture's {key} is at most {high:,} (a larger model would not fit in memory)"
    return None


def _split(data: Mapping[str, Any], cls) -> tuple[dict, dict]:
    """``data`` split into the keys ``cls`` declares and the rest (kept as ``extra``)."""
    known = {f.name for f in dc_fields(cls)} - {"extra"}
    return {k: v for k, v in data.items() if k in known}, {k: v for k, v in data.items() if k not in known}


# ---------------------------------------------------------------------------------------------
# parts


@dataclass(frozen=True)
class AttackRecord:
    """The attack behind a robust figure: its registry name and its own config.

    ``config`` is what the attack reports about itself (``Attack.config``: eps, norm, steps,
    alpha, restarts, random start, ...); the convenience properties read from it.
    """

    name: str
    config: dict = field(default_factory=dict)

    @property
    def norm(self) -> str | None:
        return self.config.get("norm")

    @property
    def eps(self) -> float | None:
        eps = self.config.get("eps")
        return float(eps) if isinstance(eps, (int, float)) and not isinstance(eps, bool) else None

    @property
    def steps(self) -> int | None:
        steps = self.config.get("steps")
        return int(steps) if isinstance(steps, int) and not isinstance(steps, bool) else None

    def label(self) -> str:
        """E.g. "PGD-40 ℓ∞ ε=0.3"."""
        steps = f"-{self.steps}" if self.steps else ""
        norm = f" {norm_symbol(self.norm)}" if self.norm else ""
        eps = f" ε={self.eps:.3g}" if self.eps is not None else ""
        return f"{self.name.upper()}{steps}{norm}{eps}"

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "AttackRecord | None":
        """Read the written layout ``{"attack": name, ...}`` (the attack's own config; what
        :meth:`to_dict` writes) and the one older training cards used, ``{"name": "PGD", ...}``."""
        if data is None or data == {}:
            return None
        data = _as_dict(data, where, "metrics.attack")
        name = data.get("attack", data.get("name"))
        name = _as_str(name, where, "metrics.attack.attack", optional=False).lower()
        config = {k: v for k, v in data.items() if k not in ("name",)}
        config["attack"] = name
        return cls(name=name, config=config)

    def to_dict(self) -> dict:
        """The one layout every writer uses: ``{"attack": name, **config}``."""
        return {"attack": self.name, **{k: v for k, v in self.config.items() if k not in ("attack", "name")}}


#: The typed recipe fields (:class:`Recipe`).
RECIPE_FIELDS = ("method", "norm", "eps", "steps", "alpha", "epochs", "seed", "bn_mode")
#: Copies of ``config`` values that training cards written before the recipe was stored once kept
#: beside it; dropped when such a card is read (the config holds them).
_LEGACY_COPIES = ("trades_beta", "batch_size", "optimizer", "lr", "momentum", "weight_decay", "schedule")


def _implied(config: Mapping[str, Any], where: str) -> dict:
    """The typed recipe fields a training config (``engine.training.TrainConfig.to_dict()``)
    implies: its method, threat, epochs and seed, the attack it trained with (steps and step size
    as used, ``engine.catalogue.training_attack``) and its BatchNorm mode."""
    key = "training.config."
    method = _as_str(config.get("method") or "standard", where, key + "method")
    eps = _as_float(config.get("eps"), where, key + "eps")
    steps = None if config.get("steps") is None else _as_int(config["steps"], where, key + "steps", 0, 10**7)
    alpha = _as_float(config.get("alpha"), where, key + "alpha")
    if eps is not None and steps is not None:
        steps, alpha = training_attack(method, eps, steps, alpha)
    return {
        "method": method,
        "norm": _as_str(config.get("norm"), where, key + "norm"),
        "eps": eps, "steps": steps, "alpha": alpha,
        "epochs": None if config.get("epochs") is None else _as_int(config["epochs"], where, key + "epochs", 0, 10**7),
        "seed": None if config.get("seed") is None else _as_int(config["seed"], where, key + "seed", -2**63, 2**64),
        "bn_mode": training_bn_mode(method),
    }


@dataclass(frozen=True)
class Recipe:
    """How the model was trained (``card.training``); unknown keys are kept in ``extra``.

    A model trained by RobustScope records its whole training config once, in ``config`` (what
    ``engine.training.TrainConfig.from_dict`` reads back); the typed fields are then read from it
    (``steps``/``alpha`` as the training attack used them) and are written only where they say
    something else. Other cards (imports, RobustBench) give the typed fields themselves. Cards
    written before the recipe was stored once (the fields *and* ``config``) read the same.
    """

    method: str = "standard"
    norm: str | None = None
    eps: float | None = None
    steps: int | None = None
    alpha: float | None = None
    epochs: int | None = None
    seed: int | None = None
    bn_mode: str | None = None
    config: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def adversarial(self) -> bool:
        """True when the recipe trains on adversarial examples (anything but standard/unknown)."""
        return self.method not in ("standard", "unknown")

    def threat(self) -> tuple[str | None, float | None]:
        """(norm, ε) of the adversarial training, or (None, None) when there is none (a standard
        config may still carry an unused default ε)."""
        return (self.norm, self.eps) if self.adversarial else (None, None)

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "Recipe":
        known, extra = _split(_as_dict(data, where, "training"), cls)
        config = None if known.get("config") is None else _as_dict(known["config"], where, "training.config")
        implied = _implied(config, where) if config is not None else {}
        if config is not None:
            extra = {k: v for k, v in extra.items() if k not in _LEGACY_COPIES}
        value = {k: known[k] if known.get(k) is not None else implied.get(k) for k in RECIPE_FIELDS}
        return cls(
            method=_as_str(value["method"] or "standard", where, "training.method"),
            norm=_as_str(value["norm"], where, "training.norm"),
            eps=_as_float(value["eps"], where, "training.eps"),
            steps=None if value["steps"] is None else _as_int(value["steps"], where, "training.steps", 0, 10**7),
            alpha=_as_float(value["alpha"], where, "training.alpha"),
            epochs=None if value["epochs"] is None else _as_int(value["epochs"], where, "training.epochs", 0, 10**7),
            seed=None if value["seed"] is None else _as_int(value["seed"], where, "training.seed", -2**63, 2**64),
            bn_mode=_as_str(value["bn_mode"], where, "training.bn_mode"),
            config=config,
            extra=extra,
        )

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in RECIPE_FIELDS}
        if self.config is None:
            return {**self.extra, **{k: v for k, v in out.items() if v is not None or k == "method"}}
        implied = _implied(self.config, "")
        own = {k: v for k, v in out.items() if v is not None and v != implied.get(k)}
        return {**self.extra, **own, "config": dict(self.config)}


@dataclass(frozen=True)
class Metrics:
    """What was measured (``card.metrics``); unknown keys are kept in ``extra``."""

    clean_acc: float | None = None
    robust_acc: float | None = None
    attack: AttackRecord | None = None
    n_test: int | None = None
    autoattack_acc: float | None = None
    history: tuple = ()
    extra: dict = field(default_factory=dict)

    @property
    def n_images(self) -> int | None:
        """How many test images the headline figures used (``n_test``, else the training run's
        per-epoch evaluation subset)."""
        if self.n_test is not None:
            return self.n_test
        subset = self.extra.get("eval_subset")
        n = subset.get("n") if isinstance(subset, Mapping) else None
        return n if isinstance(n, int) and not isinstance(n, bool) else None

    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "Metrics":
        known, extra = _split(_as_dict(data, where, "metrics"), cls)
        history = known.get("history") or []
        if not isinstance(history, list) or not all(isinstance(h, Mapping) for h in history):
            raise _fail(where, "metrics.history", "must be a list of JSON objects")
        return cls(
            clean_acc=_as_float(known.get("clean_acc"), where, "metrics.clean_acc"),
            robust_acc=_as_float(known.get("robust_acc"), where, "metrics.robust_acc"),
            autoattack_acc=_as_float(known.get("autoattack_acc"), where, "metrics.autoattack_acc"),
            attack=AttackRecord.from_dict(known.get("attack"), where),
            n_test=None if known.get("n_test") is None else _as_int(known["n_test"], where, "metrics.n_test", 0, 10**9),
            history=tuple(dict(h) for h in history),
            extra=extra,
        )

    def to_dict(self) -> dict:
        out = dict(self.extra)
        for key in ("clean_acc", "robust_acc", "autoattack_acc", "n_test"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.attack is not None:
            out["attack"] = self.attack.to_dict()
        if self.history:
            out["history"] = [dict(h) for h in self.history]
        return out


# ---------------------------------------------------------------------------------------------
# the card


@dataclass(frozen=True)
class ModelCard:
    """A validated model card (see the module docstring). Build with :func:`make_card` or
    :meth:`from_dict`; write with :meth:`to_dict`; change with :meth:`replace`."""

    arch: str
    num_classes: int
    input_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    arch_kwargs: dict = field(default_factory=dict)
    dataset: str | None = None
    name: str | None = None
    description: str = ""
    class_names: tuple[str, ...] = ()
    dual_bn: bool = False
    training: Recipe = field(default_factory=Recipe)
    metrics: Metrics = field(default_factory=Metrics)
    versions: dict = field(default_factory=dict)
    created: str | None = None
    source: dict | None = None
    weights_sha256: str | None = None
    format_version: int = CARD_VERSION
    extra: dict = field(default_factory=dict)

    # ----------------------------------------------------------------- reading
    @classmethod
    def from_dict(cls, data: Any, where: str = "") -> "ModelCard":
        """Validate a parsed card.

        Raises:
            CheckpointError: not an object, a missing required field, a field of the wrong kind
                or out of bounds (named), nesting deeper than ``MAX_DEPTH``, an unknown format.
        """
        if not isinstance(data, Mapping):
            raise CheckpointError(f"model card {where} is not a JSON object")
        if _depth(data) > MAX_DEPTH:
            raise CheckpointError(f"model card {where} is nested deeper than {MAX_DEPTH} levels; it is not a model card")
        missing = [f for f in REQUIRED_FIELDS if f not in data]
        if missing:
            raise CheckpointError(f"model card {where} lacks the field(s) {', '.join(missing)}")
        fmt = data.get("format", CARD_FORMAT)
        if fmt != CARD_FORMAT:
            raise _fail(where, "format", f"must be {CARD_FORMAT!r}, got {fmt!r}")
        version = _as_int(data.get("format_version", 1), where, "format_version", 1, 10**6)
        if version not in READABLE_VERSIONS:
            raise _fail(where, "format_version", f"is {version}; this RobustScope reads versions {READABLE_VERSIONS} (upgrade it)")
        known, extra = _split(data, cls)
        extra.pop("format", None)
        shape = _input_shape(known["input_shape"], where)
        num_classes = _as_int(known["num_classes"], where, "num_classes", 1, MAX_CLASSES)
        return cls(
            arch=_as_str(known["arch"], where, "arch", optional=False),
            num_classes=num_classes,
            input_shape=shape,
            mean=_per_channel(known["mean"], shape[0], where, "mean", positive=False),
            std=_per_channel(known["std"], shape[0], where, "std", positive=True),
            arch_kwargs=_arch_kwargs(known.get("arch_kwargs"), where),
            dataset=_as_str(known.get("dataset"), where, "dataset"),
            name=_as_str(known.get("name"), where, "name"),
            description=_as_str(known.get("description"), where, "description") or "",
            class_names=_class_names(known.get("class_names"), num_classes, where),
            dual_bn=bool(known.get("dual_bn", False)),
            training=Recipe.from_dict(known.get("training"), where),
            metrics=Metrics.from_dict(known.get("metrics"), where),
            versions={str(k): str(v) for k, v in _as_dict(known.get("versions"), where, "versions").items()},
            created=_as_str(known.get("created"), where, "created"),
            source=_as_dict(known["source"], where, "source") if known.get("source") is not None else None,
            weights_sha256=_sha(known.get("weights_sha256"), where),
            format_version=version,
            extra=extra,
        )

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "") -> "ModelCard":
        """Parse (:func:`decode_card_json`: at most ``MAX_CARD_BYTES``, nesting guarded) and
        validate card text."""
        return cls.from_dict(decode_card_json(text, where), where)

    # ----------------------------------------------------------------- writing
    def to_dict(self) -> dict:
        """The JSON object written to disk (unknown keys read earlier are written back)."""
        out = {
            **self.extra,
            "format": CARD_FORMAT,
            "format_version": CARD_VERSION,
            "name": self.name,
            "description": self.description,
            "arch": self.arch,
            "arch_kwargs": dict(self.arch_kwargs),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "dual_bn": self.dual_bn,
            "dataset": self.dataset,
            "class_names": list(self.class_names),
            "training": self.training.to_dict(),
            "metrics": self.metrics.to_dict(),
            "versions": dict(self.versions),
            "created": self.created,
        }
        if self.source is not None:
            out["source"] = dict(self.source)
        if self.weights_sha256 is not None:
            out["weights_sha256"] = self.weights_sha256
        return out

    def to_json(self) -> str:
        """Card text; a value that is not JSON-serialisable raises ``InvalidParameterError``."""
        try:
            return json.dumps(self.to_dict(), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
        except (TypeError, ValueError) as exc:
            raise InvalidParameterError(f"the model card is not JSON-serialisable: {exc}") from exc

    def replace(self, **changes) -> "ModelCard":
        """A copy with ``changes``; the result is validated like a card read from disk."""
        candidate = replace(self, **changes)
        return ModelCard.from_dict(candidate.to_dict(), f"for {candidate.name or 'this model'}")

    # ----------------------------------------------------------------- views
    @property
    def title(self) -> str:
        """The card's name, else ``"model"``."""
        return self.name or "model"

    def describe_recipe(self) -> str:
        """A short recipe label, e.g. "standard" or "pgd ℓ∞ ε=0.3" (ε only for adversarial training);
        an imported model whose recipe is not recorded is named from its source: "imported
        (RobustBench corruptions)", else "imported"."""
        norm, eps = self.training.threat()
        if self.training.method == "unknown":
            threat = ((self.source or {}).get("robustbench") or {}).get("threat")
            return f"imported (RobustBench {threat})" if threat else "imported"
        if eps is None:
            return self.training.method
        symbol = norm_symbol(norm)
        return f"{self.training.method} {symbol + ' ' if symbol else ''}ε={eps:.3g}"


def _input_shape(value: Any, where: str) -> tuple[int, int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        raise _fail(where, "input_shape", f"must be [C, H, W], got {value!r}")
    c = _as_int(value[0], where, "input_shape", 1, MAX_CHANNELS)
    h = _as_int(value[1], where, "input_shape", 1, MAX_SIDE)
    w = _as_int(value[2], where, "input_shape", 1, MAX_SIDE)
    if c * h * w > MAX_INPUT_PIXELS:
        raise _fail(where, "input_shape", f"{[c, h, w]} has more than {MAX_INPUT_PIXELS} values per image")
    return c, h, w


def _per_channel(value: Any, channels: int, where: str, key: str, positive: bool) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != channels:
        raise _fail(where, key, f"must list {channels} number(s), one per channel, got {value!r}"[:300])
    numbers = tuple(_as_float(v, where, key, optional=False) for v in value)
    if positive and not all(v > 0 for v in numbers):
        raise _fail(where, key, f"must be > 0 for every channel, got {list(numbers)}")
    return numbers


def _arch_kwargs(value: Any, where: str) -> dict:
    kwargs = _as_dict(value, where, "arch_kwargs")
    if len(kwargs) > MAX_ARCH_KWARGS:
        raise _fail(where, "arch_kwargs", f"has {len(kwargs)} options; at most {MAX_ARCH_KWARGS}")
    for key, item in kwargs.items():
        if not (item is None or isinstance(item, (bool, int, float, str))):
            raise _fail(where, f"arch_kwargs.{key}", f"must be a number, string, boolean or null, got {type(item).__name__}")
    problem = size_option_problem(kwargs)
    if problem:
        raise _fail(where, f"arch_kwargs.{problem[0]}", problem[1])
    return kwargs


def _class_names(value: Any, num_classes: int, where: str) -> tuple[str, ...]:
    if value is None:
        return tuple(str(i) for i in range(num_classes))
    if not isinstance(value, list) or len(value) != num_classes:
        raise _fail(where, "class_names", f"must list {num_classes} names (one per class)")
    return tuple(_as_str(v, where, "class_names", optional=False) for v in value)


def _sha(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise _fail(where, "weights_sha256", "must be 64 lowercase hex digits")
    return value


def as_card(card: "ModelCard | Mapping[str, Any]", where: str = "") -> "ModelCard":
    """``card`` as a :class:`ModelCard` (a dict is validated like a card read from disk)."""
    return card if isinstance(card, ModelCard) else ModelCard.from_dict(card, where)
