"""The typed requests of the analyses (frozen dataclasses, JSON round trip, validated).

A request names everything that decides the numbers: the models (path + sha256 + BN branch),
the dataset and every parameter. It is the result key (``request.key()``), the job payload and
the permalink target. Execution choices that do not change the numbers (device, progress, the
size of the pieces a forward pass is cut into) are not part of it.

Names that come from torch-side registries (datasets, distortions, attacks, layers) are checked
when the analysis runs (before any image is read) and when a job is submitted; everything else
is checked here, without importing torch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.analysis.base import ModelRef, Request, check_choice, check_float, check_int, check_names
from engine.errors import InvalidParameterError

#: the same names as ``engine.similarity.KERNELS`` / ``POOLINGS`` (checked by the tests)
CKA_KERNELS = ("linear", "rbf")
CKA_POOLINGS = ("flatten", "avg")
SPLITS = ("test", "train")
#: most images one request may name (bounds time, not memory: everything is streamed)
MAX_IMAGES = 1_000_000
MAX_BATCH = 4096
#: the severities of ``engine.data.distortions.SEVERITIES``
SEVERITY_LEVELS = (1, 2, 3, 4, 5)
#: the bounds of ``engine.featvis.render`` (``MAX_VIS_TARGETS``, ``MAX_VIS_STEPS``, ``MAX_VIS_SIDE``,
#: ``MAX_VIS_PIXELS``; checked by the tests): targets per request (top-k too), optimisation steps,
#: image side and pixels over all targets of one visualisation
MAX_TARGETS = 64
MAX_VIS_STEPS = 10_000
MAX_VIS_SIDE = 1024
MAX_VIS_PIXELS = 2 ** 24


def _dataset(name) -> str:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise InvalidParameterError(f"dataset must be a dataset name, got {name!r}")
    return name


@dataclass(frozen=True)
class CKARequest(Request):
    """Minibatch CKA maps A×A, B×B and A×B (``engine.similarity.compare_models``).

    Attributes:
        a, b: the two models (``b`` may be ``a`` with the other BN branch).
        dataset, split: the images (the first ``n`` of the split, in order).
        n: images used (>= 4); batch_size: images per minibatch of the estimator (>= 4).
        layers_a, layers_b: layer names (None: the model's default layers).
        kernel: "linear" or "rbf"; sigma_fraction: RBF bandwidth (None: 0.8).
        pooling: "flatten" or "avg".
        inputs: "clean", or "adv" (crafted by ``attack`` with ``eps``/``steps`` on ``craft_on``).
    """

    kind = "cka"
    MODEL_FIELDS = ("a", "b")

    a: ModelRef
    b: ModelRef
    dataset: str
    split: str = "test"
    n: int = 2000
    batch_size: int = 200
    layers_a: tuple[str, ...] | None = None
    layers_b: tuple[str, ...] | None = None
    kernel: str = "linear"
    sigma_fraction: float | None = None
    pooling: str = "flatten"
    inputs: str = "clean"
    attack: str = "pgd"
    eps: float | None = None
    steps: int | None = None
    craft_on: str = "a"

    def _check(self) -> None:
        _dataset(self.dataset)
        check_choice("split", self.split, SPLITS)
        check_int("n", self.n, 4, MAX_IMAGES)
        check_int("batch size", self.batch_size, 4, MAX_BATCH)
        check_names("layers_a", self.layers_a)
        check_names("layers_b", self.layers_b)
        check_choice("kernel", self.kernel, CKA_KERNELS)
        check_float("sigma_fraction", self.sigma_fraction, 1e-6, 1e6)
        check_choice("pooling", self.pooling, CKA_POOLINGS)
        check_choice("inputs", self.inputs, ("clean", "adv"))
        if not isinstance(self.attack, str) or not self.attack:
            raise InvalidParameterError(f"attack must be an attack name, got {self.attack!r}")
        check_float("eps", self.eps, 0.0, 1e4)
        if self.steps is not None:
            check_int("steps", self.steps, 1, 10_000)
        check_choice("craft_on", self.craft_on, ("a", "b"))

    def describe(self) -> str:
        inputs = "clean" if self.inputs == "clean" else f"{self.attack} on {self.craft_on.upper()}"
        return f"{super().describe()} · {self.dataset} · {self.n} images · {inputs}"


@dataclass(frozen=True)
class OODRequest(Request):
    """Accuracy under distortions x severities (+ ``shapes`` image sets) and shape bias.

    Attributes:
        models: one to eight models, evaluated on the same distorted images.
        dataset: test split, first ``n`` images; batch_size also sets the distortion seeds
            (batch b uses ``seed + b``), so it is part of the request.
        distortions: names (None: all of ``engine.data.distortions.DISTORTIONS``).
        severities: subset of 1..5.
        shape_bias: also score shape bias on cue-conflict images (``shapes`` only).
    """

    kind = "ood"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    n: int = 500
    batch_size: int = 128
    seed: int = 0
    distortions: tuple[str, ...] | None = None
    severities: tuple[int, ...] = SEVERITY_LEVELS
    shape_bias: bool = True

    def _check(self) -> None:
        if not isinstance(self.models, tuple) or not 1 <= len(self.models) <= 8:
            raise InvalidParameterError("models must list one to eight checkpoints")
        _dataset(self.dataset)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)
        check_int("seed", self.seed, 0, 2**31 - 1)
        check_names("distortions", self.distortions)
        if not isinstance(self.severities, tuple) or not self.severities or \
                any(s not in SEVERITY_LEVELS or isinstance(s, bool) for s in self.severities):
            raise InvalidParameterError(f"every severity must be one of 1..5 (at least one), got {self.severities!r}")
        if not isinstance(self.shape_bias, bool):
            raise InvalidParameterError(f"shape_bias must be true or false, got {self.shape_bias!r}")

    def describe(self) -> str:
        return f"{super().describe()} · {self.dataset} · {self.n} images"


@dataclass(frozen=True)
class TopKRequest(Request):
    """Feature top-k: the held-out images maximising units / random directions of one layer.

    Attributes:
        model: the model; layer: dotted layer name.
        targets: ``(("unit", i), ("direction", seed), ...)``: a unit eᵢ or a seeded random
            unit-norm direction (Szegedy et al. 2013), at most 64.
        position: ``(y, x)``: score one neuron per channel instead of the spatial mean.
        dataset, n, sample_seed: ``n`` test images drawn with ``sample_seed`` (a generated set is
            generated at size ``n``), as ``python -m engine featvis`` and the Features page do.
        k: images per target (1 <= k <= n).
        batch_size: images per forward pass (memory only; the ranking does not depend on it).
    """

    kind = "featvis_topk"
    MODEL_FIELDS = ("model",)

    model: ModelRef
    layer: str
    targets: tuple[tuple[str, int], ...]
    dataset: str
    position: tuple[int, int] | None = None
    n: int = 1000
    sample_seed: int = 0
    k: int = 9
    batch_size: int = 32

    def _check(self) -> None:
        _check_layer_targets(self.layer, self.targets, self.position)
        _dataset(self.dataset)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("sample_seed", self.sample_seed, 0, 2**31 - 1)
        check_int("k", self.k, 1, self.n)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        return f"{super().describe()} · {self.layer} · top-{self.k} of {self.n} {self.dataset} images"


def _check_layer_targets(layer, targets, position) -> None:
    """A layer name, 1 to :data:`MAX_TARGETS` ``("unit", i)`` / ``("direction", seed)`` targets and
    an optional ``(y, x)`` position (the feature requests' shared fields)."""
    if not isinstance(layer, str) or not layer:
        raise InvalidParameterError(f"layer must be a layer name, got {layer!r}")
    if not isinstance(targets, tuple) or not 1 <= len(targets) <= MAX_TARGETS:
        raise InvalidParameterError(f"targets must list one to {MAX_TARGETS} (kind, value) pairs")
    for target in targets:
        if not (isinstance(target, tuple) and len(target) == 2 and target[0] in ("unit", "direction")):
            raise InvalidParameterError(f"a target is (\"unit\", i) or (\"direction\", seed), got {target!r}")
        check_int(f"target {target[0]}", target[1], 0, 2**31 - 1)
    if position is not None:
        if not (isinstance(position, tuple) and len(position) == 2):
            raise InvalidParameterError(f"position must be (y, x), got {position!r}")
        for v in position:
            check_int("position", v, 0, 100_000)


def _check_positive(name: str, value, high: float) -> None:
    """``value`` is a finite number in (0, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= high:
        raise InvalidParameterError(f"{name} must be a number in (0, {high:g}], got {value!r}")


def check_vis_pixels(targets: int, height: int, width: int) -> None:
    """Refuse a visualisation of more than :data:`MAX_VIS_PIXELS` pixels over all its targets."""
    if targets * height * width > MAX_VIS_PIXELS:
        raise InvalidParameterError(
            f"{targets} targets of {height}×{width} pixels are {targets * height * width:,} pixels in one "
            f"visualisation; the limit is {MAX_VIS_PIXELS:,}: visualise fewer targets or smaller images")


@dataclass(frozen=True)
class FeatVisRequest(Request):
    """Feature visualisation: lucent's optimised image of each unit / random direction of one layer
    (``engine.featvis.visualise``), every target with the same parameterisation and seed, so units
    and directions compare (Szegedy et al. 2013; Olah et al. 2017).

    Attributes:
        model: the model; layer: dotted layer name.
        targets: ``(("unit", i), ("direction", seed), ...)`` as in :class:`TopKRequest`, at most
            :data:`MAX_TARGETS`; position: ``(y, x)``: one neuron per channel instead of the
            spatial mean.
        steps: Adam steps on the image parameters (1 to :data:`MAX_VIS_STEPS`); lr: its learning
            rate, in (0, 10].
        seed: seeds the starting image and the random transforms.
        size: ``(height, width)`` of the images (None: the model's input size), at most
            :data:`MAX_VIS_SIDE` per side and :data:`MAX_VIS_PIXELS` pixels over all targets.
        fft: Fourier (True) or pixel parameterisation; decorrelate: lucent's colour
            decorrelation (RGB models only); transforms: lucent's pad/jitter/scale/rotate
            robustness transforms; sd: standard deviation of the starting parameters, in (0, 1].
    """

    kind = "featvis"
    MODEL_FIELDS = ("model",)

    model: ModelRef
    layer: str
    targets: tuple[tuple[str, int], ...]
    position: tuple[int, int] | None = None
    steps: int = 128
    lr: float = 0.05
    seed: int = 0
    size: tuple[int, int] | None = None
    fft: bool = True
    decorrelate: bool = True
    transforms: bool = True
    sd: float = 0.01

    def _check(self) -> None:
        _check_layer_targets(self.layer, self.targets, self.position)
        check_int("steps", self.steps, 1, MAX_VIS_STEPS)
        _check_positive("lr", self.lr, 10.0)
        check_int("seed", self.seed, 0, 2**31 - 1)
        if self.size is not None:
            if not (isinstance(self.size, tuple) and len(self.size) == 2):
                raise InvalidParameterError(f"size must be (height, width), got {self.size!r}")
            for side in self.size:
                check_int("image side", side, 1, MAX_VIS_SIDE)
            check_vis_pixels(len(self.targets), *self.size)
        for name in ("fft", "decorrelate", "transforms"):
            _check_bool(name, getattr(self, name), optional=False)
        _check_positive("sd", self.sd, 1.0)

    def config(self) -> dict:
        """The ``engine.featvis.VisConfig`` fields (steps, lr, seed, fft, decorrelate, transforms, sd)."""
        return {"steps": self.steps, "lr": self.lr, "seed": self.seed, "fft": self.fft,
                "decorrelate": self.decorrelate, "transforms": self.transforms, "sd": self.sd}

    def describe(self) -> str:
        return (f"{super().describe()} · {self.layer} · lucent, {len(self.targets)} target(s) · "
                f"{self.steps} steps, seed {self.seed}")


#: the names of ``engine.attribution.METHODS`` / ``REDUCTIONS`` are checked when the grid runs
_PARAM_TYPES = (bool, int, float, str)


@dataclass(frozen=True)
class SaliencyGridRequest(Request):
    """Attribution maps of one test image, every method for every model (``attribution_grid``).

    Attributes:
        models: one to eight models; dataset, index: the image (test split).
        target: the class attributed (None: each model's own prediction).
        methods: ``engine.attribution.METHODS`` names, in display order.
        params: ``((method, name, value), ...)`` overriding a method's defaults.
        reduce, percentile: the heatmap's channel reduction and clipping percentile.
    """

    kind = "saliency_grid"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    index: int = 0
    target: int | None = None
    methods: tuple[str, ...] = ("saliency",)
    params: tuple[tuple[str, str, object], ...] = ()
    reduce: str = "abs_sum"
    percentile: float = 99.0

    def _check(self) -> None:
        if not isinstance(self.models, tuple) or not 1 <= len(self.models) <= 8:
            raise InvalidParameterError("models must list one to eight checkpoints")
        _dataset(self.dataset)
        check_int("index", self.index, 0, 100_000_000)
        if self.target is not None:
            check_int("target", self.target, 0, 1_000_000)
        check_names("methods", self.methods, optional=False, limit=32)
        if not isinstance(self.params, tuple) or len(self.params) > 256:
            raise InvalidParameterError("params must be a list of (method, name, value) triples")
        for item in self.params:
            if not (isinstance(item, tuple) and len(item) == 3 and all(isinstance(v, str) for v in item[:2])
                    and isinstance(item[2], _PARAM_TYPES)):
                raise InvalidParameterError(f"a parameter is (method, name, value), got {item!r}")
            if item[0] not in self.methods:
                raise InvalidParameterError(f"parameter {item[0]}.{item[1]} is for a method not chosen")
        if not isinstance(self.reduce, str) or not self.reduce:
            raise InvalidParameterError(f"reduce must be a reduction name, got {self.reduce!r}")
        check_float("percentile", self.percentile, 50.0, 100.0, optional=False)

    def method_params(self) -> dict[str, dict]:
        """``{method: {name: value}}`` in method order."""
        out: dict[str, dict] = {m: {} for m in self.methods}
        for method, name, value in self.params:
            out[method][name] = value
        return out

    def describe(self) -> str:
        return f"{super().describe()} · {self.dataset} #{self.index} · {', '.join(self.methods)}"


#: the names of ``engine.attacks.STEPS`` (threat models; checked by the tests)
NORMS = ("linf", "l2")
#: ``engine.attacks.AUTOATTACK_FAMILY``: the attacks evaluated attack by attack (checked by the tests)
AUTOATTACK_FAMILY = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square", "autoattack")
#: ``engine.attacks.AUTOATTACK_VERSIONS`` and "custom" (checked by the tests)
AUTOATTACK_VERSIONS = ("standard", "plus", "rand", "custom")
#: most ε-sweep points of a robustness report
MAX_SWEEP = 32
_MAX_SEED = 2**63 - 1
#: evaluate's attack parameters: those of every attack, of the AutoAttack family only, of the others only
_ATTACK_PARAMS = ("norm", "eps", "steps", "restarts")
_FAMILY_PARAMS = ("version", "attacks", "queries", "n_target_classes")
_OTHER_PARAMS = ("alpha", "random_start", "targeted")


def _check_bool(name: str, value, optional: bool = True) -> None:
    if not (isinstance(value, bool) or (optional and value is None)):
        raise InvalidParameterError(f"{name} must be true or false, got {value!r}")


@dataclass(frozen=True)
class EvaluateRequest(Request):
    """Clean accuracy of one model on a split, and robust accuracy under one attack
    (``python -m engine evaluate``).

    Clean accuracy is ``engine.evaluation.accuracy`` over the first ``n`` images; the attack runs
    on the same images: ``engine.attacks.evaluate_autoattack`` (attack by attack) for the AutoAttack
    family, ``engine.attacks.robust_accuracy`` for the others. Torch's RNG is seeded with ``seed``
    around the attack, so random starts (PGD) repeat and the stored figure is the request's.

    Attributes:
        model: the model (BN branch included); dataset, split: the images.
        n: the first ``n`` images (None: the whole split).
        batch_size: images per pass (the attacks' random draws are per batch, so it is part of
            the request).
        attack: an ``engine.attacks.ATTACKS`` name, or None for clean accuracy only.
        norm, eps, steps, restarts: the attack's threat model and effort (None: the attack's
            per-dataset default, ``engine.attacks.make_attack``).
        alpha, random_start, targeted: PGD-style options (not for the AutoAttack family).
        version, attacks, queries, n_target_classes: AutoAttack's version, a ``custom`` sequence,
            Square's query budget and APGD-T/FAB-T's target count (AutoAttack family only).
        seed: seeds the attack (the family's own seed) and torch's RNG around it.
    """

    kind = "robust_accuracy"
    MODEL_FIELDS = ("model",)

    model: ModelRef
    dataset: str
    split: str = "test"
    n: int | None = None
    batch_size: int = 256
    attack: str | None = None
    norm: str | None = None
    eps: float | None = None
    steps: int | None = None
    restarts: int | None = None
    alpha: float | None = None
    random_start: bool | None = None
    targeted: bool | None = None
    version: str | None = None
    attacks: tuple[str, ...] | None = None
    queries: int | None = None
    n_target_classes: int | None = None
    seed: int = 0

    def _check(self) -> None:
        _dataset(self.dataset)
        check_choice("split", self.split, SPLITS)
        if self.n is not None:
            check_int("n", self.n, 1, MAX_IMAGES)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)
        if self.attack is not None and (not isinstance(self.attack, str) or not self.attack):
            raise InvalidParameterError(f"attack must be an attack name, got {self.attack!r}")
        if self.norm is not None:
            check_choice("norm", self.norm, NORMS)
        check_float("eps", self.eps, 0.0, 1e4)
        check_float("alpha", self.alpha, 0.0, 1e4)
        for name, high in (("steps", 10_000), ("restarts", 1000), ("queries", 10_000_000), ("n_target_classes", 999)):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), 1, high)
        _check_bool("random_start", self.random_start)
        _check_bool("targeted", self.targeted)
        if self.version is not None:
            check_choice("version", self.version, AUTOATTACK_VERSIONS)
        check_names("attacks", self.attacks, limit=16)
        check_int("seed", self.seed, 0, _MAX_SEED)
        self._check_params_fit_the_attack()

    def _check_params_fit_the_attack(self) -> None:
        """Refuse parameters the chosen attack does not take (they would split the result key)."""
        given = [p for p in (*_ATTACK_PARAMS, *_FAMILY_PARAMS, *_OTHER_PARAMS) if getattr(self, p) is not None]
        if self.attack is None and given:
            raise InvalidParameterError(f"attack parameters ({', '.join(given)}) need an attack")
        foreign = _OTHER_PARAMS if self.family else _FAMILY_PARAMS
        wrong = [p for p in given if p in foreign]
        if self.attack is not None and wrong:
            what = ("its step size is automatic and APGD-T/FAB-T choose their own targets" if self.family
                    else "they are the AutoAttack family's")
            raise InvalidParameterError(f"{self.attack} takes no {', '.join(wrong)}: {what}")

    @property
    def family(self) -> bool:
        """True for the AutoAttack family (evaluated attack by attack)."""
        return self.attack in AUTOATTACK_FAMILY

    def attack_params(self) -> dict:
        """The attack parameters given (``engine.attacks.make_attack`` keywords); the family's seed too."""
        names = _ATTACK_PARAMS + (_FAMILY_PARAMS if self.family else _OTHER_PARAMS)
        params = {p: getattr(self, p) for p in names if getattr(self, p) is not None}
        if self.family:
            params["seed"] = self.seed
        return params

    def describe(self) -> str:
        images = "all" if self.n is None else self.n
        what = f"under {self.attack}" if self.attack else "clean"
        return f"{super().describe()} · {self.dataset} {self.split} · {images} images · {what}"


@dataclass(frozen=True)
class ReportRequest(Request):
    """A checkpoint's robustness report (``engine.attacks.report.robustness_report``,
    ``python -m engine report``): clean, PGD, AutoAttack attack by attack, the gradient-masking
    checks and an ε-sweep on the first ``n`` test images.

    Attributes:
        model: the model; dataset: its test split.
        eps, norm: the threat model (resolved from the card by the caller, so it is in the key).
        n: images (>= 1); batch_size: images per pass (the attacks' draws are per batch).
        version: AutoAttack's version; seed: seeds every attack (and torch's RNG, for PGD).
        pgd_steps: PGD's steps; square_queries: AutoAttack's Square budget.
        sweep: the ε-sweep's points (None: ``engine.attacks.report.SWEEP_FACTORS`` × ε).
        masking: run the gradient-masking checks; source: () or one standard model to transfer
            from (the white-box ≥ transfer check).
    """

    kind = "robustness_report"
    MODEL_FIELDS = ("model", "source")

    model: ModelRef
    dataset: str
    eps: float
    norm: str = "linf"
    n: int = 500
    batch_size: int = 256
    version: str = "standard"
    seed: int = 0
    pgd_steps: int = 40
    square_queries: int = 5000
    sweep: tuple[float, ...] | None = None
    masking: bool = True
    source: tuple[ModelRef, ...] = ()

    def _check(self) -> None:
        _dataset(self.dataset)
        check_float("eps", self.eps, 0.0, 1e4, optional=False)
        check_choice("norm", self.norm, NORMS)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)
        check_choice("version", self.version, AUTOATTACK_VERSIONS[:-1])
        check_int("seed", self.seed, 0, _MAX_SEED)
        check_int("pgd_steps", self.pgd_steps, 1, 10_000)
        check_int("square_queries", self.square_queries, 1, 10_000_000)
        if self.sweep is not None:
            if not isinstance(self.sweep, tuple) or not 1 <= len(self.sweep) <= MAX_SWEEP:
                raise InvalidParameterError(f"sweep takes 1 to {MAX_SWEEP} ε values, got {self.sweep!r}")
            for value in self.sweep:
                check_float("sweep ε", value, 0.0, 1e4, optional=False)
        _check_bool("masking", self.masking, optional=False)
        if not isinstance(self.source, tuple) or len(self.source) > 1:
            raise InvalidParameterError(f"source is () or one model to transfer from, got {self.source!r}")

    def describe(self) -> str:
        threat = f"{'ℓ∞' if self.norm == 'linf' else 'ℓ₂'} ε={self.eps:.4g}"
        return f"{self.kind}: {self.model.name} · {self.dataset} · {self.n} images · {threat}"


@dataclass(frozen=True)
class UnitsRequest(Request):
    """Unit statistics (Agarwal & Chen 2020): per-unit roughness, high-frequency share and label
    complexity of layers, for several models on the same first ``n`` test images
    (``engine.generalisation.compare_units``, streamed).

    Attributes:
        models: one to eight models; dataset: the test split's first ``n`` images.
        layers: dotted layer names every model has (None: each model's default layers).
        top_k: images per unit for the label-complexity statistics (1 <= top_k <= n).
        batch_size: images per forward pass (memory only; the statistics do not depend on it
            beyond float32 rounding).
    """

    kind = "units"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    n: int = 500
    layers: tuple[str, ...] | None = None
    top_k: int = 10
    batch_size: int = 128

    def _check(self) -> None:
        if not isinstance(self.models, tuple) or not 1 <= len(self.models) <= 8:
            raise InvalidParameterError("models must list one to eight checkpoints")
        _dataset(self.dataset)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_names("layers", self.layers)
        check_int("top_k", self.top_k, 1, self.n)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        return f"{super().describe()} · {self.dataset} · {self.n} images · top-{self.top_k}"


# ------------------------------------------------------------------------------- AdvProp, CKA across epochs
#: most checkpoints an AdvProp comparison sets beside the AdvProp model (a standard and a robust one)
MAX_PEERS = 2


@dataclass(frozen=True)
class AdvPropRequest(Request):
    """AdvProp's two BatchNorm branches beside a standard and a robust model (Xie et al. 2019,
    ``engine.generalisation.advprop.compare_branches``): clean, PGD and mean distorted accuracy on the
    first ``n`` test images (``python -m engine advprop``, the Models page).

    Attributes:
        model: the AdvProp (dual-BN) checkpoint, named by its main branch; both branches are evaluated.
        peers: the standard and/or robust checkpoints of its dataset it is compared with, at most
            :data:`MAX_PEERS` (chosen when the request is made: ``engine.analysis.advprop.advprop_request``).
        dataset: the test split the first ``n`` images come from.
        eps, steps: PGD's ε (None: the dataset's usual one) and steps; torch's RNG is seeded around
            the comparison, so PGD's random starts repeat.
        severity: the distortions' severity; batch_size: images per pass (PGD draws per batch).
    """

    kind = "advprop"
    MODEL_FIELDS = ("model", "peers")

    model: ModelRef
    dataset: str
    peers: tuple[ModelRef, ...] = ()
    n: int = 500
    eps: float | None = None
    steps: int = 20
    severity: int = 3
    batch_size: int = 128

    def _check(self) -> None:
        if self.model.branch != "main":
            raise InvalidParameterError("name the AdvProp checkpoint by its main branch: both branches are evaluated")
        if not isinstance(self.peers, tuple) or len(self.peers) > MAX_PEERS:
            raise InvalidParameterError(f"peers lists at most {MAX_PEERS} checkpoints, got {self.peers!r}")
        _dataset(self.dataset)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_float("eps", self.eps, 0.0, 1e4)
        check_int("steps", self.steps, 1, 10_000)
        check_int("severity", self.severity, min(SEVERITY_LEVELS), max(SEVERITY_LEVELS))
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        peers = ", ".join(ref.name for ref in self.peers) or "no peers"
        return (f"{self.kind}: {self.model.name} (main and aux BN) vs {peers} · {self.dataset} · {self.n} images · "
                f"PGD-{self.steps}")


#: the same names as ``engine.similarity.structure.REFERENCES`` (checked by the tests)
CKA_REFERENCES = ("final", "consecutive")
#: most kept snapshots of one run a request may name
MAX_SNAPSHOTS = 1000


def _check_run(name: str, snapshots, epochs, optional: bool = False) -> None:
    """Two to :data:`MAX_SNAPSHOTS` snapshots of one run with their epochs, increasing (``optional``:
    or none at all)."""
    if optional and snapshots == () and epochs == ():
        return
    if not isinstance(snapshots, tuple) or not 2 <= len(snapshots) <= MAX_SNAPSHOTS:
        raise InvalidParameterError(f"{name} must list 2 to {MAX_SNAPSHOTS} epoch snapshots of a run")
    if not isinstance(epochs, tuple) or len(epochs) != len(snapshots):
        raise InvalidParameterError(f"epochs_{name[-1]} must give one epoch per snapshot of {name}, got {epochs!r}")
    for epoch in epochs:
        check_int("epoch", epoch, 0, 1_000_000)
    if list(epochs) != sorted(set(epochs)):
        raise InvalidParameterError(f"the epochs of {name} must increase, got {list(epochs)}")


@dataclass(frozen=True)
class CKARunRequest(Request):
    """Each layer's CKA across the kept epoch snapshots of one or two training runs (Cianfarani et
    al. 2022, ``engine.similarity.structure.cka_across_epochs``, run by run): ``python -m engine
    cka --run``, the Representations page's "Across epochs".

    Attributes:
        run_a, run_b: the snapshots of each run (``run_b`` empty for one run), two or more each; a
            snapshot trained again or replaced has a new sha256, so a new key.
        epochs_a, epochs_b: their epochs, increasing, in the same order.
        reference: "final" (each epoch vs the last) or "consecutive" (each epoch vs the one before).
        dataset, split, n, batch_size, kernel, pooling: as for :class:`CKARequest` (the first ``n``
            images of the split; more than the split holds uses the whole split).
        layers_a, layers_b: each run's layers (None: its final snapshot's default layers).
    """

    kind = "cka_epochs"
    MODEL_FIELDS = ("run_a", "run_b")

    run_a: tuple[ModelRef, ...]
    epochs_a: tuple[int, ...]
    dataset: str
    run_b: tuple[ModelRef, ...] = ()
    epochs_b: tuple[int, ...] = ()
    reference: str = "final"
    split: str = "test"
    n: int = 2000
    batch_size: int = 200
    layers_a: tuple[str, ...] | None = None
    layers_b: tuple[str, ...] | None = None
    kernel: str = "linear"
    pooling: str = "flatten"

    def _check(self) -> None:
        _check_run("run_a", self.run_a, self.epochs_a)
        _check_run("run_b", self.run_b, self.epochs_b, optional=True)
        check_choice("reference", self.reference, CKA_REFERENCES)
        _dataset(self.dataset)
        check_choice("split", self.split, SPLITS)
        check_int("n", self.n, 4, MAX_IMAGES)
        check_int("batch size", self.batch_size, 4, MAX_BATCH)
        check_names("layers_a", self.layers_a)
        check_names("layers_b", self.layers_b)
        if not self.run_b and self.layers_b is not None:
            raise InvalidParameterError("layers_b needs a second run (run_b)")
        check_choice("kernel", self.kernel, CKA_KERNELS)
        check_choice("pooling", self.pooling, CKA_POOLINGS)

    def runs(self) -> tuple[tuple[tuple[ModelRef, ...], tuple[int, ...], tuple[str, ...] | None], ...]:
        """``((snapshots, epochs, layers), ...)`` of each run, in order."""
        runs = ((self.run_a, self.epochs_a, self.layers_a), (self.run_b, self.epochs_b, self.layers_b))
        return tuple(run for run in runs if run[0])

    def folders(self) -> tuple[str, ...]:
        """Each run's folder (its snapshots are ``<folder>/epoch-<k>/model``)."""
        return tuple(str(Path(snapshots[-1].path).parent.parent) for snapshots, _, _ in self.runs())

    def describe(self) -> str:
        names = " vs ".join(f"{Path(folder).parent.name}/{Path(folder).name}" for folder in self.folders())
        return f"{self.kind}: {names} · each epoch vs the {self.reference} one · {self.dataset} · {self.n} images"


# ------------------------------------------------------------------------------- Attack Lab
#: the Attack Lab's model slots, in request order: the first model is A, the second B ...
SLOTS = "ABCDEFGH"
_ATTACK_PARAM_TYPES = (bool, int, float, str)


def attack_params(params: dict | None) -> tuple[tuple[str, object], ...]:
    """An attack's ``make_attack`` keywords as a request holds them: ``((name, value), ...)``
    sorted by name, None values dropped (so equal settings give equal result keys)."""
    return tuple(sorted((k, v) for k, v in (params or {}).items() if v is not None))


def _check_slots(models, low: int = 1) -> None:
    if not isinstance(models, tuple) or not low <= len(models) <= len(SLOTS):
        raise InvalidParameterError(f"models must list {low} to {len(SLOTS)} checkpoints")


@dataclass(frozen=True)
class _AttackChoice:
    """What the Attack Lab's requests share: the models (slots A, B, ...) on a dataset, an
    ``engine.attacks.ATTACKS`` name (checked when the analysis runs), its parameters as
    :func:`attack_params` pairs (unset: the attack's per-dataset default) and (each request's
    ``seed`` field) the seed of torch's RNG around the attack (random starts repeat)."""

    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    attack: str = "pgd"
    params: tuple[tuple[str, object], ...] = ()

    def _check_models_and_attack(self, refused: tuple[str, ...] = ()) -> None:
        """Check the models, the dataset and the attack (``refused``: parameters it sets itself)."""
        _check_slots(self.models)
        _dataset(self.dataset)
        self._check_attack(refused)

    def _check_attack(self, refused: tuple[str, ...] = ()) -> None:
        if not isinstance(self.attack, str) or not self.attack:
            raise InvalidParameterError(f"attack must be an attack name, got {self.attack!r}")
        if not isinstance(self.params, tuple) or len(self.params) > 64:
            raise InvalidParameterError(f"params must be a list of (name, value) pairs, got {self.params!r}")
        for item in self.params:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and item[0]
                    and isinstance(item[1], _ATTACK_PARAM_TYPES)):
                raise InvalidParameterError(f"an attack parameter is (name, value), got {item!r}")
            if isinstance(item[1], float):
                check_float(item[0], item[1], -1e12, 1e12)
        names = [name for name, _ in self.params]
        if names != sorted(set(names)):
            raise InvalidParameterError(f"attack parameters must be sorted by name, each once, got {names}")
        given = [name for name in refused if name in names]
        if given:
            raise InvalidParameterError(f"{self.kind} sets {', '.join(given)} itself; leave it out of params")
        check_int("seed", self.seed, 0, _MAX_SEED)

    def attack_kwargs(self) -> dict:
        """The attack's parameters as ``engine.attacks.make_attack`` keywords."""
        return dict(self.params)

    def slots(self) -> tuple[str, ...]:
        """The models' slot names (:data:`SLOTS`), in request order."""
        return tuple(SLOTS[:len(self.models)])


@dataclass(frozen=True)
class CraftRequest(_AttackChoice, Request):
    """Craft-and-compare (``engine.attacks.craft_and_compare``): adversarial examples crafted on one
    model, scored clean and adversarial by every model (the Attack Lab's Craft, ``python -m engine
    attack``).

    Attributes:
        models: one to eight models (slots A, B, ...); source: the position of the one attacked.
        dataset, split: the images: ``n`` from index ``offset`` on, or (``sample_seed``) ``n``
            seeded random ones (``engine.data.take``; then ``offset`` is 0).
        attack, params: the attack and its :func:`attack_params`; target: the class of a targeted
            attack (None: its own choice, e.g. the clean runner-up).
        batch_size: images per pass; seed: torch's RNG around the attack.
    """

    kind = "craft"

    source: int = 0
    split: str = "test"
    n: int = 1
    offset: int = 0
    sample_seed: int | None = None
    target: int | None = None
    batch_size: int = 128
    seed: int = 0

    def _check(self) -> None:
        self._check_models_and_attack()
        check_int("source", self.source, 0, len(self.models) - 1)
        check_choice("split", self.split, SPLITS)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("offset", self.offset, 0, 100_000_000)
        if self.sample_seed is not None:
            check_int("sample_seed", self.sample_seed, 0, 2**31 - 1)
            if self.offset:
                raise InvalidParameterError("a seeded sample (sample_seed) starts at offset 0")
        if self.target is not None:
            check_int("target", self.target, 0, 1_000_000)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        images = (f"{self.n} seeded images" if self.sample_seed is not None else
                  f"#{self.offset}" if self.n == 1 else f"images {self.offset}–{self.offset + self.n - 1}")
        return f"{super().describe()} · {self.attack} on {self.slots()[self.source]} · {self.dataset} {images}"


@dataclass(frozen=True)
class EpsSweepRequest(_AttackChoice, Request):
    """Robust accuracy of each model at each ε (``engine.attacks.eps_sweep``) on the first ``n``
    test images: the Attack Lab's ε-sweep, ``python -m engine sweep``.

    Attributes:
        models: one to eight models (slots A, B, ...); dataset: its test split.
        eps: the ε values, 1 to :data:`MAX_SWEEP` (bounded attacks rerun at each; minimal-norm
            ones run once and count an image robust at ε when nothing was found within ε).
        attack, params: the attack and its :func:`attack_params` (no ``eps``).
        batch_size: images per pass (the attacks' draws are per batch); seed: torch's RNG.
    """

    kind = "eps_sweep"

    eps: tuple[float, ...] = field(kw_only=True)  # required: keyword-only, as it follows defaults
    n: int = 64
    batch_size: int = 128
    seed: int = 0

    def _check(self) -> None:
        self._check_models_and_attack(refused=("eps",))
        if not isinstance(self.eps, tuple) or not 1 <= len(self.eps) <= MAX_SWEEP:
            raise InvalidParameterError(f"eps takes 1 to {MAX_SWEEP} values, got {self.eps!r}")
        for value in self.eps:
            check_float("ε", value, 0.0, 1e4, optional=False)
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        return f"{super().describe()} · {self.attack} at {len(self.eps)} ε · {self.dataset} · {self.n} images"


@dataclass(frozen=True)
class TransferRequest(_AttackChoice, Request):
    """The transfer matrix (``engine.attacks.transfer_matrix``, Szegedy et al. 2013): the attack
    crafted on every model (rows) and evaluated on every model (columns), on the first ``n`` test
    images: the Attack Lab's Transfer, ``python -m engine transfer``.

    Attributes:
        models: one to eight models (slots A, B, ...); dataset: its test split.
        attack, params: the attack and its :func:`attack_params`.
        batch_size: images per pass; seed: torch's RNG around the attacks.
    """

    kind = "transfer"

    n: int = 64
    batch_size: int = 128
    seed: int = 0

    def _check(self) -> None:
        self._check_models_and_attack()
        check_int("n", self.n, 1, MAX_IMAGES)
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        return f"{super().describe()} · {self.attack} · {self.dataset} · {self.n} images"


#: ``engine.attribution.MODES`` / ``REPLACEMENTS`` / ``DEFAULT_FRACTIONS`` and ``ALIGNMENT_DATASETS``
#: (checked by the tests)
CURVE_MODES = ("keep", "remove")
CURVE_REPLACEMENTS = ("mean", "blur")
CURVE_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
ALIGNMENT_DATASETS = ("shapes", "mnist", "fashion-mnist")
#: most held-out images one ε-vs-interpretability measurement uses (every model attributes each)
MAX_ALIGNMENT_IMAGES = 10_000
#: the retraining defaults of ``python -m engine saliency --retrain`` (epochs, training images)
RETRAIN_EPOCHS, RETRAIN_N = 4, 2048


def _check_models(models, limit: int = 8) -> None:
    if not isinstance(models, tuple) or not 1 <= len(models) <= limit:
        raise InvalidParameterError(f"models must list one to {limit} checkpoints")


def _check_method_params(params) -> None:
    """``((name, value), ...)``: one attribution method's parameter overrides."""
    if not isinstance(params, tuple) or len(params) > 64:
        raise InvalidParameterError("params must be a list of (name, value) pairs")
    for item in params:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], _PARAM_TYPES)):
            raise InvalidParameterError(f"a parameter is (name, value), got {item!r}")


@dataclass(frozen=True)
class SaliencyCurvesRequest(Request):
    """Keep/remove curves (``engine.attribution.keep_remove_curves``): accuracy as the top-attributed
    pixels are kept or removed, per mode and model; with ``retrain`` the KAR/ROAR variant (Hooker
    et al. 2019): a fresh model trained on masked training images at each fraction
    (``engine.attribution.engine_retrainer``).

    Attributes:
        models: one to eight models; dataset: its test split gives the ``n`` images (the first
            ``n``, or a ``seed``-ed random subset).
        modes: "keep" and/or "remove", in display order.
        method, params: the attribution method ranking the pixels and its ``(name, value)``
            parameter overrides.
        fractions: shares of pixels kept/removed, in [0, 1].
        replacement: "mean" or "blur" fill of the dropped pixels.
        retrain: evaluate freshly trained models instead of the originals (KAR for keep, ROAR for
            remove); retrain_epochs, retrain_n: epochs and training images of each (the first
            ``retrain_n`` of the training split, or ``seed``-ed; the recipe's seed is ``seed`` or 0).
    """

    kind = "saliency_curves"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    modes: tuple[str, ...] = CURVE_MODES
    method: str = "saliency"
    params: tuple[tuple[str, object], ...] = ()
    fractions: tuple[float, ...] = CURVE_FRACTIONS
    replacement: str = "mean"
    n: int = 64
    seed: int | None = None
    retrain: bool = False
    retrain_epochs: int = RETRAIN_EPOCHS
    retrain_n: int = RETRAIN_N

    def _check(self) -> None:
        _check_models(self.models)
        _dataset(self.dataset)
        if not isinstance(self.modes, tuple) or not self.modes or len(set(self.modes)) != len(self.modes):
            raise InvalidParameterError(f"modes must list keep and/or remove once each, got {self.modes!r}")
        for mode in self.modes:
            check_choice("mode", mode, CURVE_MODES)
        if not isinstance(self.method, str) or not self.method:
            raise InvalidParameterError(f"method must be an attribution method name, got {self.method!r}")
        _check_method_params(self.params)
        if not isinstance(self.fractions, tuple) or not 1 <= len(self.fractions) <= 64:
            raise InvalidParameterError(f"fractions must list 1 to 64 numbers in [0, 1], got {self.fractions!r}")
        for value in self.fractions:
            check_float("fraction", value, 0.0, 1.0, optional=False)
        check_choice("replacement", self.replacement, CURVE_REPLACEMENTS)
        check_int("n", self.n, 1, MAX_IMAGES)
        if self.seed is not None:
            check_int("seed", self.seed, 0, 2**31 - 1)
        _check_bool("retrain", self.retrain, optional=False)
        check_int("retrain_epochs", self.retrain_epochs, 1, 1000)
        check_int("retrain_n", self.retrain_n, 2, MAX_IMAGES)
        if not self.retrain and (self.retrain_epochs, self.retrain_n) != (RETRAIN_EPOCHS, RETRAIN_N):
            raise InvalidParameterError("retrain_epochs and retrain_n need retrain (they would split the result key)")

    def method_params(self) -> dict:
        """``{name: value}`` of the ranking method."""
        return dict(self.params)

    def describe(self) -> str:
        variant = f" · retrained ({self.retrain_epochs} epoch(s) on {self.retrain_n})" if self.retrain else ""
        return f"{super().describe()} · {self.dataset} · {'/'.join(self.modes)} · {self.n} images{variant}"


@dataclass(frozen=True)
class TradeoffRequest(Request):
    """The ε-vs-interpretability trade-off (Kim & Seo 2019, ``engine.attribution.epsilon_tradeoff``):
    clean accuracy and the share of attribution mass inside the object mask, per checkpoint.

    Attributes:
        models: one to 64 checkpoints whose cards record a training ε, all trained on ``dataset``
            and of one input shape.
        dataset: "shapes" (exact masks), "mnist" or "fashion-mnist" (the non-zero pixels);
            its ``n`` held-out images (``engine.attribution.evaluation_set``).
        method: the attribution method; batch_size: images per pass.
    """

    kind = "tradeoff"
    MODEL_FIELDS = ("models",)

    models: tuple[ModelRef, ...]
    dataset: str
    n: int = 256
    method: str = "saliency"
    batch_size: int = 64

    def _check(self) -> None:
        _check_models(self.models, limit=64)
        check_choice("dataset", self.dataset, ALIGNMENT_DATASETS)
        check_int("n", self.n, 1, MAX_ALIGNMENT_IMAGES)
        if not isinstance(self.method, str) or not self.method:
            raise InvalidParameterError(f"method must be an attribution method name, got {self.method!r}")
        check_int("batch size", self.batch_size, 1, MAX_BATCH)

    def describe(self) -> str:
        return f"{self.kind}: {len(self.models)} checkpoint(s) · {self.dataset} · {self.n} images · {self.method}"
