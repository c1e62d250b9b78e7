"""Importing checkpoints made elsewhere: plain/torchvision/timm state dicts, MadryLab
``robustness``, RobustBench (files in its cache layout: :mod:`engine.checkpoints.robustbench`).

Every format ends as a state dict for an ``engine.models.Classifier`` of the architecture the user
names (``--arch``). robustness' own architecture names (``resnet18``, ``resnet50`` ...) resolve
to its CIFAR variant (``cifar_resnet18/50``) or its ImageNet one (torchvision's keys) by dataset,
as that library does (:func:`resolve_arch`).

The normalisation (applied inside the model, which takes images in [0, 1]) is, in order:
the one given explicitly (``normalization=``, CLI ``--normalization``, the upload form), the
file's own (our ``normalize.*`` buffers, robustness' ``normalizer.new_mean/new_std``, RobustBench's
``normalize.mean/std`` of ``Sequential(normalize=ImageNormalizer, model=...)`` or ``mu``/``sigma``
buffers), the one the architecture's library documents, else the dataset's.
Files are read with ``torch.load(weights_only=True)`` only; see ``engine.checkpoints.safe_io``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from engine.catalogue import IMPORT_FORMATS, require_names
from engine.checkpoints.card import size_option_problem
from engine.checkpoints.making import make_card
from engine.checkpoints.safe_io import read_weights
from engine.checkpoints.store import LoadedCheckpoint, checkpoint_stem, check_state_dict, read_card, save_checkpoint
from engine.errors import CheckpointError, InvalidParameterError, RobustScopeError

#: Keys under which training scripts nest the state dict, tried in order.
CONTAINER_KEYS = ("state_dict", "model", "model_state_dict", "net", "last")
#: Prefixes of wrapper modules (DataParallel's ``module.``, wrappers' ``model.``) stripped when
#: every key carries them.
WRAPPER_PREFIXES = ("module.", "model.")
#: robustness: the classifier is ``module.model.*``; these copies/buffers are dropped.
ROBUSTNESS_MODEL = "model."
ROBUSTNESS_DROPPED = ("attacker.", "normalizer.")
ROBUSTNESS_NORMALIZER = ("normalizer.new_mean", "normalizer.new_std")
#: Key pairs under which files carry their normalisation, when the net itself has no such buffers:
#: RobustBench's ``Sequential(normalize=ImageNormalizer, ...)``, its CIFAR wrappers' ``mu``/``sigma``,
#: DeepMind-style nets' ``mean``/``std``.
NORMALIZATION_KEYS = (("normalize.mean", "normalize.std"), ("mu", "sigma"), ("mean", "std"))
#: Words meaning "no normalisation" (the net takes [0, 1] images as they are).
NO_NORMALIZATION = ("none", "identity")
#: File names other libraries give checkpoints, besides the usual suffixes (robustness saves
#: ``checkpoint.pt.best`` / ``checkpoint.pt.latest``; many scripts ``*.pth.tar``).
EXTRA_WEIGHT_NAMES = (".pth.tar", ".pt.best", ".pt.latest")
#: An architecture may hold at most this many times the values its weights file has (plus 1 M)
#: before it is built for real (:func:`check_file_justifies`).
SIZE_SLACK = 2


# ---------------------------------------------------------------------------------------------
# normalisation


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean``/``std`` a model normalises its [0, 1] input with; empty means none.

    Attributes:
        mean, std: one value per channel; both empty for "none" (the net takes [0, 1] images).
        source: where it came from: "option", "file", "architecture", "dataset" or a table's name.
    """

    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    source: str = "option"

    @property
    def is_identity(self) -> bool:
        """True for "none": mean 0 and std 1 in every channel."""
        return not self.mean

    def values(self, channels: int) -> tuple[list[float], list[float]]:
        """``(mean, std)`` lists for images with ``channels`` channels.

        Raises:
            InvalidParameterError: the statistics have another number of channels.
        """
        if self.is_identity:
            return [0.0] * channels, [1.0] * channels
        if len(self.mean) != channels:
            raise InvalidParameterError(
                f"the normalisation ({self.source}) has {len(self.mean)} values per statistic but the "
                f"images have {channels} channel(s)"
            )
        return list(self.mean), list(self.std)

    def text(self) -> str:
        """The ``--normalization`` spelling: ``"none"`` or ``"MEAN,..;STD,.."``."""
        if self.is_identity:
            return "none"
        return ",".join(f"{v:g}" for v in self.mean) + ";" + ",".join(f"{v:g}" for v in self.std)


_NORMALIZATION_HELP = (
    "give 'MEAN,..;STD,..' with one value per channel, e.g. '0.4914,0.4822,0.4465;0.2471,0.2435,0.2616', "
    "or 'none' (the network takes [0, 1] images as they are)"
)


def _floats(values: Any, what: str) -> tuple[float, ...]:
    try:
        if isinstance(values, torch.Tensor):
            values = values.flatten().tolist()
        if isinstance(values, str):
            values = [v for v in values.split(",") if v.strip()]
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InvalidParameterError(f"normalisation {what} {values!r} is not a list of numbers; {_NORMALIZATION_HELP}") from None
    if not out or len(out) > 16 or not all(math.isfinite(v) for v in out):
        raise InvalidParameterError(f"normalisation {what} must be 1 to 16 finite numbers, got {values!r}")
    return out


def parse_normalization(value: Any, source: str = "option") -> Normalization | None:
    """Read a normalisation given by a person or a file.

    Args:
        value: None or "" (not given); "none"/"identity"; a string ``"MEAN,..;STD,.."``; a mapping
            with ``mean`` and ``std``; a pair ``(mean, std)``; or a :class:`Normalization`.
        source: recorded in the result (see :class:`Normalization`).

    Returns:
        The :class:`Normalization`, or None when ``value`` is None or empty.

    Raises:
        InvalidParameterError: unreadable text, different lengths, a non-finite value or std <= 0.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, Normalization):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in NO_NORMALIZATION:
            return Normalization(source=source)
        parts = text.split(";")
        if len(parts) != 2:
            raise InvalidParameterError(f"normalisation {value!r} is not understood: {_NORMALIZATION_HELP}")
        mean, std = parts
    elif isinstance(value, Mapping):
        if "mean" not in value or "std" not in value:
            raise InvalidParameterError(f"a normalisation mapping needs 'mean' and 'std', got keys {sorted(value)}")
        mean, std = value["mean"], value["std"]
    elif isinstance(value, Sequence) and len(value) == 2:
        mean, std = value
    elif hasattr(value, "mean") and hasattr(value, "std"):
        mean, std = value.mean, value.std
    else:
        raise InvalidParameterError(f"normalisation {value!r} is not understood: {_NORMALIZATION_HELP}")
    mean_t, std_t = _floats(mean, "mean"), _floats(std, "std")
    if len(mean_t) != len(std_t):
        raise InvalidParameterError(
            f"normalisation mean has {len(mean_t)} values but std has {len(std_t)}; give one of each per channel"
        )
    if not all(v > 0 for v in std_t):
        raise InvalidParameterError(f"every normalisation std must be > 0, got {list(std_t)}")
    return Normalization(mean_t, std_t, source)


def architecture_normalization(arch: str) -> Normalization | None:
    """The normalisation the architecture's library documents (``engine.models``), if it says one."""
    try:
        from engine.models import default_normalization
    except ImportError:
        return None
    try:
        found = default_normalization(arch)
    except (RobustScopeError, KeyError, ValueError, TypeError):
        return None
    if found is None:
        return None
    try:
        return parse_normalization(found, source="architecture")
    except InvalidParameterError:
        return None


def choose_normalization(*candidates: Normalization | None) -> Normalization:
    """The first candidate given (callers order them: option, file, architecture, dataset)."""
    for candidate in candidates:
        if candidate is not None:
            return candidate
    return Normalization(source="none given")


# ---------------------------------------------------------------------------------------------
# architecture names of other libraries

#: robustness (MadryLab) CIFAR architectures RobustScope has, by robustness' own names.
ROBUSTNESS_CIFAR_ARCHS = {"resnet18": "cifar_resnet18", "resnet50": "cifar_resnet50"}
#: Datasets on which robustness builds its CIFAR models (``cifar_models``), resp. ImageNet ones.
ROBUSTNESS_CIFAR_DATASETS = ("cifar10", "cifar100")
ROBUSTNESS_IMAGENET_DATASETS = ("imagenet", "imagefolder")


def _torchvision_has(name: str) -> bool:
    try:
        import torchvision
    except ImportError:
        return False
    return name in torchvision.models.list_models(module=torchvision.models)


def resolve_arch(arch: str, dataset: str, fmt: str) -> str:
    """The RobustScope architecture for ``arch`` as the file's library names it.

    For ``fmt == "robustness"``, robustness' names resolve by dataset as that library does: on
    CIFAR its ``cifar_models`` (``resnet18`` -> ``cifar_resnet18``, ``resnet50`` ->
    ``cifar_resnet50``), on ImageNet torchvision's models (``resnet50`` -> ``torchvision:resnet50``).
    Names that are already RobustScope architectures (``cifar_resnet50``, ``torchvision:...``,
    ``timm:...``) and other formats pass through unchanged.

    Raises:
        InvalidParameterError: a robustness architecture RobustScope does not have, or a dataset
            robustness has no models for.
    """
    if fmt != "robustness" or ":" in arch or arch.startswith("cifar_"):
        return arch
    name = arch.lower()
    if dataset in ROBUSTNESS_CIFAR_DATASETS and name in ROBUSTNESS_CIFAR_ARCHS:
        return ROBUSTNESS_CIFAR_ARCHS[name]
    if dataset in ROBUSTNESS_IMAGENET_DATASETS and _torchvision_has(name):
        return f"torchvision:{name}"
    if _registered(arch):
        return arch  # a RobustScope architecture named directly
    if dataset in ROBUSTNESS_CIFAR_DATASETS:
        raise InvalidParameterError(
            f"robustness' CIFAR architecture {arch!r} is not available in RobustScope; it has "
            f"{', '.join(ROBUSTNESS_CIFAR_ARCHS)} (as {', '.join(ROBUSTNESS_CIFAR_ARCHS.values())})"
        )
    if dataset in ROBUSTNESS_IMAGENET_DATASETS:
        raise InvalidParameterError(
            f"robustness' ImageNet architecture {arch!r} is not a torchvision model; robustness' ImageNet "
            "models use torchvision's definitions (resnet18, resnet50, wide_resnet50_2, vgg16_bn, ...)"
        )
    raise InvalidParameterError(
        f"{arch!r} is neither a RobustScope architecture nor one robustness builds for dataset {dataset!r} "
        f"(robustness builds CIFAR models for {', '.join(ROBUSTNESS_CIFAR_DATASETS)} and torchvision models "
        f"for {', '.join(ROBUSTNESS_IMAGENET_DATASETS)})"
    )


def _registered(arch: str) -> bool:
    try:
        from engine.models import get_arch

        get_arch(arch)
    except (InvalidParameterError, ImportError):
        return False
    return True


@dataclass
class ImportedState:
    """A state dict ready for a Classifier, with the normalisation found in the file (or None).

    ``full``: the keys already include ``normalize.*`` and ``net.*`` (our own Classifier state
    dict); otherwise they are the net's keys and get the ``net.`` prefix.
    """

    tensors: dict[str, torch.Tensor]
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None
    full: bool = False


def _tensors_only(mapping: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    return {str(k): v for k, v in mapping.items() if isinstance(v, torch.Tensor)}


def _container(contents: Any, where: Path | str) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded file (the file itself, a nested dict, or a pickled module)."""
    if isinstance(contents, torch.nn.Module):
        return _tensors_only(contents.state_dict())
    if not isinstance(contents, Mapping):
        raise CheckpointError(f"{where} holds a {type(contents).__name__}, not a state dict")
    for key in CONTAINER_KEYS:
        inner = contents.get(key)
        if isinstance(inner, torch.nn.Module):
            return _tensors_only(inner.state_dict())
        if isinstance(inner, Mapping) and _tensors_only(inner):
            return _tensors_only(inner)
    tensors = _tensors_only(contents)
    if not tensors:
        raise CheckpointError(
            f"{where} holds no tensors (top-level keys: {', '.join(map(str, list(contents)[:8]))})"
        )
    return tensors


def _strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in tensors.items()}


def _strip_wrappers(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.``/``model.`` prefixes that every key carries (repeatedly)."""
    changed = True
    while changed and tensors:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in tensors):
                tensors, changed = _strip_prefix(tensors, prefix), True
    return tensors


def _as_classifier_state(tensors: dict[str, torch.Tensor]) -> ImportedState:
    """Our own Classifier state dict (normalize.* + net.*), RobustBench's
    ``Sequential(normalize=ImageNormalizer, model=net)`` (normalize.* + model.*), or a bare net."""
    if "normalize.mean" in tensors and "normalize.std" in tensors:
        rest = [k for k in tensors if not k.startswith("normalize.")]
        if rest and all(k.startswith("net.") for k in rest):
            return ImportedState(tensors, tensors["normalize.mean"], tensors["normalize.std"], full=True)
        if rest and all(k.startswith("model.") for k in rest):
            net = _strip_wrappers({k[len("model."):]: tensors[k] for k in rest})
            return ImportedState(net, tensors["normalize.mean"], tensors["normalize.std"])
    return ImportedState(_strip_wrappers(tensors))


def convert_plain(tensors: dict[str, torch.Tensor]) -> ImportedState:
    """A plain / torchvision / timm / RobustBench state dict, possibly ``module.``-prefixed; a
    state dict of a loaded RobustBench model (``normalize.*`` + ``model.*``) unwraps, keeping the
    file's normalisation."""
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = _strip_prefix(tensors, "module.")
    return _as_classifier_state(tensors)


def convert_robustness(tensors: dict[str, torch.Tensor]) -> ImportedState:
    """MadryLab ``robustness``: keep ``module.model.*``, drop the attacker copy and the normalizer
    (whose ``new_mean``/``new_std`` give the normalisation)."""
    tensors = _strip_prefix(tensors, "module.")
    mean, std = (tensors.get(k) for k in ROBUSTNESS_NORMALIZER)
    kept = {k[len(ROBUSTNESS_MODEL):]: v for k, v in tensors.items() if k.startswith(ROBUSTNESS_MODEL)}
    if not kept:
        raise CheckpointError("no 'module.model.*' weights found: this is not a robustness-library checkpoint")
    return ImportedState(kept, mean, std)


def detect_format(tensors: Mapping[str, torch.Tensor]) -> str:
    """"robustness" when the keys carry its attacker/normalizer/model prefixes, else "plain"."""
    keys = [k[len("module."):] if k.startswith("module.") else k for k in tensors]
    if any(k.startswith(ROBUSTNESS_DROPPED) for k in keys) and any(k.startswith(ROBUSTNESS_MODEL) for k in keys):
        return "robustness"
    return "plain"


#: Import format name -> converter.
FORMATS: dict[str, Callable[[dict[str, torch.Tensor]], ImportedState]] = {
    "plain": convert_plain,
    "torchvision": convert_plain,
    "timm": convert_plain,
    "robustbench": convert_plain,
    "robustness": convert_robustness,
}
require_names(FORMATS, IMPORT_FORMATS, "engine.checkpoints.importers.FORMATS vs engine.catalogue.IMPORT_FORMATS")


def _dataset_spec(dataset):
    if hasattr(dataset, "input_shape") and hasattr(dataset, "num_classes"):
        return dataset
    from engine.data import get_spec  # lazy: engine.data is a separate part

    return get_spec(dataset)


def _pull_file_normalization(tensors: dict[str, torch.Tensor], net_keys: set[str]) -> tuple[dict[str, torch.Tensor], Normalization | None]:
    """Take the normalisation buffers a file carries beside the net (keys the net does not have)."""
    for mean_key, std_key in NORMALIZATION_KEYS:
        if mean_key in tensors and std_key in tensors and mean_key not in net_keys and std_key not in net_keys:
            found = parse_normalization((tensors[mean_key], tensors[std_key]), source="file")
            rest = {k: v for k, v in tensors.items() if k not in (mean_key, std_key)}
            return rest, found
    return tensors, None


def assemble_model(
    arch: str,
    num_classes: int,
    input_shape: Sequence[int],
    state: ImportedState,
    *,
    arch_kwargs: dict | None = None,
    normalization: Normalization | None = None,
    fallbacks: Sequence[Normalization | None] = (),
    where: str = "the file",
    key_filter: Callable[[dict[str, torch.Tensor], torch.nn.Module], dict[str, torch.Tensor]] | None = None,
):
    """Build ``arch`` and load ``state`` into it, choosing the normalisation (module docstring).

    Args:
        arch, num_classes, input_shape, arch_kwargs: what ``engine.models.build_model`` takes.
        state: the converted weights (:class:`ImportedState`).
        normalization: given explicitly; wins over everything.
        fallbacks: used in order when neither an explicit nor the file's normalisation exists.
        where: names the file in error messages.
        key_filter: ``key_filter(net_tensors, built_net) -> net_tensors``, a known key conversion
            applied before loading (e.g. timm's checkpoint filter for older Swin files).

    Returns:
        ``(model in eval mode, the Normalization used)``.

    Raises:
        CheckpointError: the weights do not fit the architecture (keys and shapes named), a size
            option over the card's bounds (named), or an architecture far larger than the file
            (refused before any memory is allocated for it).
        InvalidParameterError: unknown architecture/options, or a normalisation of the wrong size.
    """
    from engine.models import build_model

    channels = int(input_shape[0])
    dual = any(k.endswith((".main.running_mean", ".aux.running_mean")) for k in state.tensors)
    check_size_options(arch, arch_kwargs or {}, where)
    with torch.device("meta"):  # no memory: first see whether the file could fill it
        skeleton = build_model(arch, num_classes, input_shape, [0.0] * channels, [1.0] * channels,
                               dual_bn=dual, **(arch_kwargs or {}))
    check_file_justifies(skeleton, state, where)
    model = build_model(arch, num_classes, input_shape, [0.0] * channels, [1.0] * channels,
                        dual_bn=dual, **(arch_kwargs or {}))
    if state.full:
        net = {k[len("net."):]: v for k, v in state.tensors.items() if k.startswith("net.")}
        extra = {k: v for k, v in state.tensors.items() if not k.startswith(("net.", "normalize."))}
        net.update(extra)  # reported as unexpected keys below
    else:
        net = dict(state.tensors)
    from_file = parse_normalization((state.mean, state.std), source="file") if state.mean is not None and state.std is not None else None
    if from_file is None:
        net, from_file = _pull_file_normalization(net, set(model.net.state_dict()))
    if key_filter is not None:
        net = key_filter(net, model.net)
    chosen = choose_normalization(normalization, from_file, *fallbacks)
    mean, std = chosen.values(channels)
    full = {
        "normalize.mean": torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1),
        "normalize.std": torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1),
        **{f"net.{k}": v for k, v in net.items()},
    }
    check_state_dict(model, full, where)
    model.load_state_dict(full)
    model.eval()
    return model, chosen


def check_size_options(arch: str, arch_kwargs: Mapping[str, Any], where: str) -> None:
    """Refuse architecture options over the bounds a model card has
    (``engine.checkpoints.card.MAX_SIZE_OPTIONS``), naming the option, before anything is built."""
    problem = size_option_problem(arch_kwargs)
    if problem:
        raise CheckpointError(f"cannot build {arch} for {where}: option {problem[0]!r} {problem[1]}")


def check_file_justifies(skeleton: torch.nn.Module, state: ImportedState, where: str) -> None:
    """Refuse a Classifier (built on the meta device) holding far more values than the file:
    never allocate more than a file justifies. Up to :data:`SIZE_SLACK` times the file's values
    (plus 1 M) are allowed, for buffers and known key conversions that add values."""
    needed = sum(t.numel() for t in skeleton.state_dict().values())
    held = sum(t.numel() for t in state.tensors.values())
    if needed > SIZE_SLACK * held + 1_000_000:
        raise CheckpointError(
            f"{skeleton.arch} with options {skeleton.arch_kwargs} "
            f"holds {needed:,} values but {where} has only {held:,}; refusing to build a model the file "
            "cannot fill (check the architecture and its options)"
        )


def import_checkpoint(
    src: str | os.PathLike,
    arch: str,
    dataset,
    fmt: str = "auto",
    allow_pickle: bool = False,
    arch_kwargs: dict | None = None,
    dest: str | os.PathLike | None = None,
    normalization: Any = None,
    display_name: str | None = None,
) -> LoadedCheckpoint:
    """Load a checkpoint made elsewhere as a RobustScope model (optionally saving it in our format).

    Args:
        src: ``.pt``/``.pth``/``.pth.tar``/``.ckpt``/``.bin``/``.safetensors`` file, or robustness'
            ``checkpoint.pt.best``/``checkpoint.pt.latest``.
        arch: architecture name (``engine.models.ARCHITECTURES``, ``torchvision:NAME``,
            ``timm:NAME``) whose keys the weights use; for ``fmt="robustness"`` also robustness'
            own names (``resnet18``, ``resnet50`` ...; see :func:`resolve_arch`).
        dataset: dataset name (``engine.data.get_spec``; gives classes, input shape, mean/std)
            or a ``DatasetSpec``.
        fmt: "auto" (detect), "plain", "torchvision", "timm", "robustness" or "robustbench"
            (a RobustBench state dict; for its cache layout use
            :func:`engine.checkpoints.robustbench.load_robustbench`).
        allow_pickle: DANGEROUS opt-in for files that need arbitrary unpickling (runs code from
            the file). Default: such files raise ``UnsafeCheckpointError`` and nothing runs.
        arch_kwargs: architecture options, e.g. ``{"depth": 20, "width": 2}``. Dual BN is
            detected from ``*.main.*``/``*.aux.*`` keys.
        dest: if given, also save the converted checkpoint there (stem or ``.safetensors``).
        normalization: the input normalisation, overriding the file's: ``"MEAN,..;STD,.."``,
            ``"none"``, ``{"mean": [...], "std": [...]}`` or ``(mean, std)`` (see
            :func:`parse_normalization`). Default: the file's own, else the architecture's
            documented one, else the dataset's.
        display_name: what to call the file in messages and in the card's ``source`` (an
            upload's own name, not the temporary file it was written to); default ``src``.

    Returns:
        :class:`LoadedCheckpoint` (model in eval mode on CPU; card from ``make_card`` with
        ``source`` = original file, format, sha256 and where the normalisation came from;
        ``path`` = ``src``, or the saved file).

    Raises:
        UnsafeCheckpointError: the file needs unpickling and ``allow_pickle`` is False.
        CheckpointError: unreadable file, an HTML page or a file of another kind (said so),
            weights that do not fit the architecture (missing/unexpected keys and shape mismatches
            named), a size option out of bounds or an architecture far larger than the file.
        InvalidParameterError: unknown format, architecture, option, dataset or normalisation.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise InvalidParameterError(f"unknown checkpoint format {fmt!r}; use auto, {', '.join(FORMATS)}")
    explicit = parse_normalization(normalization)
    spec = _dataset_spec(dataset)
    src = Path(src)
    label = display_name or str(src)
    contents, digest = read_weights(src, allow_pickle=allow_pickle, display_name=label)
    tensors = _container(contents, label)
    detected = detect_format(tensors) if fmt == "auto" else fmt
    arch = resolve_arch(arch, spec.name, detected)
    state = FORMATS[detected](tensors)
    dataset_norm = parse_normalization((spec.mean, spec.std), source="dataset")
    model, used = assemble_model(
        arch, spec.num_classes, spec.input_shape, state, arch_kwargs=arch_kwargs,
        normalization=explicit, fallbacks=(architecture_normalization(arch), dataset_norm), where=label,
    )
    card = make_card(
        model, spec.name, name=src.stem, description=f"imported from {Path(label).name} ({detected} format)",
        class_names=list(spec.class_names) if len(spec.class_names) == model.num_classes else None,
        training={"method": "unknown", "note": "imported: the training recipe is not recorded in the file"},
        source={"file": label, "format": detected, "sha256": digest, "normalization": used.source},
    )
    loaded = LoadedCheckpoint(model=model, card=card, path=src, sha256=digest)
    return save_imported(loaded, dest) if dest is not None else loaded


def default_stem(file_name: str) -> str:
    """A checkpoint name from a weights file's name: ``model.pth.tar`` -> ``model``,
    robustness' ``checkpoint.pt.best`` -> ``checkpoint-best``, ``x.safetensors`` -> ``x``."""
    from engine.fileio import slug

    name = Path(str(file_name)).name
    lower = name.lower()
    for suffix in (".pt.best", ".pt.latest"):
        if lower.endswith(suffix):
            return slug(name[: -len(suffix)] + "-" + suffix.rsplit(".", 1)[1])
    if lower.endswith(".pth.tar"):
        return slug(name[: -len(".pth.tar")])
    return slug(Path(name).stem if "." in name else name)


def is_weights_name(file_name: str) -> bool:
    """True for file names a checkpoint may have (``.safetensors``, ``.pt``, ``.pth``, ``.pth.tar``,
    ``.ckpt``, ``.bin``, ``.tar``, ``checkpoint.pt.best``/``.latest``)."""
    from engine.checkpoints.safe_io import SAFETENSORS_SUFFIX, TORCH_SUFFIXES

    lower = str(file_name).lower()
    return lower.endswith((SAFETENSORS_SUFFIX, *TORCH_SUFFIXES, *EXTRA_WEIGHT_NAMES))


def save_imported(loaded: LoadedCheckpoint, dest: str | os.PathLike) -> LoadedCheckpoint:
    """Save an imported checkpoint in our format at ``dest`` (stem or ``.safetensors``).

    Returns:
        The checkpoint as saved: same model, the card with ``name`` (the new stem) and
        ``weights_sha256``, ``path`` = the new ``.safetensors`` file, its sha256.
    """
    name = checkpoint_stem(Path(dest)).name
    path = save_checkpoint(loaded.model, loaded.card.replace(name=name), dest)
    card = read_card(path.with_suffix(".json"))
    return LoadedCheckpoint(model=loaded.model, card=card, path=path, sha256=card.weights_sha256)
