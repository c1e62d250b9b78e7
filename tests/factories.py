"""Small seeded models shared by several test files (imported as a plain module from tests/)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.models import bn_branch, build_model


def advprop_model(num_classes: int = 3, shape: tuple = (3, 16, 16), seed: int = 0):
    """A tiny dual-BN (AdvProp) small_cnn whose main and aux BatchNorm statistics differ: the main
    branch saw uniform images, the aux branch brighter ones. Returned in eval mode."""
    torch.manual_seed(seed)
    channels = shape[0]
    model = build_model("small_cnn", num_classes, shape, [0.5] * channels, [0.25] * channels, dual_bn=True,
                        width=4, hidden=8)
    model.train()
    with torch.no_grad():
        model(torch.rand(16, *shape))
        with bn_branch(model, "aux"):
            model(torch.rand(16, *shape) * 3)
    return model.eval()


def snapshot_run(folder, epochs=(1, 2, 3), method: str = "standard", seed: int = 0):
    """A training run folder as ``snapshot_every: 1`` leaves it, without training: ``state.json`` and
    one ``epoch-NNNN/model`` checkpoint per epoch, a tiny seeded ``small_cnn`` on ``shapes`` whose
    weights drift from epoch to epoch. Returns the folder."""
    import json
    from pathlib import Path

    from engine.checkpoints import make_card, save_checkpoint
    from engine.data import get_spec

    folder = Path(folder)
    spec = get_spec("shapes")
    torch.manual_seed(seed)
    model = build_model("small_cnn", spec.num_classes, spec.input_shape, spec.mean, spec.std, width=4, hidden=8)
    for epoch in epochs:
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.add_(0.3 * torch.randn_like(parameter) * parameter.std().nan_to_num(0.1))
        card = make_card(model, "shapes", name=f"{folder.name}_e{epoch}", training={"method": method, "epochs": epoch})
        save_checkpoint(model.eval(), card, folder / f"epoch-{epoch:04d}" / "model")
    (folder / "state.json").write_text(json.dumps({"epoch": max(epochs), "last": f"epoch-{max(epochs):04d}"}))
    return folder


def tiny_config(**kw):
    """A training config small enough to run in a test: 128 16-px shapes, a width-8 small_cnn, 2 epochs."""
    from engine.training import TrainConfig

    base = dict(dataset="shapes", dataset_options={"n": 128, "image_size": 16}, arch="small_cnn",
                arch_kwargs={"width": 8, "hidden": 32}, method="standard", epochs=2, batch_size=32,
                optimizer="adamw", lr=3e-3, eval_size=32, eval_steps=2, device="cpu")
    base.update(kw)
    return TrainConfig(**base)


# ------------------------------------------------------------------ a tiny RobustBench zoo
ZOO_WRN = {"depth": 10, "widen_factor": 1, "sub_block1": True}
ZOO_NAMES = ("Tiny2025A", "Tiny2025B", "Tiny2025C")


def tiny_zoo(monkeypatch, model_dir: Path) -> dict:
    from engine.checkpoints import robustbench as rb

    """Three zoo entries with leaderboard figures (added to the table for the test), their random
    checkpoints saved as RobustBench caches them."""
    entries = {}
    for seed, name in enumerate(ZOO_NAMES):
        board = {"clean_acc": 0.9 - seed / 10, "autoattack_acc": 0.5 - seed / 10, "eps": 8 / 255, "eps_text": "8/255",
                 "norm": "linf", "from": "test table"}
        entries[name] = rb.ZooEntry(name, "cifar10", "Linf", "wide_resnet", ZOO_WRN, 10, files=({"gdrive_id": name},),
                                    robustbench_model="WideResNet(10, 1)", leaderboard=board)
        torch.manual_seed(seed)
        net = build_model("wide_resnet", 10, (3, 32, 32), [0.0] * 3, [1.0] * 3, **ZOO_WRN).net.eval()
        path = rb.cache_path(entries[name], model_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": net.state_dict()}, path)
    source, real = rb._table()
    monkeypatch.setattr(rb, "_table", lambda: (source, real + tuple(entries.values())))
    return entries


def tiny_cifar(root: Path, count: int = 8) -> None:
    """CIFAR-10's binary release with ``count`` records per batch (1 label byte + 3×32×32 pixels)."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        pixels = rng.integers(0, 256, (count, 3 * 32 * 32), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels[:, None], pixels], axis=1).tobytes())
