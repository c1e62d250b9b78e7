"""2-process DistributedDataParallel training on CPU (gloo) writes a checkpoint that loads."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.training import TrainConfig

REPO = Path(__file__).resolve().parents[3]

SCRIPT = """
import os, sys
from engine.training import TrainConfig, train
r = train(TrainConfig.from_json(open(sys.argv[1]).read()), run_dir=sys.argv[2])
print(f"RESULT rank{os.environ['RANK']} {r.status} {r.epochs_completed}", flush=True)
"""


@pytest.mark.timeout(180)
def test_two_process_gloo_ddp_writes_loadable_checkpoint(tmp_path):
    cfg = TrainConfig(dataset="shapes", dataset_options={"n": 128, "image_size": 16}, arch="small_cnn",
                      arch_kwargs={"width": 8, "hidden": 32}, method="pgd", steps=2, epochs=2,
                      batch_size=32, eval_size=32, eval_steps=2, device="cpu", name="ddp-tiny")
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    (tmp_path / "run.py").write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29517", str(tmp_path / "run.py"), str(tmp_path / "cfg.json"),
                          str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "RESULT rank0 done 2" in out.stdout and "RESULT rank1 done 2" in out.stdout
    from engine.checkpoints import load
    loaded = load(Path(os.environ["ROBUSTSCOPE_CHECKPOINTS"]) / "ddp-tiny")
    assert loaded.card.to_dict()["training"]["epochs_completed"] == 2
    assert len(loaded.card.to_dict()["metrics"]["history"]) == 2
