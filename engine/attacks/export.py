"""Attack results as files: an NPZ of tensors (written atomically) and CSV-ready rows."""
from __future__ import annotations

import numpy as np

from engine.attacks.base import AttackResult
from engine.fileio import npz_bytes, save_npz  # noqa: F401  (the NPZ writers live with the other writers)


def result_arrays(result: AttackResult, x=None) -> dict[str, np.ndarray]:
    """NumPy arrays of a result: ``x`` (clean), ``x_adv``, ``labels``, ``preds`` (adversarial),
    ``preds_clean``, ``success``, ``linf``, ``l2`` and ``targets`` (targeted attacks only)."""
    clean = (result.adv - result.perturbation) if x is None else x
    arrays = {
        "x": clean.detach().cpu().numpy().astype(np.float32),
        "x_adv": result.adv.detach().cpu().numpy().astype(np.float32),
        "labels": result.labels.cpu().numpy(),
        "preds": result.preds_adv.cpu().numpy(),
        "preds_clean": result.preds_clean.cpu().numpy(),
        "success": result.success.cpu().numpy(),
        "linf": result.linf_norm.cpu().numpy(),
        "l2": result.l2_norm.cpu().numpy(),
    }
    if result.targets is not None:
        arrays["targets"] = result.targets.cpu().numpy()
    return arrays


def result_rows(result: AttackResult, class_names=None) -> list[dict]:
    """One dict per example: label, clean/adversarial prediction (names if given), success, norms."""
    def name(i):
        return class_names[i] if class_names is not None and 0 <= i < len(class_names) else i

    rows = []
    for i in range(len(result)):
        row = {
            "index": i,
            "label": name(int(result.labels[i])),
            "pred_clean": name(int(result.preds_clean[i])),
            "pred_adv": name(int(result.preds_adv[i])),
            "success": bool(result.success[i]),
            "linf": float(result.linf_norm[i]),
            "l2": float(result.l2_norm[i]),
        }
        if result.targets is not None:
            row["target"] = name(int(result.targets[i]))
        rows.append(row)
    return rows
