"""AdvProp's two BatchNorm branches beside a standard and an adversarially trained model — the
comparison Xie et al. 2019 make: clean, adversarial (PGD) and distorted accuracy.

An AdvProp model is evaluated twice: through its main BatchNorm (the deployed, clean model) and
through its auxiliary BatchNorm (the statistics of the adversarial examples it trained on).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from engine.errors import InvalidParameterError

COLUMNS = ("model", "clean acc", "PGD acc", "distorted acc", "attack", "distortions", "images")


@dataclass(frozen=True)
class BranchEntry:
    """One row to compare: a label, a checkpoint path and the BN branch to evaluate it with."""

    label: str
    path: str
    branch: str = "main"


def branch_labels(name: str) -> tuple[str, str]:
    """The row labels of an AdvProp model's main and aux BatchNorm branches."""
    return f"{name} (main BN)", f"{name} (aux BN)"


def comparison_peers(infos: Sequence, advprop_path: str) -> tuple:
    """``(the AdvProp checkpoint's listing entry, [its peers])``: the first standard and the first
    robust (PGD-AT, TRADES, fast-AT) checkpoint trained on the same dataset, from a listing.

    Raises:
        InvalidParameterError: ``advprop_path`` is not a dual-BN checkpoint of the listing.
    """
    from engine.selection import is_robust, training_method

    by_path = {str(Path(i.path).resolve()): i for i in infos if i.card is not None}
    key = str(Path(advprop_path).resolve())
    if key not in by_path or not by_path[key].card.dual_bn:
        raise InvalidParameterError(f"{advprop_path} is not an AdvProp (dual-BN) checkpoint in the listing")
    adv = by_path[key]
    same = [i for p, i in by_path.items() if i.card.dataset == adv.card.dataset and p != key]
    standard = next((i for i in same if training_method(i.card) == "standard"), None)
    robust = next((i for i in same if is_robust(i.card)), None)
    return adv, [i for i in (standard, robust) if i is not None]


def comparison_entries(infos: Sequence, advprop_path: str) -> list[BranchEntry]:
    """The AdvProp checkpoint's two branches, then its peers (:func:`comparison_peers`)."""
    adv, peers = comparison_peers(infos, advprop_path)
    main, aux = branch_labels(adv.name)
    entries = [BranchEntry(main, advprop_path, "main"), BranchEntry(aux, advprop_path, "aux")]
    return entries + [BranchEntry(i.name, str(i.path)) for i in peers]


def compare_branches(
    models: Mapping[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    attack,
    distortions: Sequence[str] | None = None,
    severity: int = 3,
    batch_size: int = 128,
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> pd.DataFrame:
    """Clean, PGD and mean distorted accuracy of each model on the same images.

    Args:
        models: label -> classifier (an AdvProp model appears once per branch, loaded with
            ``engine.load(path, bn_branch=...)``).
        images, labels: (N, C, H, W) in [0, 1] and (N,).
        attack: an ``engine.attacks`` attack (e.g. ``make_attack("pgd", dataset)``).
        distortions: ``engine.data.distortions`` names (default: all) at ``severity``.
        progress: ``progress(done, total)`` over the models.

    Returns:
        DataFrame with :data:`COLUMNS`, one row per model.
    """
    from engine.attacks.evaluate import robust_accuracy
    from engine.generalisation.ood import evaluate_ood

    if not models:
        raise InvalidParameterError("choose at least one model to compare")
    rows, started = [], time.perf_counter()
    for done, (label, model) in enumerate(models.items(), start=1):
        if should_stop is not None and should_stop():
            break
        adv = robust_accuracy(model, images, labels, attack, batch_size=batch_size)
        ood = evaluate_ood({label: model}, images, labels, distortions=distortions, severities=[severity],
                           include_clean=False, batch_size=batch_size).table
        rows.append((label, adv.clean_acc, adv.robust_acc, float(ood["accuracy"].mean()),
                     _attack_label(adv.config), ", ".join(sorted(ood["distortion"].unique())), adv.n))
        if progress is not None:
            progress(done, len(models))
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs["seconds"] = time.perf_counter() - started
    return frame


def _attack_label(config: Mapping) -> str:
    from engine.checkpoints.card import AttackRecord

    record = AttackRecord.from_dict(dict(config))
    return record.label() if record is not None else ""
