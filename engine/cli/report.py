"""``report``: a checkpoint's robustness report (clean, PGD, AutoAttack attack by attack, the
gradient-masking checks, an ε-sweep, and a RobustBench model's leaderboard figures beside ours).

    python -m engine report --checkpoint checkpoints/mnist_pgd --n 500 --json
    python -m engine report --checkpoint checkpoints/mnist_pgd --out reports/mnist_pgd
    python -m engine report --checkpoint checkpoints/mnist_pgd --quick     # about a minute on 2 CPU cores

The command's default is the full report (standard AutoAttack, every masking check, 500 images), as
it always was; ``--quick`` is the Models page's default: APGD-CE + APGD-T with AutoAttack's settings
(an upper bound on robust accuracy, not AutoAttack), the masking checks without Square and extra
effort, a 4-point ε-sweep, on 100 images unless ``--n`` says otherwise.

One ``engine.analysis`` request (:class:`~engine.analysis.ReportRequest`, its threat resolved from
the card): the same command again answers from the result store (``"cached": true``),
``--background`` queues it as a job (``jobs wait`` / ``jobs result``) and ``--no-cache`` measures
again.
"""
from __future__ import annotations

import argparse
import sys

from engine.analysis.fields import AUTOATTACK_VERSIONS, MAX_SWEEP
from engine.catalogue import NORMS, norm_symbol
from engine.cli import MAX_BATCH, add_analysis_options, check_int, run_request, warn_result_notes
from engine.errors import InvalidParameterError


def register(sub) -> None:
    """Add the ``report`` command."""
    p = sub.add_parser("report", help="robustness report of a checkpoint: clean, PGD, AutoAttack, masking checks, "
                                      "ε-sweep")
    p.add_argument("--checkpoint", required=True, help="checkpoint path (stem, .safetensors or .json)")
    p.add_argument("--dataset", help="dataset name (default: the card's dataset)")
    p.add_argument("--n", type=int, help="test images, the first N (default 500, --quick 100; RobustBench uses "
                                         "10,000)")
    p.add_argument("--quick", action="store_true",
                   help="the quick report: APGD-CE + APGD-T (AutoAttack's first two attacks; an upper bound, not "
                        "AutoAttack), the masking checks without Square, a 4-point sweep (default: the full report)")
    p.add_argument("--eps", type=float, help="radius ε (default: the training ε of a robust card, else the "
                                             "dataset's usual one)")
    p.add_argument("--norm", choices=list(NORMS), help="threat model (default: the card's, else linf)")
    p.add_argument("--version", default="standard", choices=list(AUTOATTACK_VERSIONS[:-1]), help="AutoAttack version")
    p.add_argument("--seed", type=int, default=0, help="seed of every attack (default 0)")
    p.add_argument("--pgd-steps", type=int, default=40, help="PGD steps (default 40)")
    p.add_argument("--sweep", help="comma-separated ε values of the sweep (default 0 to 2ε)")
    p.add_argument("--source", help="a standard checkpoint to transfer from (masking check: white-box ≥ transfer)")
    p.add_argument("--no-masking", dest="masking", action="store_false", help="skip the gradient-masking checks")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    add_analysis_options(p)
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the report as JSON")
    out.add_argument("--out", help="folder for report.json and the CSV tables (and sweep.png with kaleido)")
    p.set_defaults(func=run_report)


def _parse_sweep(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(float(t) for t in text.replace(";", ",").split(",") if t.strip())
    except ValueError:
        raise InvalidParameterError(f"--sweep must be comma-separated numbers, got {text!r}") from None
    if not 1 <= len(values) <= MAX_SWEEP:
        raise InvalidParameterError(f"--sweep takes 1 to {MAX_SWEEP} values, got {len(values)}")
    return values


def report_request(args: argparse.Namespace):
    """The :class:`~engine.analysis.ReportRequest` of ``report --checkpoint ...`` (the threat
    resolved from the card, so it is part of the result key)."""
    from engine.analysis import ModelRef
    from engine.analysis.base import dataset_of
    from engine.analysis.kinds.report import ReportRequest, default_threat

    preset = "quick" if args.quick else "full"
    n = args.n if args.n is not None else (100 if args.quick else 500)
    check_int("--n", n, 1)
    check_int("--batch-size", args.batch_size, 1, MAX_BATCH)
    check_int("--pgd-steps", args.pgd_steps, 1, 10_000)
    check_int("--seed", args.seed, 0, 2**63 - 1)
    sweep = _parse_sweep(args.sweep)
    model = ModelRef.of(args.checkpoint)
    dataset = args.dataset or dataset_of(model)
    norm, eps = default_threat(model.card(), dataset, args.norm, args.eps)
    return ReportRequest.make(
        model=model, dataset=dataset, eps=eps, norm=norm, n=n, batch_size=args.batch_size, version=args.version,
        seed=args.seed, pgd_steps=args.pgd_steps, sweep=sweep, masking=args.masking,
        source=(args.source,) if args.source else (), preset=preset,
    )


def run_report(args: argparse.Namespace) -> int:
    """Answer the request from the result store or measure it; print it (``--json``: as JSON) or
    write it (``--out DIR``); ``--background`` queues it as a job."""
    def write(result) -> int:
        from engine.attacks.report import png_export_available

        warn_result_notes(result)
        written = result.value().save(args.out)
        if not png_export_available():
            print("note: kaleido is not installed, so no PNG was written (CSV and JSON only)", file=sys.stderr)
        for path in written:
            print(path)
        return 0

    def text(result) -> int:
        warn_result_notes(result)
        report = result.value()
        stored = ", stored earlier" if result.cached else ""
        print(f"{report.model} on {report.n} {report.dataset} test images, "
              f"{norm_symbol(report.norm)} ε={report.eps:.4g} ({report.seconds:.1f} s{stored})")
        if report.quick:  # the full report's text is as it was
            print(f"  {report.caveat}")
        for row in report.summary_rows():
            print(f"  {row['measure']:<28} {row['accuracy']:.4f}  {row['source']}")
        for check in (report.masking or {}).get("checks", []):
            print(f"  check {check['name']:<22} {check['status']:<7} {check['detail']}")
        return 0

    handler = None if args.json or args.background else (write if args.out else text)
    return run_request(report_request(args), args, "report", out_handler=handler)
