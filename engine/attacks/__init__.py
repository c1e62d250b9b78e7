"""Adversarial attacks and robustness evaluation: one attack loop over threat models (ℓ∞, ℓ₂).

Attacks are small dataclasses with one verb: ``PGD(eps=8/255, steps=20)(model, x, y) ->
AttackResult``. ``ATTACKS`` maps names to classes; ``make_attack(name, dataset, **params)`` builds
one with per-dataset defaults. Evaluation: :func:`craft_and_compare`, :func:`robust_accuracy`, :func:`eps_sweep`,
:func:`transfer_matrix`, :func:`minimal_perturbation`; AutoAttack (APGD-CE/DLR, APGD-T, FAB(-T),
Square) with :func:`evaluate_autoattack`; gradient-masking checks in :mod:`engine.attacks.masking`;
a robustness report per checkpoint in :mod:`engine.attacks.report`.
"""
from engine.attacks.base import (  # noqa: F401
    Attack, AttackCancelled, AttackResult, frozen_eval,
)
from engine.attacks.deepfool import DeepFool  # noqa: F401
from engine.attacks.evaluate import (  # noqa: F401
    CraftComparison, MinimalPerturbation, RobustAccuracy, SweepResult, TransferResult, craft_and_compare,
    eps_sweep, minimal_perturbation, robust_accuracy, run_attack, transfer_matrix,
)
from engine.attacks.penalty import CW, LBFGS  # noqa: F401
from engine.attacks.pgd import FGSM, PGD, default_alpha, pgd_loop  # noqa: F401
from engine.attacks.registry import (  # noqa: F401
    ATTACKS, DEFAULT_EPS, EXPOSED, default_eps, default_params, get_attack_class, make_attack,
)
from engine.attacks.steps import STEPS, L2Step, LinfStep, ThreatStep  # noqa: F401
from engine.attacks.apgd import APGD, APGDDLR, APGDT  # noqa: F401,E402
from engine.attacks.autoattack import (  # noqa: F401,E402
    VERSIONS as AUTOATTACK_VERSIONS, AutoAttack, AutoAttackResult, evaluate_autoattack,
)
from engine.attacks.fab import FAB, FABT  # noqa: F401,E402
from engine.attacks.losses import LOSSES  # noqa: F401,E402
from engine.attacks.registry import AUTOATTACK_FAMILY  # noqa: F401,E402
from engine.attacks.square import Square  # noqa: F401,E402
