"""Training that fits a time budget: the planner, the stretched recipe, and whole budget runs."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab import config, train
from cnnlab.config import ScheduleConfig
from cnnlab.data.loader import TensorBatches, steps_per_epoch
from cnnlab.engine import budget
from cnnlab.engine.optim import LrSchedule
from cnnlab.errors import UserError
from conftest import real_data_root
from test_cli import assert_one_line_error, cnnlab

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_stretch_scales_every_epoch_counted_setting():
    cfg = config.resolve(CONFIGS / "fast89.yaml", {"schedule.warmup_epochs": 0.5, "train.ema.warmup_epochs": 1,
                                                   "train.lookahead.start_epochs": 2, "schedule.step_epochs": 1})
    out = budget.stretch(cfg, 1.7, {"whiten_bias_epochs": 1.0})
    assert out.train.epochs == 1.7 and cfg.train.epochs == 3.4  # a copy; the recipe is untouched
    half = 1.7 / 3.4
    assert out.data.low_res_epochs == pytest.approx(1 * half)
    assert out.schedule.warmup_epochs == pytest.approx(0.5 * half)
    assert out.schedule.step_epochs == pytest.approx(1 * half)
    assert out.train.ema.warmup_epochs == pytest.approx(1 * half)
    assert out.train.lookahead.start_epochs == pytest.approx(2 * half)
    assert out.model.args["whiten_bias_epochs"] == pytest.approx(half)
    assert out.optim == cfg.optim and out.train.batch_size == cfg.train.batch_size


@pytest.mark.parametrize("available,validation,every_epoch", [(100.0, 0.0, True), (100.0, 3.0, True),
                                                              (100.0, 3.0, False), (37.5, 0.5, True)])
def test_planned_steps_fill_the_time_and_no_more(available, validation, every_epoch):
    n, full, low, share = 20, 0.5, 0.2, 0.3

    def cost(steps):
        epochs = max(1, math.ceil(steps / n))
        validations = (epochs if every_epoch else 1) if validation else 0
        per_step = share * low + (1 - share) * full
        return steps * per_step + validations * validation + epochs * budget.EPOCH_OVERHEAD_SECONDS

    steps, validations = budget.plan_steps(available, n, full, low, share, validation, every_epoch)
    assert steps > 0 and cost(steps) <= available < cost(steps + 1) + validation + budget.EPOCH_OVERHEAD_SECONDS
    assert validations == ((math.ceil(steps / n) if every_epoch else 1) if validation else 0)


def test_stretched_schedule_ends_at_the_last_planned_step_with_fractional_epochs():
    images = torch.zeros(230, 3, 8, 8, dtype=torch.uint8)
    batches = TensorBatches(images, torch.arange(230) % 10, 20, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True,
                            low_res=(4, 1.0))
    n = len(batches)
    assert n == 12  # 11 full batches of 20 and a last one of 10
    for steps in (1, 7, n, n + 1, 3 * n - 1, 29):
        epochs = steps / n
        plan = steps_per_epoch(batches, epochs)
        assert sum(plan) == steps and all(s == n for s in plan[:-1]) and 0 < plan[-1] <= n
        schedule = LrSchedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                              ScheduleConfig(name="linear", final_factor=0.1), steps_per_epoch=n, total_steps=steps)
        if steps > 1:
            assert schedule.factor(steps - 1) == pytest.approx(0.1) and schedule.factor(steps - 2) > 0.1


def test_low_resolution_share_follows_the_stretch():
    images = torch.zeros(100, 3, 8, 8, dtype=torch.uint8)
    common = dict(mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True)
    recipe = TensorBatches(images, torch.arange(100) % 10, 10, low_res=(4, 1.0), **common)  # 1 of 3.4 epochs
    stretched = TensorBatches(images, torch.arange(100) % 10, 10, low_res=(4, 1.0 * 1.7 / 3.4), **common)
    assert recipe.low_res_steps() == 10 and stretched.low_res_steps() == 5
    sizes = [x.shape[-1] for e in range(2) for x, _ in stretched.epoch(e, 10)]
    assert sizes == [4] * 5 + [8] * 15  # the switch happens mid-epoch, at the planned step


def test_too_small_a_budget_names_the_minimum():
    cfg = config.resolve(None, {"train.budget_minutes": 0.01})
    with pytest.raises(UserError, match=r"--minutes 0.01 is too small for one training step on this machine "
                                        r".*give at least --minutes \d"):
        budget.make_plan(cfg, elapsed_seconds=3.0, calibration_seconds=1.0, steps_per_epoch=10, step_seconds=0.5,
                         low_res_step_seconds=None, eval_seconds_per_image=0.001, val_images=0, test_images=1000)


def fast_tiny(root, out, **extra):
    return config.resolve(CONFIGS / "fast89.yaml", {
        "data.root": str(root), "data.download": False, "model.widths": [8, 16, 16], "train.batch_size": 50,
        "train.progress": False, "out": str(out), **extra})


def test_a_budget_run_is_the_plain_run_of_its_planned_length(fake_cifar_root, tmp_path):
    """The planner only chooses a length: the run then equals, bit for bit, a plain run of that length with
    the recipe stretched the same way (warm-up, low-resolution epochs, whitening bias, last fraction)."""
    budgeted = train(fast_tiny(fake_cifar_root, tmp_path / "budget", **{"train.budget_minutes": 0.4,
                                                                         "schedule.warmup_epochs": 0.6}))
    plan = budgeted.summary["budget"]
    assert plan["total_steps"] >= 1 and budgeted.summary["steps"] == plan["total_steps"]
    assert budgeted.summary["stop_reason"] == "" and budgeted.summary["budget_minutes"] == 0.4
    assert budgeted.summary["actual_seconds"] > 0 and budgeted.summary["planned_seconds"] <= 0.4 * 60
    f = plan["stretch"]
    plain = train(fast_tiny(fake_cifar_root, tmp_path / "plain", **{
        "train.epochs": plan["epochs"], "data.low_res_epochs": 1.0 * f, "schedule.warmup_epochs": 0.6 * f,
        "model.whiten_bias_epochs": 1.0 * f}))
    a, b = load_file(tmp_path / "budget" / "best.safetensors"), load_file(tmp_path / "plain" / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert plain.summary["test_accuracy"] == budgeted.summary["test_accuracy"]


def test_budget_run_on_real_cifar_ends_within_its_budget(tmp_path):
    out = tmp_path / "run"
    minutes = 0.6
    proc = subprocess.run([sys.executable, "-m", "cnnlab", "train", "--config", CONFIGS / "fast89.yaml", "--minutes",
                           str(minutes), "--seed", "0", "--out", out, "--no-progress", "data.limit_train=5000",
                           "model.widths=[16,32,64]", "--data-root", real_data_root()],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[1].startswith(f"budget {minutes:g} min: ")
    s = json.loads((out / "summary.json").read_text())
    assert s["budget_minutes"] == minutes and 0.3 < s["test_accuracy"] <= 1
    assert s["stop_reason"] == ""  # the plan held: no emergency stop
    assert s["actual_seconds"] <= minutes * 60  # the whole run, final evaluation and files included
    assert s["steps"] == s["budget"]["total_steps"] > 10


def test_bad_budgets_are_one_line_errors(tmp_path, fake_cifar_root):
    for value in ("0", "-1"):
        proc = cnnlab("train", "--minutes", value, "--data-root", fake_cifar_root, "--out", tmp_path / "r")
        assert_one_line_error(proc, "train.budget_minutes", f"got {value}")
    proc = cnnlab("train", "--minutes", "0.01", "--data-root", fake_cifar_root, "data.download=false",
                  "--val-size", "0", "--out", tmp_path / "r2")
    assert_one_line_error(proc, "--minutes 0.01 is too small for one training step", "give at least --minutes")
