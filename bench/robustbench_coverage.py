"""Coverage: how many of RobustBench's zoo entries RobustScope loads, checked against RobustBench's
own constructors.

For every entry of RobustBench's zoo tables (``robustbench/model_zoo/{cifar10,cifar100,imagenet}.py``
read from the robustbench wheel), this builds RobustBench's network with RobustBench's own
constructor, writes the state dict its checkpoint file would hold (CIFAR: the network's
``state_dict()``, with any ``mu``/``sigma`` buffers; ImageNet: the bare torchvision/timm keys that
RobustBench prefixes with ``model.`` on load) and checks that RobustScope's loader
(``engine.checkpoints.robustbench``: our table, our key handling, our architecture built on the
meta device) accepts exactly those keys and shapes and picks the same input normalisation as
RobustBench's network applies. The constructors run with random initialisation switched off, so
even WRN-106-16 costs no time or memory (its tensors are never touched).

With ``--logits-max-params N`` it also compares logits: for entries with at most N parameters it
initialises RobustBench's network randomly (BatchNorm statistics too), saves it as a RobustBench
checkpoint in a temporary cache, loads it with ``load_robustbench`` and runs both on the same
random images (max |difference| reported; the check passes within 1e-4).

Needs the robustbench wheel (``pip download --no-deps robustbench==1.1.1 -d DIR``; nothing is
installed) and timm (RobustBench's tables import it). RobustBench's optional dependencies
(torchdiffeq, geotorch, gdown) are stubbed; entries needing them count as not loading.

Usage: python bench/robustbench_coverage.py --wheel DIR_OR_WHL [--logits-max-params 40000000]
       [--dataset cifar10] [--threat Linf] [--verbose]
"""
from __future__ import annotations

import argparse
import inspect
import math
import sys
import tempfile
import types
import warnings
import zipfile
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OPTIONAL = ("torchdiffeq", "geotorch", "gdown")
TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}


def _stub(name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def __getattr__(attr):
        if attr.startswith("__"):
            raise AttributeError(attr)

        def missing(*args, **kwargs):
            raise ImportError(f"{name} is not installed")

        return missing

    module.__getattr__ = __getattr__
    return module


def import_zoo(wheel: Path, scratch: Path):
    """RobustBench's ``model_dicts`` from the wheel (unpacked into ``scratch``), without running
    the package's ``__init__`` (which imports its data and evaluation code)."""
    if wheel.is_dir():
        found = sorted(wheel.glob("robustbench-*.whl"))
        if found:
            wheel = found[-1]
        elif (wheel / "robustbench" / "model_zoo").is_dir():
            scratch = wheel
            wheel = None
        else:
            raise SystemExit(f"no robustbench wheel or unpacked robustbench/ in {wheel}")
    if wheel is not None:
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(scratch)
    for name in OPTIONAL:
        try:
            __import__(name)
        except ImportError:
            sys.modules[name] = _stub(name)
    package = types.ModuleType("robustbench")
    package.__path__ = [str(scratch / "robustbench")]
    sys.modules["robustbench"] = package
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from robustbench.model_zoo import model_dicts
    return model_dicts


@contextmanager
def no_init():
    """Skip random initialisation while RobustBench's constructors run (only keys, shapes and
    the normalisation buffers, built with ``torch.tensor``, matter for the structural check)."""
    saved = []
    for name in dir(torch.nn.init):
        fn = getattr(torch.nn.init, name)
        if name.endswith("_") and not name.startswith("_") and callable(fn):
            saved.append((torch.nn.init, name, fn))
            setattr(torch.nn.init, name, lambda tensor, *a, **k: tensor)
    for name in ("normal_", "uniform_", "zero_", "fill_"):
        saved.append((torch.Tensor, name, getattr(torch.Tensor, name)))
        setattr(torch.Tensor, name, lambda self, *a, **k: self)
    try:
        yield
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def rb_build(ctor, name: str, dataset: str, initialise: bool):
    """RobustBench's network for an entry (its ImageNet ``Standard_R50`` untrained: RobustBench
    fetches torchvision's weights for it, which the structural check does not need)."""
    if dataset == "imagenet" and name == "Standard_R50":
        import torchvision
        from robustbench.model_zoo import imagenet as rb_imagenet

        ctor = lambda: rb_imagenet.normalize_model(torchvision.models.resnet50(), rb_imagenet.mu, rb_imagenet.sigma)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if initialise:
            return ctor()
        with no_init():
            return ctor()


def file_state(rb_model: nn.Module, dataset: str) -> dict[str, torch.Tensor]:
    """The state dict RobustBench's checkpoint file holds for this network (see module docstring)."""
    state = rb_model.state_dict()
    if dataset == "imagenet" and isinstance(rb_model, nn.Sequential) and hasattr(rb_model, "normalize"):
        state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    return dict(state)


def rb_normalization(rb_model: nn.Module) -> tuple[list[float], list[float]] | None:
    """The normalisation RobustBench's network applies to its [0, 1] input (None: none)."""
    def values(t):
        return [float(v) for v in t.flatten().tolist()]

    if isinstance(rb_model, nn.Sequential) and hasattr(rb_model, "normalize"):
        return values(rb_model.normalize.mean), values(rb_model.normalize.std)
    forward = inspect.getsource(type(rb_model).forward)
    if hasattr(rb_model, "mu") and "self.mu" in forward:
        return values(rb_model.mu), values(rb_model.sigma)
    if type(rb_model).__name__ in ("DMWideResNet", "DMPreActResNet"):
        return values(rb_model.mean), values(rb_model.std)
    if "2. * x - 1." in forward:
        return [0.5] * 3, [0.5] * 3
    return None


def close(a, b) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) for x, y in zip(a, b))


def structural_check(entry, rb_model, dataset) -> str | None:
    """None when our loader accepts RobustBench's file keys/shapes and normalisation; else why not."""
    from engine.checkpoints import robustbench as rb
    from engine.checkpoints.importers import _pull_file_normalization, choose_normalization
    from engine.checkpoints.store import check_state_dict
    from engine.errors import RobustScopeError
    from engine.models import build_model

    tensors = rb.robustbench_state_dict(file_state(rb_model, dataset), entry, Path(entry.name))
    try:
        with torch.device("meta"):
            ours = build_model(entry.arch, entry.num_classes, entry.input_shape, [0.0] * 3, [1.0] * 3, **entry.arch_kwargs)
    except (RobustScopeError, ImportError, RuntimeError) as exc:
        return f"our {entry.arch} cannot be built: {exc}"
    net, from_file = _pull_file_normalization(tensors, set(ours.net.state_dict()))
    if entry.key_filter:
        net = rb._filtered(net, entry, ours.net)
    used = choose_normalization(None, from_file, entry.table_normalization())
    mean, std = used.values(3)
    full = {"normalize.mean": torch.empty(1, 3, 1, 1), "normalize.std": torch.empty(1, 3, 1, 1),
            **{f"net.{k}": v for k, v in net.items()}}
    try:
        check_state_dict(ours, full, entry.name)
    except RobustScopeError as exc:
        return str(exc)
    expected = rb_normalization(rb_model)
    want_mean, want_std = expected if expected is not None else ([0.0] * 3, [1.0] * 3)
    if not (close(mean, want_mean) and close(std, want_std)):
        return f"normalisation differs: ours {used.text()} ({used.source}) vs RobustBench's mean {want_mean} std {want_std}"
    return None


def logits_check(entry, ctor, dataset, scratch: Path) -> tuple[bool, float]:
    """Random RobustBench weights saved in its cache layout, loaded by us; max |logit difference|."""
    from engine.checkpoints import robustbench as rb

    torch.manual_seed(0)
    rb_model = rb_build(ctor, entry.name, dataset, initialise=True)
    for module in rb_model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            if module.weight is not None:
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.2, 0.2)
    rb_model.eval()
    path = scratch / "models" / dataset / entry.threat / f"{entry.name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(file_state(rb_model, dataset), path)
    try:
        ours = rb.load_robustbench(entry.name, dataset, entry.threat, scratch / "models", download=False).model
        x = torch.rand(2, 3, entry.input_size, entry.input_size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            diff = float((rb_model(x) - ours(x)).abs().max())
    finally:
        path.unlink(missing_ok=True)
    return diff <= 1e-4, diff


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", type=Path, required=True, help="robustbench wheel, or a folder holding it (or it unpacked)")
    parser.add_argument("--dataset", choices=["cifar10", "cifar100", "imagenet"])
    parser.add_argument("--threat", choices=["Linf", "L2", "corruptions"])
    parser.add_argument("--logits-max-params", type=float, default=0,
                        help="also compare logits for entries with at most this many parameters (0: off)")
    parser.add_argument("--verbose", action="store_true", help="print every entry")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    from engine.checkpoints import robustbench as rb
    from engine.errors import RobustScopeError

    counts = defaultdict(lambda: [0, 0, 0, 0, 0.0])  # loads, total, logits checked, logits equal, max |diff|
    reasons = defaultdict(list)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        zoo = import_zoo(args.wheel, scratch / "wheel")
        for ds, threats in zoo.items():
            dataset = ds.value
            if args.dataset and dataset != args.dataset:
                continue
            for tm, entries in threats.items():
                threat = tm.value
                if args.threat and threat != args.threat:
                    continue
                for name, spec in entries.items():
                    key = (dataset, threat)
                    counts[key][1] += 1
                    try:
                        entry = rb.get_entry(name, dataset, threat)
                    except RobustScopeError:
                        reasons[key].append(f"{name}: not in RobustScope's table")
                        continue
                    if not entry.supported:
                        reasons[key].append(f"{name}: {rb._unsupported_message(entry).split(': ', 1)[1]}")
                        continue
                    try:
                        rb_model = rb_build(spec["model"], name, dataset, initialise=False)
                    except Exception as exc:  # RobustBench's own constructor failed (missing optional deps)
                        reasons[key].append(f"{name}: RobustBench's constructor failed here ({type(exc).__name__}: {exc})")
                        continue
                    problem = structural_check(entry, rb_model, dataset)
                    params = sum(p.numel() for p in rb_model.parameters())
                    del rb_model
                    if problem:
                        reasons[key].append(f"{name}: {problem}")
                        continue
                    counts[key][0] += 1
                    note = ""
                    if args.logits_max_params and params <= args.logits_max_params:
                        ok, diff = logits_check(entry, spec["model"], dataset, scratch)
                        counts[key][2] += 1
                        counts[key][3] += int(ok)
                        counts[key][4] = max(counts[key][4], diff)
                        note = f" logits max|diff| {diff:.2e}{'' if ok else '  MISMATCH'}"
                        if not ok:
                            reasons[key].append(f"{name}: logits differ by {diff:.3g}")
                    if args.verbose:
                        print(f"  ok {dataset} {threat} {name} ({params / 1e6:.1f} M params){note}", flush=True)
    total_loads = total = 0
    for (dataset, threat), (loads, n, checked, equal, worst) in counts.items():
        total_loads, total = total_loads + loads, total + n
        extra = f"; logits agree within 1e-4 for {equal} of {checked} compared (max |diff| {worst:.1e})" if checked else ""
        print(f"{loads} of {n} {TITLES[dataset]} {threat} entries load{extra}")
        if args.verbose:
            for reason in reasons[(dataset, threat)]:
                print(f"    not loaded: {reason}")
    print(f"{total_loads} of {total} entries in all")
    return 0


if __name__ == "__main__":
    sys.exit(main())
