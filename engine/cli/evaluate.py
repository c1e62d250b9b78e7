"""``evaluate``: clean accuracy of a checkpoint on a dataset's test split, and robust accuracy under
an attack (``--attack``). The AutoAttack family (``autoattack``, ``apgd-ce``, ``apgd-dlr``,
``apgd-t``, ``fab``, ``fab-t``, ``square``) reports the accuracy after each attack, the points each
broke, the time, seed and version, and ``--record`` stores it under the card's
``metrics.<attack>`` (``metrics.autoattack`` plus the headline ``metrics.autoattack_acc``),
keeping the card's PGD figure.

One ``engine.analysis`` request (:class:`~engine.analysis.EvaluateRequest`): the same command again
prints the stored result (``"cached": true``), ``--background`` queues it as a job and
``--no-cache`` measures again. ``--record`` writes the figures into the card after the result is
obtained, stored or fresh: the card is not part of the result key (the weights' sha256 is, and
recording leaves the weights and their recorded sha256 as they were).
"""
from __future__ import annotations

import argparse
import shlex

from engine.analysis.fields import AUTOATTACK_FAMILY, AUTOATTACK_VERSIONS
from engine.cli import (
    MAX_BATCH,
    add_analysis_options,
    add_branch_option,
    check_images,
    check_int,
    needs_checking,
    print_json,
    run_request,
    warn_result_notes,
)
from engine.cli.attack import add_attack_arguments
from engine.errors import InvalidParameterError

#: the options of ``engine.cli.attack.add_attack_arguments`` and the AutoAttack group, as request fields
ATTACK_OPTIONS = ("norm", "eps", "steps", "restarts", "alpha", "random_start", "targeted", "version", "queries",
                  "n_target_classes")


def register(sub) -> None:
    """Add the ``evaluate`` command."""
    p = sub.add_parser("evaluate", help="accuracy of a checkpoint on a dataset")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="checkpoint path (stem, .safetensors or .json)")
    which.add_argument("--zoo", metavar="DATASET/THREAT",
                       help="every RobustBench zoo entry of DATASET/THREAT that loads (e.g. cifar10/Linf): each "
                            "imported once and evaluated (AutoAttack at the leaderboard's ε unless --attack/--eps "
                            "say otherwise); with --background one job each; then `python -m engine zoo --leaderboard`")
    p.add_argument("--names", nargs="+", metavar="NAME", help="with --zoo: only these entries")
    p.add_argument("--model-dir", help="with --zoo: RobustBench's cache folder (default ./models)")
    p.add_argument("--no-download", action="store_true", help="with --zoo: skip entries whose weights are not cached")
    p.add_argument("--dataset", help="dataset name (default: the card's dataset)")
    p.add_argument("--split", default="test", choices=["test", "train"])
    add_branch_option(p)
    p.add_argument("--n", type=int, help="number of images (default: the whole split)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--record", action="store_true",
                   help="write the figures (and this command) into the checkpoint's card; "
                        "needs the whole test split (the AutoAttack family records its --n images)")
    add_analysis_options(p)
    add_attack_arguments(p)  # --attack ... : also report robust accuracy (engine.attacks)
    aa = p.add_argument_group("AutoAttack family (--attack autoattack|apgd-ce|apgd-dlr|apgd-t|fab|fab-t|square)")
    aa.add_argument("--version", choices=list(AUTOATTACK_VERSIONS),
                    help="AutoAttack version (default standard: APGD-CE, APGD-T, FAB-T, Square)")
    aa.add_argument("--attacks", help="comma-separated attacks of a --version custom sequence, e.g. apgd-ce,square")
    aa.add_argument("--seed", type=int, help="seed of the attack's random starts and search (default 0; also "
                                             "seeds PGD's random start)")
    aa.add_argument("--queries", type=int, help="Square's query budget (AutoAttack: 5000)")
    aa.add_argument("--n-targets", dest="n_target_classes", type=int,
                    help="target classes of APGD-T / FAB-T (AutoAttack: 9)")
    p.set_defaults(func=run_evaluate)


def evaluate_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.EvaluateRequest` of ``evaluate --checkpoint ...``; a subset
    (``--n``) not answered from the store is checked against the split's size here, so a background
    job is refused at once too."""
    from engine.analysis import ModelRef
    from engine.analysis.base import dataset_of
    from engine.analysis.fields import MAX_IMAGES
    from engine.analysis.kinds.evaluate import EvaluateRequest

    model = ModelRef.of(args.checkpoint, args.bn_branch)
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    params = attack_options(args) if args.attack else {}
    if args.n is not None and args.n > MAX_IMAGES:  # beyond any request: name the split's size
        check_images(args, args.dataset or dataset_of(model), args.split)
    request = EvaluateRequest.make(model=model, dataset=args.dataset, split=args.split, n=args.n,
                                   batch_size=args.batch_size, attack=args.attack,
                                   seed=0 if args.seed is None else args.seed, **params)
    if args.n is not None and needs_checking(request, args):
        check_images(args, request.dataset, args.split)
    return request


def attack_options(args: argparse.Namespace) -> dict:
    """The attack parameters given on the command line, as ``EvaluateRequest`` fields."""
    params = {k: getattr(args, k) for k in ATTACK_OPTIONS if getattr(args, k, None) is not None}
    if args.attacks:
        params["attacks"] = tuple(a.strip() for a in args.attacks.split(",") if a.strip())
        params.setdefault("version", "custom")
    return params


def run_evaluate(args: argparse.Namespace) -> int:
    """Answer the request from the result store or measure it; print it, and record it in the card
    with ``--record`` (``--background``: queue it as a job)."""
    if args.zoo:
        return run_zoo(args)
    if args.names or args.model_dir or args.no_download:
        raise InvalidParameterError("--names, --model-dir and --no-download go with --zoo")
    check_recordable(args)

    def show(result) -> int:
        from engine.analysis.base import finite
        from engine.analysis.kinds.evaluate import report as evaluation_report

        warn_result_notes(result)
        report = evaluation_report(result)
        if args.record:
            report["recorded_in"] = str(record(args.checkpoint, report, args.argv))
        if args.json:
            print_json(finite({**report, "cached": result.cached, "result": result.key}))
        else:
            print_summary(report, result.cached)
        return 0

    return run_request(evaluate_request(args), args, "evaluate", out_handler=None if args.background else show)


def run_zoo(args: argparse.Namespace) -> int:
    """``evaluate --zoo DATASET/THREAT``: one evaluation per loadable zoo entry, queued
    (``--background``) or run here in turn; prints the jobs, or the leaderboard rows."""
    from engine.analysis import run_analysis
    from engine.analysis.zoo import leaderboard, parse_zoo, zoo_requests
    from engine.cli import queue_request, stderr_progress, warn

    if args.record:
        raise InvalidParameterError("--zoo evaluates many checkpoints: record each with evaluate --checkpoint --record")
    dataset, threat = parse_zoo(args.zoo)
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    plan = zoo_requests(dataset, threat, args.names, args.model_dir, download=not args.no_download, n=args.n,
                        attack=args.attack or "autoattack", params=attack_options(args), batch_size=args.batch_size,
                        seed=0 if args.seed is None else args.seed)
    for name, why in plan.skipped:
        warn(f"{name}: skipped — {why}")
    body = {"zoo": f"{dataset}/{threat}", "skipped": [{"name": n, "why": w} for n, w in plan.skipped]}
    if args.background:
        body["jobs"] = [{"name": name, "checkpoint": request.model.path, **queue_request(request, args)}
                        for name, request in zip(plan.names, plan.requests)]
    else:
        for name, request in zip(plan.names, plan.requests):
            run_analysis(request, progress=stderr_progress(name), use_cache=not args.no_cache, device=args.device)
        body["leaderboard"] = leaderboard(dataset=dataset, threat=threat)
    print_json(body)
    return 0


def print_summary(report: dict, cached: bool) -> None:
    """The human-readable lines of an evaluation ``report`` (:func:`engine.analysis.kinds.evaluate.report`)."""
    from pathlib import Path

    stored = " (stored earlier)" if cached else ""
    print(f"{Path(report['checkpoint']).name}: clean accuracy {report['clean_acc']:.4f} on {report['n']} "
          f"{report['dataset']} images{stored}")
    if "per_attack" in report:
        for stage in report["per_attack"]:
            print(f"  after {stage['attack']:<8} {stage['robust_acc_after']:.4f}  (broke {stage['broken']} "
                  f"of {stage['attacked']}, {stage['seconds']:.1f} s)")
        print(f"robust accuracy {report['robust_acc']:.4f} under {report['attack']['attack']} "
              f"({report['version']}, seed {report['seed']}, {report['attack_seconds']:.1f} s)")
        for note in report["notes"]:
            print(f"note: {note}")
    elif "robust_acc" in report:
        print(f"robust accuracy {report['robust_acc']:.4f} under {report['attack']}")


def check_recordable(args: argparse.Namespace) -> None:
    """``--record`` stores test figures only: refuse the train split, and a subset (``--n``)
    except for the AutoAttack family, whose record names its image count; and a background job,
    whose result is not here to record (record it once the job is done: the same command then
    prints the stored result at once)."""
    if args.record and args.background:
        raise InvalidParameterError("--record writes the result into the card here: drop --background, or run "
                                    "the same command with --record once the job is done (it reads the stored result)")
    if args.record and args.attack in AUTOATTACK_FAMILY:
        if args.split != "test":
            raise InvalidParameterError("--record writes test figures: drop --split train")
        return
    if args.record and (args.n is not None or args.split != "test"):
        raise InvalidParameterError("--record writes the card's test figures: drop --n and --split train "
                                    "so the whole test split is measured")


def measured_command(argv: list[str]) -> str:
    """The command line that produced this run, without ``--record`` and ``--no-cache`` (what a
    reader re-runs)."""
    return shlex.join(["python", "-m", "engine", *(a for a in argv if a not in ("--record", "--no-cache"))])


def record(checkpoint: str, report: dict, argv: list[str]) -> object:
    """Write ``report`` (:func:`engine.analysis.kinds.evaluate.report`) into the card of ``checkpoint``:
    the AutoAttack family under its own name, other figures as the headline (or the BN branch's)."""
    from engine.checkpoints.store import checkpoint_paths, read_card

    card = read_card(checkpoint_paths(checkpoint)[1])
    if "per_attack" in report:
        recorder = record_autoattack
    else:
        recorder = record_metrics if report["bn_branch"] == "main" else record_branch_metrics
    return recorder(checkpoint, card, report, argv)


def record_metrics(checkpoint: str, card, report: dict, argv: list[str]) -> object:
    """Replace the card's headline figures with ``report``'s (atomic card rewrite)."""
    from engine.checkpoints.store import update_card

    metrics = {k: v for k, v in card.metrics.to_dict().items()
               if k not in ("clean_acc", "robust_acc", "attack", "eval_subset", "n_test", "split")}
    metrics.update(clean_acc=report["clean_acc"], n_test=report["n"], split=report["split"],
                   dataset=report["dataset"], measured_with=measured_command(argv))
    if "robust_acc" in report:
        metrics.update(robust_acc=report["robust_acc"], attack=report["attack"])
    return update_card(checkpoint, {"metrics": metrics})


def record_branch_metrics(checkpoint: str, card, report: dict, argv: list[str]) -> object:
    """Record an AdvProp model's figures through a non-main BN branch under
    ``metrics.branches.<branch>`` (the headline figures stay the main branch's)."""
    from engine.checkpoints.store import update_card

    metrics = card.metrics.to_dict()
    branches = dict(metrics.get("branches") or {})
    figures = {k: report[k] for k in ("clean_acc", "robust_acc", "attack") if k in report}
    previous = dict(branches.get(report["bn_branch"]) or {})
    if "robust_acc" not in figures:  # a clean-only run keeps the branch's robust figure
        figures.update({k: previous[k] for k in ("robust_acc", "attack") if k in previous})
    branches[report["bn_branch"]] = {**figures, "n_test": report["n"], "dataset": report["dataset"],
                                     "measured_with": measured_command(argv)}
    metrics["branches"] = branches
    return update_card(checkpoint, {"metrics": metrics})


def subset_words(report: dict) -> str:
    """Which images an AutoAttack figure covers: the whole split, or its first N."""
    if report["attack_n"] == report.get("split_size"):
        return f"the whole {report['split']} split ({report['attack_n']} images)"
    return f"the first {report['attack_n']} images of the {report['split']} split"


def record_autoattack(checkpoint: str, card, report: dict, argv: list[str]) -> object:
    """Store an AutoAttack-family figure under ``metrics.<attack>`` (``metrics.autoattack`` and the
    headline ``metrics.autoattack_acc`` for AutoAttack; under ``metrics.branches.<branch>`` for a
    non-main BN branch), leaving every other figure (clean, the PGD ``robust_acc``/``attack``) as
    it was."""
    from engine.checkpoints.store import update_card

    metrics = card.metrics.to_dict()
    attack = report["attack"]["attack"]
    record = {
        "robust_acc": report["robust_acc"], "clean_acc": report["attack_clean_acc"], "n": report["attack_n"],
        "split": report["split"], "subset": subset_words(report),
        "per_attack": report["per_attack"], "seed": report["seed"], "version": report["version"],
        "norm": report["norm"], "eps": report["eps"], "seconds": report["attack_seconds"],
        "config": report["attack"], "notes": report["notes"], "device": report["device"],
        "dataset": report["dataset"], "measured_with": measured_command(argv),
        "robustscope_version": report["robustscope_version"],
        **{k: report[k] for k in ("device_name", "torch") if k in report},
    }
    target = metrics
    if report.get("bn_branch", "main") != "main":
        branches = dict(metrics.get("branches") or {})
        target = branches[report["bn_branch"]] = dict(branches.get(report["bn_branch"]) or {})
        metrics["branches"] = branches
    target[attack] = record
    if attack == "autoattack":
        target["autoattack_acc"] = report["robust_acc"]
    return update_card(checkpoint, {"metrics": metrics})
