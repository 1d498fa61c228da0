"""torchrun launches the same engine on several processes (DistributedDataParallel, gloo on CPU)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from cnnlab import config, train
from cnnlab.engine import distributed

COMMON = ["--model", "cnn4", "model.widths=[8,16]", "model.fc_width=32", "model.dropout=none", "--epochs", "2",
          "--batch-size", "50", "--val-size", "100", "--no-progress", "data.download=false", "--optimizer", "sgd",
          "--lr", "0.05", "optim.momentum=0.9", "data.augment.translate=2", "data.augment.flip=true"]


def torchrun(args, processes=2, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
           "-m", "cnnlab", "train", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def test_two_processes_with_half_the_batch_each_train_what_one_process_trains(tmp_path, fake_cifar_root):
    """batch_size is the global batch: 2 ranks x 25 images compute the 1 x 50 step (same images, same
    augmentation, the same learning rate); only the order of float sums differs."""
    out = tmp_path / "ddp"
    proc = torchrun([*COMMON, "--data-root", fake_cifar_root, "--out", out])
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = train(config.resolve(None, {"model.name": "cnn4", "model.widths": [8, 16], "model.fc_width": 32,
                                      "model.dropout": "none", "train.epochs": 2, "train.batch_size": 50,
                                      "data.val_size": 100, "train.progress": False, "data.download": False,
                                      "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9,
                                      "data.augment.translate": 2, "data.augment.flip": True, "train.threads": 1,
                                      "data.root": str(fake_cifar_root), "out": str(tmp_path / "one")}))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["threads"] == 1 and one.summary["world_size"] == 1
    rows = [line.split(",") for line in (out / "metrics.csv").read_text().splitlines()]
    header = rows[0]
    assert len(rows) == 3 and all(int(r[header.index("train_images")]) == 400 for r in rows[1:])  # 2 x 200
    a, b = load_file(out / "best.safetensors"), load_file(tmp_path / "one" / "best.safetensors")
    for k in a:
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5), k
    assert abs(summary["test_accuracy"] - one.summary["test_accuracy"]) <= 0.02
    assert list(out.glob("summary.json")) and not list(out.glob(".*.tmp"))  # one writer, nothing half-written


def test_a_time_limit_stops_every_rank_at_the_same_step(tmp_path, fake_cifar_root):
    """Each rank runs on its own clock; without agreement one rank would wait forever in an all-reduce."""
    out = tmp_path / "capped"
    proc = torchrun([*COMMON, "--epochs", "200", "train.max_train_minutes=0.02", "--data-root", fake_cifar_root,
                     "--out", out], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] < 200 and "time" in summary["stop_reason"]


def test_each_rank_resumes_its_own_random_state(tiny_overrides, tmp_path, monkeypatch):
    """The checkpoint holds one RNG state per rank (dropout differs per rank); a rank restores its own."""
    from test_resume import InterruptAt

    from cnnlab.errors import UserError

    out = tmp_path / "r"
    cfg = config.resolve(None, {**tiny_overrides, "out": str(out)})
    rank_states = []
    real_gather = distributed.all_gather_object

    def gather(obj):  # pretend to be rank 0 of 2: rank 1's state differs
        other = {"cpu": torch.Generator().manual_seed(123).get_state()}
        rank_states[:] = [obj, other]
        return real_gather(obj) + [other]

    monkeypatch.setattr(distributed, "all_gather_object", gather)
    with pytest.raises(UserError):
        train(cfg, callbacks=[InterruptAt(1)])
    saved = torch.load(out / "checkpoint.pt", weights_only=True)["rng"]
    assert len(saved) == 2 and not torch.equal(saved[0]["cpu"], saved[1]["cpu"])
    monkeypatch.setattr(distributed, "rank", lambda: 1)
    seen = {}

    class Capture(InterruptAt):
        def on_fit_start(self, trainer):
            seen["state"] = torch.get_rng_state()

    with pytest.raises(UserError):
        train(config.resolve(None, {**tiny_overrides, "out": str(out)}), resume=out, callbacks=[Capture(1)])
    assert torch.equal(seen["state"], saved[1]["cpu"])
