"""A RobustBench zoo evaluated in one command, and its leaderboard (issue 26).

- :func:`zoo_requests`: for every RobustBench entry of a dataset and threat model that RobustScope
  loads (its weights in the RobustBench cache, or downloaded), the checkpoint imported once (an
  earlier import of the same entry is reused) and one ``robust_accuracy`` request (AutoAttack by
  default, at the leaderboard's ε) — the CLI queues them (``evaluate --zoo ... --background``),
  wherever workers are (local or a Ray cluster).
- :func:`leaderboard`: our stored AutoAttack figures beside RobustBench's reported clean and
  AutoAttack accuracy (from the imported card's ``source.leaderboard``), the difference and the
  evaluation's own flags (AutoAttack's notes, e.g. a gradient-masking warning); the Results page
  shows it and ``python -m engine zoo --leaderboard`` prints it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from engine.errors import CheckpointError, InvalidParameterError, RobustScopeError

#: the threat model of each RobustBench threat name (for ε defaults)
THREAT_NORMS = {"Linf": "linf", "L2": "l2"}


@dataclass(frozen=True)
class ZooPlan:
    """What :func:`zoo_requests` found: the requests to run and the entries skipped (with why)."""

    requests: list
    names: list[str]
    skipped: list[tuple[str, str]]


def parse_zoo(text: str) -> tuple[str, str]:
    """``"cifar10/Linf"`` -> ``("cifar10", "Linf")`` (InvalidParameterError naming the form)."""
    parts = str(text).split("/")
    if len(parts) != 2 or not all(parts):
        raise InvalidParameterError(f"--zoo takes DATASET/THREAT, e.g. cifar10/Linf, got {text!r}")
    return parts[0], parts[1]


def imported(entry, roots=None) -> Path | None:
    """An earlier import of zoo ``entry`` in the checkpoints folder (by its card's source), or None."""
    from engine.checkpoints.store import list_checkpoints

    for info in list_checkpoints(roots):
        source = (info.card.source or {}) if info.card is not None and info.error is None else {}
        found = source.get("robustbench") or {}
        if (found.get("name"), found.get("dataset"), found.get("threat")) == (entry.name, entry.dataset, entry.threat):
            return info.path
    return None


def zoo_requests(dataset: str, threat: str, names=None, model_dir=None, download: bool = True, n: int | None = None,
                 attack: str = "autoattack", params: dict | None = None, batch_size: int = 256,
                 seed: int = 0) -> ZooPlan:
    """One evaluation request per loadable zoo entry (see the module docstring).

    Args:
        names: only these entries (each must be in the zoo for ``dataset``/``threat``).
        model_dir, download: where RobustBench's cache is, and whether missing weights are
            downloaded (else the entry is skipped, saying so).
        n, attack, params, batch_size, seed: the evaluation (``params``: the attack's, as
            ``EvaluateRequest`` names them; ``eps`` and ``norm`` default to the leaderboard's).
    """
    from engine.analysis.kinds.evaluate import EvaluateRequest
    from engine.checkpoints import robustbench as rb

    entries = rb.zoo_entries(dataset, threat)
    if not entries:
        raise InvalidParameterError(f"RobustBench's zoo has no {dataset}/{threat} entries; see `python -m engine zoo`")
    if names:
        known = {e.name for e in entries}
        unknown = [name for name in names if name not in known]
        if unknown:
            raise InvalidParameterError(f"not in the {dataset}/{threat} zoo: {', '.join(unknown)}")
        entries = [e for e in entries if e.name in set(names)]
    requests, used, skipped = [], [], []
    for entry in entries:
        if not entry.supported:
            skipped.append((entry.name, entry.unsupported or "RobustScope cannot load it"))
            continue
        try:
            path = imported(entry) or rb.import_robustbench(entry.name, dataset, threat, model_dir,
                                                            download=download).path
        except (CheckpointError, OSError) as exc:
            skipped.append((entry.name, " ".join(str(exc).split())[:300]))
            continue
        requests.append(EvaluateRequest.make(model=str(path), dataset=dataset, n=n, attack=attack,
                                             batch_size=batch_size, seed=seed, **_threat(entry, params or {})))
        used.append(entry.name)
    return ZooPlan(requests, used, skipped)


def _threat(entry, params: dict) -> dict:
    """The attack's parameters with the leaderboard's norm and ε where none are given."""
    board = entry.leaderboard or {}
    defaults = {"norm": THREAT_NORMS.get(entry.threat), "eps": board.get("eps")}
    return {**{k: v for k, v in defaults.items() if v is not None}, **{k: v for k, v in params.items() if v is not None}}


def leaderboard(results=None, dataset: str | None = None, threat: str | None = None) -> list[dict]:
    """The leaderboard rows of the stored AutoAttack evaluations of imported zoo models, best
    robust accuracy first (the newest result per model, ε and image count)."""
    from engine.analysis.kinds.evaluate import report
    from engine.analysis.store import CorruptResult, ResultStore

    store = results or ResultStore()
    rows: dict[tuple, dict] = {}
    for info in store.list():   # newest first
        if info.kind != "robust_accuracy" or info.error:
            continue
        try:
            result = store.load(info.key)
            source = result.request.model.card().source or {}
        except (CorruptResult, RobustScopeError):
            continue
        zoo, board = source.get("robustbench") or {}, source.get("leaderboard") or {}
        body = report(result)
        if not zoo or "robust_acc" not in body or (dataset and zoo.get("dataset") != dataset) \
                or (threat and zoo.get("threat") != threat):
            continue
        row = _row(zoo, board, body, result)
        rows.setdefault((zoo.get("name"), row["eps"], row["n"]), row)
    return sorted(rows.values(), key=lambda r: -(r["robust_acc"] or 0.0))


def _row(zoo: dict, board: dict, body: dict, result) -> dict:
    reported = board.get("autoattack_acc")
    ours = body.get("robust_acc")
    return {"name": zoo.get("name"), "dataset": zoo.get("dataset"), "threat": zoo.get("threat"),
            "checkpoint": body["checkpoint"], "n": body.get("attack_n", body["n"]), "eps": body.get("eps"),
            "clean_acc": body["clean_acc"], "robust_acc": ours,
            "reported_clean_acc": board.get("clean_acc"), "reported_autoattack_acc": reported,
            "difference": None if ours is None or reported is None else ours - reported,
            "flags": list(body.get("notes") or []), "result": result.key}
