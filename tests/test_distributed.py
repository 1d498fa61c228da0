"""torchrun launches the same engine on several processes (DistributedDataParallel, gloo on CPU)."""

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file


def test_torchrun_two_processes_train_one_model(tmp_path, fake_cifar_root):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "cnnlab",
           "train", "--model", "cnn4", "model.widths=[8,16]", "model.fc_width=32", "--epochs", "2",
           "--batch-size", "25", "--val-size", "100", "--no-progress", "--data-root", str(fake_cifar_root),
           "data.download=false", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["threads"] == 1
    assert summary["test_accuracy"] > 0.3
    # each rank saw half of the 400 training images per epoch; the epoch's images are summed over ranks
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
    weights = load_file(out / "best.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
