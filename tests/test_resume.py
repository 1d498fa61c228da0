"""Resume = uninterrupted, bit for bit on the CPU, for every optimizer and every training feature; and the
run directory's guarantees (best weights, checkpoint, safe loading, file modes)."""

import json
import os
import pickle
import stat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from cnnlab import classify, config, evaluate, runs, train
from cnnlab.engine import Callback
from cnnlab.errors import UserError


class CountEpochs(Callback):
    """How many epochs this call ran (a resumed run runs only those its checkpoint lacks)."""

    def __init__(self):
        self.ran = 0

    def on_epoch_end(self, trainer, row):
        self.ran += 1


class InterruptAt(Callback):
    """Simulates Ctrl-C when epoch `epoch` (0-based) starts."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_start(self, trainer, epoch):
        if epoch == self.epoch:
            raise KeyboardInterrupt


CNN = {"model.name": "cnn4", "model.widths": [8, 16], "model.fc_width": 32, "model.batchnorm": True,
       "model.dropout": [0.2, 0.2, 0.3], "data.augment.translate": 2, "data.augment.flip": True,
       "data.augment.cutout": 4}
FAST = {"model.name": "fastnet", "model.widths": [8, 16, 16], "model.whiten_bias_epochs": 1.5,
        "data.low_res_size": 24, "data.low_res_epochs": 1.5, "data.augment.translate": 2,
        "data.augment.flip": True, "data.augment.flip_mode": "alternating", "train.tta": "flip_translate"}
SCENARIOS = {
    "sgd+cosine+smoothing": {**CNN, "optim.name": "sgd", "optim.lr": 0.05, "optim.momentum": 0.9,
                             "optim.nesterov": True, "schedule.name": "cosine", "schedule.warmup_epochs": 0.5,
                             "train.label_smoothing": 0.1},
    "rmsprop+keras-decay+step": {**CNN, "optim.name": "rmsprop", "optim.lr": 0.002, "optim.decay": 1e-3,
                                 "schedule.name": "step", "schedule.step_epochs": 1, "schedule.gamma": 0.5},
    "adam+onecycle+ema": {**CNN, "optim.name": "adam", "optim.lr": 0.003, "schedule.name": "onecycle",
                          "train.ema.decay": 0.9, "train.ema.warmup_epochs": 0.5},
    "adamw+plateau": {**CNN, "optim.name": "adamw", "optim.lr": 0.003, "optim.weight_decay": 0.01,
                      "schedule.name": "plateau", "schedule.patience": 0, "schedule.monitor": "val_accuracy"},
    # Muon + SGD, progressive resizing switching mid-epoch, whitening bias freezing mid-epoch, lookahead,
    # alternating flips, label smoothing, a fractional last epoch, TTA, no validation split
    "muon+lowres+whiten+lookahead+fraction": {
        **FAST, "optim.name": "muon", "optim.lr": 2.0, "optim.muon_lr": 0.1, "optim.momentum": 0.85,
        "optim.nesterov": True, "optim.muon_normalize": True, "optim.lr_batch_size": 100,
        "schedule.name": "linear", "train.label_smoothing": 0.2, "train.epochs": 3.5, "data.val_size": 0,
        "train.lookahead.every": 2, "train.lookahead.start_epochs": 1},
}


def rows(run_dir):
    drop = {"epoch_seconds", "images_per_second"}
    history = torch.load(Path(run_dir) / "checkpoint.pt", weights_only=True)["fit"]["history"]
    return [{k: v for k, v in r.items() if k not in drop} for r in json.loads(json.dumps(history))]


def assert_same_weights(a_dir, b_dir, name="best.safetensors"):
    a, b = load_file(Path(a_dir) / name), load_file(Path(b_dir) / name)
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_resume_equals_uninterrupted_run(scenario, tiny_overrides, tmp_path):
    data_and_training = {k: v for k, v in tiny_overrides.items() if not k.startswith("model.")}
    common = {**data_and_training, "train.epochs": 3, **SCENARIOS[scenario]}
    full = train(config.resolve(None, {**common, "out": str(tmp_path / "full")}))
    with pytest.raises(UserError, match="interrupted after 2 finished epochs; continue with"):
        train(config.resolve(None, {**common, "out": str(tmp_path / "cut")}), callbacks=[InterruptAt(2)])
    assert not (tmp_path / "cut" / "summary.json").exists()
    counted = CountEpochs()
    resumed = train(config.resolve(None, {**common, "out": str(tmp_path / "cut")}), resume=tmp_path / "cut",
                    callbacks=[counted])
    assert counted.ran == len(rows(tmp_path / "full")) - 2  # it continued after epoch 2, not from the start
    assert_same_weights(tmp_path / "full", tmp_path / "cut")
    full_ckpt = torch.load(tmp_path / "full" / "checkpoint.pt", weights_only=True)
    cut_ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(full_ckpt["model"][k], cut_ckpt["model"][k]) for k in full_ckpt["model"])
    assert rows(tmp_path / "full") == rows(tmp_path / "cut")
    assert resumed.summary["test_accuracy"] == full.summary["test_accuracy"]
    assert resumed.summary["steps"] == full.summary["steps"] and resumed.summary["resumed"] is True


# A budget run keeps its plan when resumed: tests/test_budget.py (its run against the plain run of the same
# length is an interrupted and resumed one).


def test_best_weights_are_those_of_the_best_validation_epoch(tiny_overrides, tmp_path):
    class Snapshot(Callback):
        """The evaluated weights after each epoch."""

        def __init__(self):
            self.weights = []

        def on_epoch_end(self, trainer, row):
            self.weights.append({k: v.clone() for k, v in trainer.eval_model.state_dict().items()})

    snap = Snapshot()
    out = tmp_path / "r"
    result = train(config.resolve(None, {**tiny_overrides, **CNN, "train.epochs": 5, "optim.lr": 0.02,
                                         "out": str(out)}), callbacks=[snap])
    history = runs.RunDir(out).read_metrics()
    val = [r["val_accuracy"] for r in history]
    best = max(range(len(val)), key=lambda i: (val[i], -i))  # the first epoch with the highest accuracy
    assert result.summary["best_epoch"] == best + 1 and result.summary["best_val_accuracy"] == pytest.approx(val[best])
    saved = load_file(out / "best.safetensors")
    assert all(torch.equal(saved[k], snap.weights[best][k]) for k in saved)
    with safe_open(str(out / "best.safetensors"), framework="pt") as fh:
        assert fh.metadata()["epoch"] == str(best + 1)


def test_the_test_set_is_touched_only_after_training(tiny_overrides, tmp_path, monkeypatch):
    events = []
    real_make_batches = classify.make_batches

    class Watched:
        def __init__(self, batches):
            self.batches = batches
            self.labels = batches.labels

        def __iter__(self):
            events.append("test")
            return iter(self.batches)

        def __len__(self):
            return len(self.batches)

    def make_batches(*args, **kwargs):
        tr, val, test = real_make_batches(*args, **kwargs)
        return tr, val, Watched(test)

    class Mark(Callback):
        def on_epoch_end(self, trainer, row):
            events.append("epoch")

        def on_fit_end(self, trainer):
            events.append("fit end")

    monkeypatch.setattr(classify.training, "make_batches", make_batches)
    train(config.resolve(None, {**tiny_overrides, "out": str(tmp_path / "r")}), callbacks=[Mark()])
    assert events == ["epoch", "epoch", "fit end", "test"]
    events.clear()
    result = train(config.resolve(None, {**tiny_overrides, "train.final_test": False, "out": str(tmp_path / "s")}))
    assert "test" not in events and result.summary["test_accuracy"] is None
    assert not (tmp_path / "s" / "evaluation.json").exists()


def test_a_crash_between_the_weights_and_the_checkpoint_is_repaired_on_resume(tiny_overrides, tmp_path):
    """best.safetensors from an epoch the checkpoint does not know (the crash came before the checkpoint
    was written) is replaced by the checkpoint's own copy of the best weights on resume."""
    common = {**tiny_overrides, "train.epochs": 3}
    train(config.resolve(None, {**common, "out": str(tmp_path / "full")}))
    cfg = config.resolve(None, {**common, "out": str(tmp_path / "cut")})
    with pytest.raises(UserError):
        train(cfg, callbacks=[InterruptAt(2)])
    ckpt = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert ckpt["best"]["epoch"] == ckpt["fit"]["best_epoch"] >= 1
    # simulate: epoch 3's best weights written, then the crash
    stray = {k: torch.full_like(v, 7) if v.is_floating_point() else v for k, v in ckpt["best"]["weights"].items()}
    runs.RunDir(tmp_path / "cut").save_weights(stray, runs.BEST, metadata={"epoch": "3"})
    counted = CountEpochs()
    train(config.resolve(None, {**common, "out": str(tmp_path / "cut")}), resume=tmp_path / "cut", callbacks=[counted])
    assert counted.ran == 1  # epoch 3 only: the repair did not restart the run
    assert_same_weights(tmp_path / "full", tmp_path / "cut")


class Payload:
    """Unpickling this runs os.system: a malicious 'checkpoint'."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_tampered_checkpoint_is_refused_without_running_it(tiny_overrides, tmp_path):
    out = tmp_path / "r"
    cfg = config.resolve(None, {**tiny_overrides, "out": str(out)})
    with pytest.raises(UserError):
        train(cfg, callbacks=[InterruptAt(1)])
    marker = tmp_path / "pwned"
    torch.save({"model": Payload(marker)}, out / "checkpoint.pt")  # torch.save pickles the payload
    with pytest.raises(UserError, match=r"cannot read checkpoint .*checkpoint.pt .*damaged or not a cnnlab checkpoint"):
        train(config.resolve(None, {**tiny_overrides, "out": str(out)}), resume=out)
    (out / "best.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(UserError, match=r"cannot read weights .*best.safetensors"):
        evaluate(out)
    assert not marker.exists()


def test_run_files_get_the_umask_permissions_not_the_temporary_files(tiny_overrides, tmp_path):
    old = os.umask(0o022)
    try:
        out = tmp_path / "r"
        train(config.resolve(None, {**tiny_overrides, "train.epochs": 1, "out": str(out)}))
    finally:
        os.umask(old)
    for name in ("config.yaml", "summary.json", "metrics.csv", "checkpoint.pt", "best.safetensors"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
    assert not list(out.glob(".*.tmp"))  # no temporary file left behind
