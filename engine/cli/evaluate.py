"""``evaluate``: clean accuracy of a checkpoint on a dataset's test split, and robust accuracy under
an attack (``--attack``). The AutoAttack family (``autoattack``, ``apgd-ce``, ``apgd-dlr``,
``apgd-t``, ``fab``, ``fab-t``, ``square``) reports the accuracy after each attack, the points each
broke, the time, seed and version, and ``--record`` stores it under the card's
``metrics.<attack>`` (``metrics.autoattack`` plus the headline ``metrics.autoattack_acc``),
keeping the card's PGD figure."""
from __future__ import annotations

import argparse
import shlex
import sys

import engine
from engine import data as edata
from engine.checkpoints.store import update_card
from engine.cli import MAX_BATCH, add_branch_option, check_int, print_json, require_compatible
from engine.errors import InvalidParameterError
from engine.device import resolve_device
from engine.evaluation import accuracy
from engine.attacks import AUTOATTACK_FAMILY, AUTOATTACK_VERSIONS, evaluate_autoattack, make_attack, robust_accuracy
from engine.cli.attack import add_attack_arguments, attack_from_args
from engine.version import __version__


def register(sub) -> None:
    """Add the ``evaluate`` command."""
    p = sub.add_parser("evaluate", help="accuracy of a checkpoint on a dataset")
    p.add_argument("--checkpoint", required=True, help="checkpoint path (stem, .safetensors or .json)")
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
    add_attack_arguments(p)  # --attack ... : also report robust accuracy (engine.attacks)
    aa = p.add_argument_group("AutoAttack family (--attack autoattack|apgd-ce|apgd-dlr|apgd-t|fab|fab-t|square)")
    aa.add_argument("--version", choices=[*AUTOATTACK_VERSIONS, "custom"],
                    help="AutoAttack version (default standard: APGD-CE, APGD-T, FAB-T, Square)")
    aa.add_argument("--attacks", help="comma-separated attacks of a --version custom sequence, e.g. apgd-ce,square")
    aa.add_argument("--seed", type=int, help="seed of the attacks' random starts and search (default 0)")
    aa.add_argument("--queries", type=int, help="Square's query budget (AutoAttack: 5000)")
    aa.add_argument("--n-targets", dest="n_target_classes", type=int,
                    help="target classes of APGD-T / FAB-T (AutoAttack: 9)")
    p.set_defaults(func=run_evaluate)


def stderr_progress(label: str):
    """A ``progress(done, total)`` callback that redraws one line on stderr."""
    def update(done: int, total: int) -> None:
        print(f"\r{label}: {done}/{total}", end="" if done < total else "\n", file=sys.stderr, flush=True)
    return update


def run_evaluate(args: argparse.Namespace) -> int:
    """Load the checkpoint and dataset, measure clean accuracy, print it."""
    device = resolve_device(args.device)
    check_recordable(args)
    loaded = engine.load(args.checkpoint, device=str(device), bn_branch=args.bn_branch)
    name = args.dataset or loaded.card.dataset
    dataset = edata.load_dataset(name, split=args.split)
    require_compatible([loaded], dataset)
    if args.n is not None:
        check_int("--n", args.n, 1, len(dataset), f"the {name} {args.split} split's size")
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    result = accuracy(loaded.model, dataset, n=args.n, batch_size=args.batch_size, device=device,
                      progress=stderr_progress("clean"))
    report = {
        "checkpoint": str(loaded.path), "dataset": name, "split": args.split, "n": result.total,
        "clean_acc": result.accuracy, "seconds": round(result.seconds, 3), "device": str(device),
        "bn_branch": args.bn_branch,
    }
    family = args.attack in AUTOATTACK_FAMILY
    if family:
        report.update(_autoattack_report(args, loaded.model, dataset, name, device))
    elif args.attack:
        report.update(_robust_report(args, loaded.model, dataset, name, device))
    if args.record:
        if family:
            recorder = record_autoattack
        else:
            recorder = record_metrics if args.bn_branch == "main" else record_branch_metrics
        report["recorded_in"] = str(recorder(args.checkpoint, loaded.card, report, args.argv))
    if args.json:
        print_json(report)
    else:
        print(f"{loaded.path.name}: clean accuracy {result.accuracy:.4f} on {result.total} {name} images")
        if family:
            for stage in report["per_attack"]:
                print(f"  after {stage['attack']:<8} {stage['robust_acc_after']:.4f}  (broke {stage['broken']} "
                      f"of {stage['attacked']}, {stage['seconds']:.1f} s)")
            print(f"robust accuracy {report['robust_acc']:.4f} under {args.attack} "
                  f"({report['version']}, seed {report['seed']}, {report['attack_seconds']:.1f} s)")
            for note in report["notes"]:
                print(f"note: {note}")
        elif args.attack:
            print(f"robust accuracy {report['robust_acc']:.4f} under {report['attack']}")
    return 0


def check_recordable(args: argparse.Namespace) -> None:
    """``--record`` stores test figures only: refuse the train split, and a subset (``--n``)
    except for the AutoAttack family, whose record names its image count."""
    if args.record and args.attack in AUTOATTACK_FAMILY:
        if args.split != "test":
            raise InvalidParameterError("--record writes test figures: drop --split train")
        return
    if args.record and (args.n is not None or args.split != "test"):
        raise InvalidParameterError("--record writes the card's test figures: drop --n and --split train "
                                    "so the whole test split is measured")


def measured_command(argv: list[str]) -> str:
    """The command line that produced this run, without ``--record`` (what a reader re-runs)."""
    return shlex.join(["python", "-m", "engine", *(a for a in argv if a != "--record")])


def record_metrics(checkpoint: str, card: dict, report: dict, argv: list[str]) -> object:
    """Replace the card's headline figures with ``report``'s (atomic card rewrite)."""
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


def record_autoattack(checkpoint: str, card, report: dict, argv: list[str]) -> object:
    """Store an AutoAttack-family figure under ``metrics.<attack>`` (``metrics.autoattack`` and the
    headline ``metrics.autoattack_acc`` for AutoAttack; under ``metrics.branches.<branch>`` for a
    non-main BN branch), leaving every other figure (clean, the PGD ``robust_acc``/``attack``) as
    it was."""
    metrics = card.metrics.to_dict()
    attack = report["attack"]["attack"]
    record = {
        "robust_acc": report["robust_acc"], "clean_acc": report["attack_clean_acc"], "n": report["attack_n"],
        "split": report["split"], "subset": f"the first {report['attack_n']} images of the {report['split']} split",
        "per_attack": report["per_attack"], "seed": report["seed"], "version": report["version"],
        "norm": report["norm"], "eps": report["eps"], "seconds": report["attack_seconds"],
        "config": report["attack"], "notes": report["notes"], "device": report["device"],
        "dataset": report["dataset"], "measured_with": measured_command(argv), "robustscope_version": __version__,
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


def _autoattack_report(args, model, dataset, name: str, device) -> dict:
    """An AutoAttack-family attack on the first ``--n`` images, attack by attack."""
    if args.alpha is not None or args.random_start is not None or args.targeted:
        raise InvalidParameterError(f"{args.attack} takes no --alpha, --no-random-start or --targeted: its step "
                                    "size is automatic and APGD-T/FAB-T choose their own targets")
    keys = ("norm", "eps", "steps", "restarts", "version", "attacks", "seed", "queries", "n_target_classes")
    given = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    if given.get("attacks") and "version" not in given:
        given["version"] = "custom"
    attack = make_attack(args.attack, name, **given)
    images, labels = edata.take(dataset, args.n or len(dataset))
    res = evaluate_autoattack(model, images, labels, attack, batch_size=args.batch_size, device=device,
                              progress=stderr_progress(attack.name))
    return {"robust_acc": res.robust_acc, "attack_clean_acc": res.clean_acc, "attack_n": res.n,
            "attack": res.config, "per_attack": res.per_attack, "attack_seconds": res.seconds, "seed": res.seed,
            "version": res.version, "norm": res.norm, "eps": res.eps, "notes": res.notes,
            "stopped": res.stopped, "robustscope_version": __version__}


def _robust_report(args, model, dataset, name: str, device) -> dict:
    """Robust accuracy under ``--attack`` on the same first ``--n`` images."""
    attack = attack_from_args(args, name)
    images, labels = edata.take(dataset, args.n or len(dataset))
    res = robust_accuracy(model, images, labels, attack, batch_size=args.batch_size, device=device,
                          progress=stderr_progress(attack.name))
    return {"robust_acc": res.robust_acc, "attack_clean_acc": res.clean_acc, "attack": res.config,
            "attack_seconds": round(res.seconds, 3)}
