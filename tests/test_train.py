"""Whole training runs on small data: run directory, resume, divergence, ablation grids."""

import json

import pytest
import torch
from safetensors.torch import load_file

from cnnlab import ablate, config, evaluate, train
from cnnlab.engine import Callback, TrainingDiverged
from cnnlab.errors import UserError
from conftest import assert_cell, read_table
from test_resume import InterruptAt


def test_run_directory_contract(tiny_overrides, tmp_path):
    cfg = config.resolve(None, {**tiny_overrides, "out": str(tmp_path / "run")})
    result = train(cfg)
    s = result.summary
    for key in ("model", "epochs", "best_val_accuracy", "test_accuracy", "train_seconds", "params", "seed",
                "git_commit", "torch_version"):
        assert key in s
    assert 0 <= s["test_accuracy"] <= 1 and s["epochs"] == 2
    assert s["test_accuracy"] > 0.3  # the fake classes are easy: learning happened
    for name in ("config.yaml", "metrics.csv", "curves.png", "best.safetensors", "checkpoint.pt",
                 "environment.json", "confusion_matrix.png", "evaluation.json"):
        assert (tmp_path / "run" / name).is_file(), name
    assert len((tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()) == 3
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["fit"]["epoch"] == 2
    ev = evaluate(tmp_path / "run")
    assert ev["test_accuracy"] == pytest.approx(s["test_accuracy"])
    assert len(ev["per_class_accuracy"]) == 10 and sum(map(sum, ev["confusion_matrix"])) == 200


def test_resume_with_a_different_config_is_refused(tiny_overrides, tmp_path):
    cfg = config.resolve(None, {**tiny_overrides, "out": str(tmp_path / "r")})
    with pytest.raises(UserError):
        train(cfg, callbacks=[InterruptAt(1)])
    changed = config.resolve(None, {**tiny_overrides, "out": str(tmp_path / "r"), "optim.lr": 0.1})
    with pytest.raises(UserError, match=r"cannot resume .*config differs \(optim.lr: 0.003 -> 0.1\)"):
        train(changed, resume=tmp_path / "r")


def test_existing_run_is_not_overwritten(tiny_overrides, tmp_path):
    cfg = config.resolve(None, {**tiny_overrides, "out": str(tmp_path / "r"), "train.epochs": 1})
    train(cfg)
    before = (tmp_path / "r" / "summary.json").read_text()
    with pytest.raises(UserError, match="already holds a run"):
        train(config.resolve(None, {**tiny_overrides, "out": str(tmp_path / "r"), "train.epochs": 1}))
    assert (tmp_path / "r" / "summary.json").read_text() == before


class ExplodeAfter(Callback):
    """Makes the learning rate absurd once epoch 1 is done, so epoch 2 diverges."""

    def on_epoch_start(self, trainer, epoch):
        if epoch == 1:
            for g in trainer.optimizer.param_groups:
                g["base_lr"] = 1e30


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_overrides, tmp_path):
    cfg = config.resolve(None, {**tiny_overrides, "out": str(tmp_path / "r"), "train.epochs": 3, "optim.name": "sgd"})
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf).*kept the last good checkpoint .*epoch 1\)"):
        train(cfg, callbacks=[ExplodeAfter()])
    ckpt = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    assert ckpt["fit"]["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    assert not (tmp_path / "r" / "summary.json").exists()


def test_ablation_grid_compares_and_skips_finished_runs(tiny_overrides, tmp_path, capsys):
    base = config.apply_overrides({}, {k: v for k, v in tiny_overrides.items() if not k.startswith("model.")})
    grid = {"name": "tiny", "base": {**base, "train": {**base["train"], "epochs": 1}},
            "runs": [{"name": "fc", "set": {"model.name": "mlp", "model.hidden": 32}, "reference": "36 %"},
                     {"name": "cnn", "set": {"model.widths": [8, 16], "model.fc_width": 32}}],
            "grid": {"train.seed": [0, 1]}}
    import yaml
    f = tmp_path / "grid.yaml"
    f.write_text(yaml.safe_dump(grid))
    out = ablate(f, tmp_path / "abl")
    md = (out / "comparison.md").read_text()
    assert md.count("| fc-seed=") == 2 and md.count("| cnn-seed=") == 2
    assert "model.name=mlp" in md and "train.seed=1" in md and "36 %" in md
    assert (out / "comparison.png").is_file()
    assert_rows_are_the_runs(out)
    # the table is read again from the runs when the grid is run again (finished runs skipped): one run's
    # figures changed to values no two columns share show any column read from the wrong key or run
    doctored = out / "cnn-seed=1" / "summary.json"
    s = json.loads(doctored.read_text())
    s.update(best_val_accuracy=0.71, val_accuracy=0.71, final_val_accuracy=0.43, test_accuracy=0.29, epochs=7,
             train_seconds=90.0)
    doctored.write_text(json.dumps(s))
    capsys.readouterr()
    ablate(f, tmp_path / "abl")
    assert capsys.readouterr().out.count("finished, skipped") == 4
    assert_rows_are_the_runs(out)


def assert_rows_are_the_runs(out) -> list[dict]:
    """Every row of an ablation's comparison.csv holds its own run's figures, read from its summary.json, and
    the ranks follow the best validation accuracy."""
    rows = read_table(out / "comparison.csv")
    assert sorted(r["run"] for r in rows) == ["cnn-seed=0", "cnn-seed=1", "fc-seed=0", "fc-seed=1"]
    summaries = {r["run"]: json.loads((out / r["run"] / "summary.json").read_text()) for r in rows}
    for row in rows:
        s = summaries[row["run"]]
        assert row["status"] == "finished" and s["name"].endswith(row["run"])
        for column in ("best_val_accuracy", "test_accuracy", "epochs"):
            assert_cell(row[column], s[column])
        assert_cell(row["minutes"], s["train_seconds"] / 60)
        assert s["model"] == ("mlp" if row["run"].startswith("fc") else "cnn4")
        assert f"train.seed={s['seed']}" in row["settings"]
    ranked = sorted(rows, key=lambda r: int(r["val_rank"]))
    assert [int(r["val_rank"]) for r in ranked] == [1, 2, 3, 4]
    vals = [summaries[r["run"]]["best_val_accuracy"] for r in ranked]
    assert vals == sorted(vals, reverse=True)
    return rows


class PoisonLastStep(Callback):
    """After the very last optimizer step of epoch `epoch` (0-based), the weights turn NaN: the loss of that
    step was computed before the update, so only a check of the weights can see it."""

    def __init__(self, epoch):
        self.epoch, self.current, self.steps = epoch, -1, 0

    def on_epoch_start(self, trainer, epoch):
        self.current, self.steps = epoch, 0

    def on_step_end(self, trainer):
        self.steps += 1
        if self.current == self.epoch and self.steps == trainer.schedule.steps_per_epoch:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))


def test_nan_weights_after_the_last_step_are_never_saved(tiny_overrides, tmp_path):
    out = tmp_path / "r"
    cfg = config.resolve(None, {**tiny_overrides, "data.val_size": 0, "out": str(out)})  # no validation to notice
    with pytest.raises(TrainingDiverged, match=r"weights became NaN or infinite .* in epoch 2.*epoch 1\)"):
        train(cfg, callbacks=[PoisonLastStep(1)])
    best = load_file(out / "best.safetensors")
    assert all(torch.isfinite(v).all() for v in best.values() if v.is_floating_point())
    assert torch.load(out / "checkpoint.pt", weights_only=True)["fit"]["epoch"] == 1
    assert not (out / "summary.json").exists()


def test_plateau_without_validation_is_refused(tiny_overrides, tmp_path):
    cfg = config.resolve(None, {**tiny_overrides, "schedule.name": "plateau", "data.val_size": 0,
                                "out": str(tmp_path / "r")})
    with pytest.raises(UserError, match="schedule 'plateau' .* needs data.val_size > 0"):
        train(cfg)


def test_evaluate_applies_the_runs_test_time_augmentation(tiny_overrides, tmp_path):
    from cnnlab.classify import load_run_model
    from cnnlab.data import load
    from cnnlab.data.loader import TensorBatches
    from cnnlab.engine import predict

    out = tmp_path / "r"
    # fp32: the comparison below is in fp32 (auto picks bf16 on CPUs with native bf16, whose rounding is larger)
    summary = train(config.resolve(None, {**tiny_overrides, "train.tta": "flip_translate", "train.precision": "fp32",
                                          "out": str(out)})).summary
    ev = evaluate(out)
    assert ev["test_loss"] == pytest.approx(summary["test_loss"], abs=1e-5)
    model, cfg, _ = load_run_model(out)
    data = load(cfg.data)
    batches = TensorBatches(data.test_images, data.test_labels, 100, mean=data.mean, std=data.std)
    cpu = torch.device("cpu")
    with_tta = predict(model, batches, cpu, "fp32", "flip_translate")
    without = predict(model, batches, cpu, "fp32", "none")
    assert ev["test_loss"] == pytest.approx(with_tta.loss, abs=1e-4)
    assert abs(without.loss - with_tta.loss) > 1e-3  # so the check above could fail
