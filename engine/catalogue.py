"""The names RobustScope's registries use, in one torch-free module.

The registries themselves (attack classes, dataset loaders, model builders, attribution methods,
training losses ...) live beside their torch code. Code that only needs their *names* (the CLI's
parser, request validation, the result store, the dashboard's first render) imports them from
here, so it imports no torch. Each registry checks itself against this catalogue when it is
imported (:func:`require_names`): adding an attack, a dataset, a method ... is one entry in its
registry and one name here, and forgetting either fails at import with a message naming both.

Nothing here imports anything but the standard library.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

# ------------------------------------------------------------------------------------- threat models
#: the threat models (``engine.attacks.STEPS``; the training recipe's ``norm``)
NORMS = ("linf", "l2")
#: how the dashboard and the reports write them
NORM_SYMBOLS = {"linf": "ℓ∞", "l2": "ℓ₂"}

# ------------------------------------------------------------------------------------------- attacks
#: ``engine.attacks.ATTACKS`` (and ``EXPOSED``), in the order select boxes and ``--attack`` list them
ATTACKS = ("fgsm", "pgd", "lbfgs", "cw", "deepfool", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square",
           "autoattack")
#: the attacks of the AutoAttack family (evaluated attack by attack: ``engine.attacks.evaluate_autoattack``)
AUTOATTACK_FAMILY = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square", "autoattack")
#: ``engine.attacks.AUTOATTACK_VERSIONS`` (the preset attack lists); ``AutoAttack(version="custom")``
#: runs the attacks given instead
AUTOATTACK_VERSIONS = ("standard", "plus", "rand")
AUTOATTACK_CUSTOM = "custom"

# ------------------------------------------------------------------------------------------ datasets
#: ``engine.data.DATASETS``: the datasets with a fixed spec (shape, classes, normalisation)
DATASETS = ("shapes", "mnist", "fashion-mnist", "cifar10", "cifar100", "imagenet")
#: a folder of class sub-folders; its spec depends on the folder (``engine.data.imagefolder_spec``)
IMAGEFOLDER = "imagefolder"
#: ``engine.data.LOADERS``: every name ``engine.data.load_dataset`` takes
LOADABLE_DATASETS = (*DATASETS, IMAGEFOLDER)
#: ``engine.data.distortions.DISTORTIONS`` and ``SEVERITIES`` (out-of-distribution tests)
DISTORTIONS = ("gaussian_blur", "gaussian_noise", "contrast", "low_pass", "high_pass", "edges", "silhouette",
               "patch_shuffle")
SEVERITIES = (1, 2, 3, 4, 5)

# ------------------------------------------------------------------------------------------- models
#: ``engine.models.ARCHITECTURES`` (``torchvision:NAME`` and ``timm:NAME`` are accepted besides)
ARCHITECTURES = ("small_cnn", "cifar_resnet", "resnet18", "resnet50", "wide_resnet", "dm_wide_resnet",
                 "dm_preact_resnet", "preact_resnet18", "cifar_resnet18", "cifar_resnet50")
#: ``engine.models.BN_BRANCHES``: the BatchNorm branches of an AdvProp (dual-BN) model
BN_BRANCHES = ("main", "aux")

# ---------------------------------------------------------------------------------------- training
#: ``engine.training.METHODS`` (name -> one line) = ``engine.training.methods.METHOD_LOSSES``
TRAINING_METHODS = {
    "standard": "cross-entropy on clean images",
    "pgd": "PGD adversarial training (Madry et al. 2018): cross-entropy on PGD images",
    "trades": "TRADES (Zhang et al. 2019): clean CE + beta * KL(clean || adversarial)",
    "fast": "fast FGSM with random start (Wong et al. 2020)",
    "advprop": "AdvProp (Xie et al. 2019): clean CE (main BN) + PGD CE (auxiliary BN)",
}
#: the BatchNorm use of each training method, as a card's ``training.bn_mode`` reads
DUAL_BN_MODE = "dual (main for clean, aux for adversarial; evaluate with main)"
SINGLE_BN_MODE = "single"


def training_attack(method: str, eps: float, steps: int, alpha: float | None) -> tuple[int, float]:
    """``(steps, alpha)`` of the attack a training method crafts with, from its recipe's values:
    no attack for "standard" (0 steps), one FGSM step of 1.25·ε for "fast" (Wong et al. 2020),
    else ``steps`` steps; ``alpha`` when given, else 2.5·ε/steps."""
    used = {"standard": 0, "fast": 1}.get(method, steps)
    if alpha is not None:
        return used, float(alpha)
    if method == "fast":
        return used, 1.25 * eps
    return used, 2.5 * eps / max(used, 1)


def training_bn_mode(method: str) -> str:
    """The card's ``bn_mode`` of a training method (AdvProp trains a dual-BN model)."""
    return DUAL_BN_MODE if method == "advprop" else SINGLE_BN_MODE


# ------------------------------------------------------------------------------------- attribution
#: ``engine.attribution.METHODS``
ATTRIBUTION_METHODS = ("saliency", "input_x_gradient", "smoothgrad", "integrated_gradients", "guided_backprop")
#: ``engine.attribution.REDUCTIONS`` (channel reductions of a map)
REDUCTIONS = ("abs_sum", "max")
#: keep/remove curves: ``engine.attribution.MODES``, ``REPLACEMENTS``, ``DEFAULT_FRACTIONS``
CURVE_MODES = ("keep", "remove")
CURVE_REPLACEMENTS = ("mean", "blur")
CURVE_FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
#: ``engine.attribution.ALIGNMENT_DATASETS``: datasets with object masks (the alignment score)
ALIGNMENT_DATASETS = ("shapes", "mnist", "fashion-mnist")
#: ``engine.attribution.metrics.EVALUATORS``: explanation metric -> its family and the scores it
#: gives, in the order lists and tables show them
EXPLANATION_METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "randomisation": ("randomisation", ("randomisation_ssim", "randomisation_spearman")),
    "road": ("faithfulness", ("road_morf", "road_lerf")),
    "pixel_flipping": ("faithfulness", ("pixel_flipping_auc",)),
    "pointing_game": ("localisation", ("pointing_game",)),
    "relevance_mass": ("localisation", ("relevance_mass",)),
    "max_sensitivity": ("robustness", ("max_sensitivity",)),
    "avg_sensitivity": ("robustness", ("avg_sensitivity",)),
}
#: ``engine.attribution.metrics.LOCALISATION``: the metrics that need the dataset's foreground masks
LOCALISATION_METRICS = ("pointing_game", "relevance_mass")


@dataclass(frozen=True)
class MetricOptions:
    """The explanation metrics' parameters and their defaults (``engine.attribution.metrics``; a
    ``saliency_metrics`` request's fields default to them): ROAD's ``fractions`` of pixels imputed
    (Rong et al. 2022 report 10 % ... 90 %) and ``road_noise``, pixel flipping's ``flip_steps`` and
    ``flip_baseline``, the sensitivity's ``radius`` and ``samples``, the ``seed`` of every random
    draw (noise, layer re-initialisation), and the forward passes' ``batch_size``."""

    fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    road_noise: float = 0.01
    flip_steps: int = 50
    flip_baseline: float = 0.0
    radius: float = 0.05
    samples: int = 10
    seed: int = 0
    batch_size: int = 64

# -------------------------------------------------------------------------------------- similarity
#: ``engine.similarity.KERNELS`` / ``POOLINGS`` / ``engine.similarity.structure.REFERENCES``
CKA_KERNELS = ("linear", "rbf")
CKA_POOLINGS = ("flatten", "avg")
CKA_REFERENCES = ("final", "consecutive")
#: ``engine.similarity.measures.MEASURES``: each similarity measure with the one line ``cka
#: --measure`` prints, in the order select boxes list them
SIMILARITY_MEASURES = {
    "cka": "centred kernel alignment (Kornblith et al. 2019), minibatch and streamed (the default)",
    "procrustes": "angular Procrustes shape distance θ in [0, π/2] (Williams et al. 2021); 0 = same up to rotation",
    "cca": "mean canonical correlation of the centred representations",
    "svcca": "SVCCA (Raghu et al. 2017): keep 99% of each layer's variance by SVD, then mean CCA",
    "pwcca": "projection-weighted CCA (Morcos et al. 2018); asymmetric: weights from the row layer",
    "rsa": "Spearman correlation of the correlation-distance RDMs (Kriegeskorte et al. 2008)",
    "mknn": "mutual k-nearest-neighbour alignment (Huh et al. 2024); see --k",
    "linreg": "linear-regression R² (asymmetric: the row layer predicts the column layer)",
}

# ------------------------------------------------------------------------------ feature visualisation
#: the bounds of ``engine.featvis`` (``MAX_VIS_TARGETS``, ``MAX_VIS_STEPS``, ``MAX_VIS_SIDE``,
#: ``MAX_VIS_PIXELS``): targets per visualisation, optimisation steps, image side, pixels in all
MAX_VIS_TARGETS = 64
MAX_VIS_STEPS = 10_000
MAX_VIS_SIDE = 1024
MAX_VIS_PIXELS = 2 ** 24

# ------------------------------------------------------------------------------------- checkpoints
#: ``engine.checkpoints.FORMATS``: the formats ``import_checkpoint`` converts ("auto" detects)
IMPORT_FORMATS = ("plain", "torchvision", "timm", "robustbench", "robustness")
#: ``engine.checkpoints.robustbench.DATASETS``: the datasets of RobustBench's model zoo
ROBUSTBENCH_DATASETS = ("cifar10", "cifar100", "imagenet")


def norm_symbol(norm: str | None) -> str:
    """"ℓ∞" for "linf", "ℓ₂" for "l2", another name as it is ("" for None)."""
    return NORM_SYMBOLS.get(norm or "", norm or "")


class CatalogueMismatch(RuntimeError):
    """A registry and the catalogue name different things (a programming error, found at import)."""


def require_names(registry: Iterable, names: Iterable, what: str, ordered: bool = True) -> None:
    """Raise :class:`CatalogueMismatch` unless ``registry`` (a dict's keys, a tuple) holds exactly
    ``names`` (in the same order, unless ``ordered`` is False).

    Args:
        registry: the torch-side registry (e.g. ``engine.attacks.ATTACKS``).
        names: its names in this catalogue (e.g. ``engine.catalogue.ATTACKS``).
        what: both places, for the message (e.g. ``"engine.attacks.ATTACKS vs engine.catalogue.ATTACKS"``).
        ordered: the order matters (the catalogue's order is the one lists show).
    """
    have, want = tuple(registry), tuple(names)
    if have == want or (not ordered and sorted(have) == sorted(want) and len(set(have)) == len(have)):
        return
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    if missing or extra:
        detail = "; ".join(([f"the registry lacks {missing}"] if missing else []) +
                           ([f"engine/catalogue.py lacks {extra}"] if extra else []))
        raise CatalogueMismatch(f"{what}: {detail}; a name is added to both the registry and engine/catalogue.py")
    raise CatalogueMismatch(f"{what}: the same names in another order (registry {list(have)}, "
                            f"catalogue {list(want)}); list them in the catalogue's order")
