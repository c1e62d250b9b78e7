"""``attack``: craft adversarial examples on a checkpoint and save them as NPZ; with ``--compare``,
score them on other checkpoints too (does an example crafted on A fool B?).

    python -m engine attack --checkpoint checkpoints/std --compare checkpoints/rob --n 100 --out adv.npz --json

One ``engine.analysis`` request (:class:`~engine.analysis.CraftRequest`, the Attack Lab's Craft):
the same command again answers from the result store (``"cached": true``), ``--background``
queues it as a job and ``--no-cache`` crafts again. Also provides the attack options shared with
``evaluate --attack``, ``sweep`` and ``transfer``.
"""
from __future__ import annotations

import argparse

from engine.analysis.fields import MAX_IMAGES
from engine.catalogue import ATTACKS as ATTACK_NAMES
from engine.catalogue import NORMS as NORM_NAMES
from engine.cli import (
    MAX_BATCH,
    add_analysis_options,
    check_images,
    check_int,
    needs_checking,
    print_json,
    run_request,
    warn_result_notes,
)
from engine.errors import InvalidParameterError

#: the options of :func:`add_attack_arguments`, as ``engine.attacks.make_attack`` keywords
ATTACK_KEYS = ("norm", "eps", "steps", "alpha", "restarts", "random_start", "targeted")


def add_attack_arguments(p: argparse.ArgumentParser, default: str | None = None, eps: bool = True) -> None:
    """Add ``--attack --norm --eps --steps --alpha --restarts --no-random-start --targeted`` to parser ``p``
    (``eps=False``: no ``--eps``, for a command that sets ε itself). Unset values take the attack's
    per-dataset defaults (engine.attacks.default_params)."""
    p.add_argument("--attack", default=default, choices=list(ATTACK_NAMES), help="attack name")
    p.add_argument("--norm", choices=list(NORM_NAMES), help="threat model (PGD, DeepFool)")
    if eps:
        p.add_argument("--eps", type=float, help="radius ε in [0,1] pixel units (default: per dataset)")
    p.add_argument("--steps", type=int, help="iterations (PGD, CW, DeepFool)")
    p.add_argument("--alpha", type=float, help="PGD step size (default 2.5·ε/steps)")
    p.add_argument("--restarts", type=int, help="PGD random restarts")
    p.add_argument("--no-random-start", dest="random_start", action="store_false", default=None,
                   help="PGD: start from the clean image (deterministic)")
    p.add_argument("--targeted", action="store_true", default=None,
                   help="targeted attack (target: each image's clean runner-up class)")


def attack_options(args: argparse.Namespace, skip: tuple[str, ...] = ()) -> tuple:
    """The attack options given (not ``skip``), as a request's ``params``
    (``engine.analysis.attack_params``)."""
    from engine.analysis.kinds._attacklab import attack_params

    return attack_params({k: getattr(args, k, None) for k in ATTACK_KEYS if k not in skip})


def model_refs(paths: list[str]) -> tuple:
    """The :class:`~engine.analysis.ModelRef` of each checkpoint path (one to eight, slots A, B, ...)."""
    from engine.analysis import ModelRef
    from engine.analysis.kinds._attacklab import SLOTS

    if not 1 <= len(paths) <= len(SLOTS):
        raise InvalidParameterError(f"give one to {len(SLOTS)} checkpoints, got {len(paths)}")
    return tuple(ModelRef.of(path) for path in paths)


def card_dataset(args: argparse.Namespace, ref) -> str:
    """``--dataset``, else the dataset the first checkpoint's card names."""
    from engine.analysis.base import dataset_of

    return args.dataset or dataset_of(ref)


def models_and_dataset(args: argparse.Namespace, paths: list[str], split: str = "test",
                       offset: int = 0) -> tuple[tuple, str]:
    """Check ``--n`` and ``--batch-size``; the :func:`model_refs` of ``paths`` and the
    :func:`card_dataset` (the image count is checked against the split by :func:`checked`, or
    here when it is beyond any request's bound)."""
    check_int("--n", args.n, 1)
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    models = model_refs(paths)
    dataset = card_dataset(args, models[0])
    if args.n > MAX_IMAGES:
        check_images(args, dataset, split, offset)
    return models, dataset


def checked(request, args: argparse.Namespace, split: str = "test", offset: int = 0):
    """``request``, validated, after :func:`check_images` (``--n`` from ``offset`` fits the split)
    unless its result is stored and will be used: a stored answer reads no dataset."""
    if needs_checking(request, args):  # first: its message names the split's size
        check_images(args, request.dataset, split, offset)
    return request


def add_comparison_arguments(p: argparse.ArgumentParser, out_help: str, eps: bool = True) -> None:
    """The options of a command that attacks several checkpoints on the first ``--n`` test images
    (``sweep``, ``transfer``): ``--checkpoint`` (repeated) ``--dataset --n``, the attack's
    (:func:`add_attack_arguments`; ``eps=False``: no ``--eps``) ``--seed --batch-size --device``,
    the analysis options, ``--json`` and ``--out`` (help ``out_help``)."""
    p.add_argument("--checkpoint", action="append", required=True,
                   help="a checkpoint (repeat for several: slots A, B, ...)")
    p.add_argument("--dataset", help="dataset name (default: the first card's dataset)")
    p.add_argument("--n", type=int, default=64, help="test images, the first N (default 64)")
    add_attack_arguments(p, default="pgd", eps=eps)
    p.add_argument("--seed", type=int, default=0, help="seeds torch's RNG around the attacks (default 0)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    add_analysis_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--out", help=out_help)


def register(sub) -> None:
    """Add the ``attack`` command."""
    p = sub.add_parser("attack", help="craft adversarial examples, score them on other checkpoints too, write an .npz")
    p.add_argument("--checkpoint", required=True, help="the checkpoint attacked (stem, .safetensors or .json)")
    p.add_argument("--compare", action="append", default=[], metavar="CHECKPOINT",
                   help="another checkpoint that scores the clean and adversarial images (repeatable)")
    p.add_argument("--dataset", help="dataset name (default: the card's dataset)")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--n", type=int, default=100, help="number of images (default 100)")
    p.add_argument("--offset", type=int, default=0, help="first image index (default 0)")
    p.add_argument("--seed", type=int, help="pick a seeded random subset instead of the first n")
    add_attack_arguments(p, default="pgd")
    p.add_argument("--target", type=int, help="target class of a targeted attack (default: the clean runner-up)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    add_analysis_options(p)
    p.add_argument("--out", help="output .npz (x, x_adv, labels, preds, ...); needed unless --background")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run_attack_command)


def craft_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.CraftRequest` of ``attack --checkpoint ...``."""
    from engine.analysis.kinds.craft import CraftRequest

    models, dataset = models_and_dataset(args, [args.checkpoint, *args.compare], args.split, args.offset)
    return checked(CraftRequest(models=models, dataset=dataset, attack=args.attack,
                                params=attack_options(args), split=args.split, n=args.n, offset=args.offset,
                                sample_seed=args.seed, target=args.target, batch_size=args.batch_size),
                   args, args.split, args.offset)


def run_attack_command(args: argparse.Namespace) -> int:
    """Answer the request from the result store or craft it; write the NPZ atomically and print a
    summary (``--json``: the analysis report with ``out``); ``--background`` queues it."""
    if not args.background and not args.out:
        raise InvalidParameterError("give --out FILE.npz (or --background, then `jobs result ID --out FILE.npz`)")

    def write(result) -> int:
        from engine.analysis import get_analysis
        from engine.analysis.base import finite
        from engine.analysis.kinds.craft import example_arrays
        from engine.fileio import save_npz

        warn_result_notes(result)
        path = save_npz(args.out, example_arrays(result))
        summary = {**get_analysis(result.kind).report(result), "out": str(path), "cached": result.cached,
                   "result": result.key}
        if args.json:
            print_json(finite(summary))
        else:
            print(f"wrote {summary['n']} adversarial examples to {path}: clean accuracy {summary['clean_acc']:.4f}, "
                  f"robust accuracy {summary['robust_acc']:.4f}" + (" (stored earlier)" if result.cached else ""))
            for model in summary["models"][1:]:
                print(f"  {model['slot']} {model['checkpoint']}: clean {model['clean_acc']:.4f}, on these "
                      f"examples {model['adversarial_acc']:.4f}")
        return 0

    return run_request(craft_request(args), args, "attack", out_handler=None if args.background else write)
