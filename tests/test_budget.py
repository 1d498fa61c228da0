"""Training that fits a time budget: the planner, the stretched recipe, the layout of rows, re-planning while
training (with a test clock, so that decisions are reproducible), and whole budget runs."""

import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cnnlab import config, runs, train
from cnnlab.config import ScheduleConfig
from cnnlab.data.loader import TensorBatches, steps_per_epoch
from cnnlab.engine import Callback, budget, pace
from cnnlab.engine.layout import Layout
from cnnlab.engine.optim import LrSchedule
from cnnlab.errors import UserError
from test_bad_input import assert_one_line_error, run
from test_resume import CountEpochs, InterruptAt

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


@pytest.mark.parametrize("available,points,inner,closing", [(100.0, 1, 0.0, 0.0), (100.0, 1, 0.0, 3.0),
                                                              (100.0, 4, 0.5, 3.0), (37.5, 3, 0.2, 0.5)])
def test_planned_steps_fill_the_time_and_no_more(available, points, inner, closing):
    n, per_step = 20, 0.41

    def cost(steps):
        rows_inner, rows_closing = Layout.budget(n, steps, points).rows_after(0)
        return steps * per_step + rows_inner * inner + rows_closing * closing

    steps = budget.plan_steps(available, n, points, per_step, budget.RowCosts(inner, closing))
    assert steps > 0 and cost(steps) <= available < cost(steps + 1)


def test_a_layout_cuts_epochs_into_rows_and_labels_them_by_epochs_trained():
    plain = Layout.of([10, 10, 4])
    assert [plain.segment(d).end for d in (0, 10, 20)] == [10, 10, 4]
    assert [plain.label(e, s) for e, s in ((0, 10), (2, 4))] == [1, 3]  # a plain run's partial epoch: its number
    assert plain.segment(24) is None and plain.rows_after(0) == (0, 3)
    layout = Layout.budget(10, 24, 4)
    assert layout.epoch_steps == [10, 10, 4] and layout.cuts(0) == [2, 5, 8, 10] and layout.cuts(2) == [2, 4]
    segment = layout.segment(12)
    assert (segment.epoch, segment.start, segment.end, segment.closes_epoch) == (1, 2, 5, False)
    assert segment.label == 1.5 and layout.label(2, 4) == 2.4 and layout.label(0, 10) == 1
    assert layout.rows_after(0) == (7, 3) and layout.rows_after(20) == (1, 1)
    layout.resize(31)
    assert layout.epoch_steps == [10, 10, 10, 1] and layout.total_steps == 31
    for epochs in (0.3, 1.7, 2.5, 7.9, 9.99):  # about TARGET_ROWS rows, never fewer than 8
        steps = round(epochs * 88)
        layout = Layout.budget(88, steps, budget.points_per_epoch(epochs, 88))
        assert 8 <= sum(layout.rows_after(0)) <= 2 * budget.TARGET_ROWS
    assert budget.points_per_epoch(12, 88) == 1


def test_a_replanned_schedule_is_continuous_and_reaches_its_final_value_at_the_new_last_step():
    def schedule(name, total, **kw):
        cfg = ScheduleConfig(name=name, warmup_epochs=0.5, start_factor=0.1, final_factor=0.05, **kw)
        return LrSchedule(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), cfg, steps_per_epoch=10,
                          total_steps=total)

    for name in ("linear", "cosine", "onecycle", "constant", "plateau"):
        s = schedule(name, 100)
        s.anneal_to_end("linear")  # constant and plateau only; the others keep their own end
        assert s.factor(99) == pytest.approx(0.05)
        for at, total in ((40, 70), (60, 130)):  # shrink, then stretch
            before = s.factor(at)
            s.replan(at, total)
            assert s.factor(at) == pytest.approx(before)  # no jump where it changes
            assert s.factor(total - 1) == pytest.approx(0.05) and s.factor(total - 2) > 0.05
        restored = schedule(name, 100)
        restored.anneal_to_end("linear")
        restored.load_state_dict(s.state_dict())
        assert [restored.factor(k) for k in range(0, 130, 7)] == [s.factor(k) for k in range(0, 130, 7)]
    kept = schedule("constant", 100)
    kept.anneal_to_end(None)  # train.budget_schedule: recipe
    assert kept.factor(99) == 1.0
    step = schedule("step", 100, step_epochs=3, gamma=0.5)
    step.anneal_to_end("linear")  # decays by epochs already: kept
    assert step.factor(99) == 0.5 ** 3


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


def test_rows_inside_epochs_validate_a_subset_only_when_the_whole_split_costs_too_much():
    cfg = config.resolve(CONFIGS / "course-cnn.yaml", {"train.budget_minutes": 3})
    common = dict(elapsed_seconds=10.0, calibration_seconds=4.0, steps_per_epoch=88, step_seconds=0.7,
                  low_res_step_seconds=None, val_images=5000, test_images=10000)
    slow = budget.make_plan(cfg, eval_seconds_per_image=4e-4, **common)  # 2 s a validation, 3 epochs
    assert slow.points_per_epoch > 1 and slow.rows >= 8 and budget.MIN_VALIDATION_SUBSET <= slow.val_subset < 5000
    assert slow.validations == slow.rows and slow.anneal == "cosine" and slow.train_end_seconds < 180
    cheap = budget.make_plan(cfg, eval_seconds_per_image=1e-5, **common)
    assert cheap.points_per_epoch > 1 and cheap.val_subset == 0
    recipe = config.resolve(CONFIGS / "course-cnn.yaml", {"train.budget_minutes": 3, "train.budget_schedule": "recipe"})
    assert budget.make_plan(recipe, eval_seconds_per_image=1e-5, **common).anneal is None


def fast_tiny(root, out, **extra):
    return config.resolve(CONFIGS / "fast89.yaml", {
        "data.root": str(root), "data.download": False, "model.widths": [8, 16, 16], "train.batch_size": 50,
        "train.progress": False, "out": str(out), **extra})


@pytest.mark.whole_machine  # its plan (more than one epoch in 0.4 min) depends on the machine's pace
def test_a_budget_run_is_the_plain_run_of_its_planned_length_and_resumes_with_its_plan(fake_cifar_root, tmp_path,
                                                                                       monkeypatch):
    """The planner chooses a length: without re-planning the run then equals, bit for bit, a plain run of that
    length with the recipe stretched the same way (warm-up, low-resolution epochs, whitening bias, last
    fraction), its rows inside epochs notwithstanding. The budget run is interrupted after its first epoch and
    resumed: the resumed call keeps the plan its checkpoint holds and runs only the steps left, so the one
    comparison covers both (tests/test_resume.py covers resuming plain runs)."""
    monkeypatch.setattr(pace, "CHECK_SHARE", 1e9)  # no re-planning (the StepClock tests below replay re-plans)
    minutes = 0.4
    extra = {"train.budget_minutes": minutes, "schedule.warmup_epochs": 0.6}
    with pytest.raises(UserError, match="interrupted after 1 finished epochs"):
        train(fast_tiny(fake_cifar_root, tmp_path / "budget", **extra), callbacks=[InterruptAt(1)])
    plan = torch.load(tmp_path / "budget" / "checkpoint.pt", weights_only=True)["budget_plan"]
    assert plan["epochs"] > 1
    counted = CountEpochs()
    budgeted = train(fast_tiny(fake_cifar_root, tmp_path / "budget", **extra), resume=tmp_path / "budget",
                     callbacks=[counted])
    rows = runs.RunDir(tmp_path / "budget").read_metrics()
    assert 1 <= counted.ran < len(rows)  # continued after the first rows, did not start again
    summary = budgeted.summary
    assert {k: summary["budget"][k] for k in plan} == plan and summary["resumed"] is True
    assert plan["total_steps"] >= 1 and summary["steps"] == plan["total_steps"] and summary["budget"]["replans"] == []
    assert summary["stop_reason"] == "" and summary["budget_minutes"] == minutes
    assert summary["actual_seconds"] > 0 and summary["planned_seconds"] <= minutes * 60
    f = plan["stretch"]
    plain = train(fast_tiny(fake_cifar_root, tmp_path / "plain", **{
        "train.epochs": plan["epochs"], "data.low_res_epochs": 1.0 * f, "schedule.warmup_epochs": 0.6 * f,
        "model.whiten_bias_epochs": 1.0 * f}))
    a, b = load_file(tmp_path / "budget" / "best.safetensors"), load_file(tmp_path / "plain" / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert plain.summary["test_accuracy"] == summary["test_accuracy"]


class StepClock(Callback):
    """The budget's clock for a test: time passes only in training steps, `seconds` a step, `slow` from
    step `slow_from` on (a machine that slows down). Decisions then depend on nothing real."""

    def __init__(self, seconds=1.0, slow=1.0, slow_from=10 ** 9):
        self.now, self.seconds, self.slow, self.slow_from = 0.0, seconds, slow, slow_from

    def __call__(self):
        return self.now

    def on_step_end(self, trainer):
        self.now += self.seconds * (self.slow if trainer.state.steps > self.slow_from else 1.0)


class InterruptInsideEpoch(Callback):
    """Ctrl-C after the first row inside an epoch that comes after a re-plan."""

    def on_epoch_end(self, trainer, row):
        if trainer.pacer.decisions and row["epoch"] != int(row["epoch"]):
            raise KeyboardInterrupt


def cnn_tiny(root, out, **extra):
    """A cnn4 run on the fake data (8 steps an epoch) with the course's constant lr, 1 s a step by the test clock."""
    return config.resolve(None, {
        "data.root": str(root), "data.download": False, "data.val_size": 100, "model.name": "cnn4",
        "model.widths": [8, 16], "model.fc_width": 32, "model.batchnorm": True, "model.dropout": [0.1, 0.1, 0.2],
        "data.augment.translate": 2, "data.augment.flip": True, "optim.name": "rmsprop", "optim.lr": 0.002,
        "train.batch_size": 50, "train.eval_batch_size": 100, "train.progress": False, "train.epochs": 350,
        "train.budget_minutes": 0.5, "out": str(out), **extra})


def with_test_clock(monkeypatch, clock):
    """The test clock, a calibration of 1 s a step, rows that cost nothing (by either clock), and fixed
    estimates of the end's files and exit: a plan that depends on nothing real."""
    monkeypatch.setattr(pace, "clock", clock)
    monkeypatch.setattr(budget, "ROW_OVERHEAD_SECONDS", 0.0)
    monkeypatch.setattr(budget, "final_write_seconds", lambda curves_seconds: 1.0)
    monkeypatch.setattr(budget, "exit_seconds", lambda: 0.5)
    monkeypatch.setattr(budget, "calibrate", lambda *a, **k: {
        "step_seconds": 1.0, "low_res_step_seconds": None, "eval_seconds_per_image": 0.0,
        "calibration_seconds": 0.0, "step_seconds_spread": 0.0, "calibration_steps": 6})


def test_few_epochs_give_at_least_8_validation_rows_and_the_lr_anneals_to_its_end(fake_cifar_root, tmp_path,
                                                                                  monkeypatch):
    clock = StepClock()
    with_test_clock(monkeypatch, clock)
    result = train(cnn_tiny(fake_cifar_root, tmp_path / "run"), callbacks=[clock], started=0.0)
    plan = result.summary["budget"]
    assert plan["epochs"] < 8 and plan["points_per_epoch"] > 1 and plan["anneal"] == budget.ANNEAL_FORM
    history = runs.RunDir(tmp_path / "run").read_metrics()
    validated = [r for r in history if r["val_accuracy"] == r["val_accuracy"]]
    assert len(validated) >= 8 and len(validated) == len(history)
    epochs = [r["epoch"] for r in history]
    assert epochs == sorted(epochs) and epochs[-1] == pytest.approx(result.summary["steps"] / 8)
    assert history[-1]["lr"] == 0.0 and history[0]["lr"] > 0  # annealed to final_factor 0 by the last step
    assert isinstance(result.summary["best_epoch"], int) and 1 <= result.summary["best_epoch"] <= 4  # an epoch end
    clock = StepClock()
    with_test_clock(monkeypatch, clock)
    recipe = train(cnn_tiny(fake_cifar_root, tmp_path / "recipe", **{"train.budget_schedule": "recipe"}),
                   callbacks=[clock], started=0.0)
    assert recipe.summary["budget"]["anneal"] is None
    assert {r["lr"] for r in runs.RunDir(tmp_path / "recipe").read_metrics()} == {0.002}


def test_replanning_shrinks_the_remaining_steps_when_steps_get_slower(fake_cifar_root, tmp_path, monkeypatch):
    steady = StepClock()
    with_test_clock(monkeypatch, steady)
    planned = train(cnn_tiny(fake_cifar_root, tmp_path / "steady"), callbacks=[steady], started=0.0).summary
    assert planned["budget"]["replans"] == [] and planned["steps"] == planned["budget"]["total_steps"]
    slow = StepClock(slow=2.0, slow_from=6)  # from step 6 on, steps take twice as long as calibrated
    with_test_clock(monkeypatch, slow)
    result = train(cnn_tiny(fake_cifar_root, tmp_path / "slow"), callbacks=[slow], started=0.0).summary
    replans = result["budget"]["replans"]
    assert replans and all(b[1] < a[1] for a, b in zip([[0, planned["steps"]]] + replans, replans))
    assert result["steps"] == replans[-1][1] < 0.75 * planned["steps"] and result["stop_reason"] == ""
    assert slow.now <= result["budget"]["train_end_seconds"]  # training ended in time, by the clock it followed
    assert runs.RunDir(tmp_path / "slow").read_metrics()[-1]["lr"] == 0.0  # still annealed to its end
    fast = StepClock(slow=0.5, slow_from=6)  # a machine faster than calibrated: the run grows
    with_test_clock(monkeypatch, fast)
    result = train(cnn_tiny(fake_cifar_root, tmp_path / "fast"), callbacks=[fast], started=0.0).summary
    assert result["steps"] > 1.5 * planned["steps"] and result["budget"]["replans"][-1][1] == result["steps"]


def test_a_slowed_run_leaves_its_end_the_time_it_takes_at_that_pace(fake_cifar_root, tmp_path, monkeypatch):
    """A machine that slows down evaluates, writes and exits slower too: training ends early enough for the
    final test, the end's files and the exit at the measured pace (a real 0.6-minute run on a slowed VM ended
    1.6 s over its budget, in its test evaluation)."""
    slow = StepClock(slow=2.0, slow_from=6)
    with_test_clock(monkeypatch, slow)
    calibrated = budget.calibrate()
    # the end (test, files, exit) costs several steps; validation rows little (their reserve is slack here: the
    # test clock does not advance while they run)
    monkeypatch.setattr(budget, "calibrate", lambda *a, **k: {**calibrated, "eval_seconds_per_image": 0.005})
    monkeypatch.setattr(budget, "final_write_seconds", lambda curves_seconds: 4.0)
    monkeypatch.setattr(budget, "exit_seconds", lambda: 3.0)
    result = train(cnn_tiny(fake_cifar_root, tmp_path / "run"), callbacks=[slow], started=0.0).summary
    plan = result["budget"]
    assert plan["test_seconds"] > 0.5 and plan["final_write_seconds"] == 4.0 and plan["exit_seconds"] == 3.0
    assert result["budget"]["replans"] and result["stop_reason"] == ""
    # at twice the calibrated pace the end takes its calibrated seconds more than the plan reserved: training
    # left them, give or take one slowed step (decisions come between steps; 18 s without the end's reserve)
    end = plan["test_seconds"] + plan["final_write_seconds"] + plan["exit_seconds"]
    assert slow.now <= plan["train_end_seconds"] - end + 2.0


def test_a_resumed_budget_run_replays_the_decisions_bit_for_bit(fake_cifar_root, tmp_path, monkeypatch):
    clock = StepClock(slow=1.6, slow_from=5)
    with_test_clock(monkeypatch, clock)
    whole = train(cnn_tiny(fake_cifar_root, tmp_path / "whole"), callbacks=[clock], started=0.0).summary
    assert len(whole["budget"]["replans"]) >= 2
    clock = StepClock(slow=1.6, slow_from=5)
    with_test_clock(monkeypatch, clock)
    cfg = cnn_tiny(fake_cifar_root, tmp_path / "cut")
    with pytest.raises(Exception):  # Interrupted, after a row inside an epoch and the first re-plans
        train(cfg, callbacks=[clock, InterruptInsideEpoch()], started=0.0)
    saved = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    assert saved["pace"]["decisions"] and saved["fit"]["steps"] % 8  # stopped inside an epoch
    resumed = train(cnn_tiny(fake_cifar_root, tmp_path / "cut"), resume=tmp_path / "cut", callbacks=[clock],
                    started=0.0).summary
    assert resumed["budget"]["replans"] == whole["budget"]["replans"] and resumed["steps"] == whole["steps"]
    a, b = load_file(tmp_path / "whole" / "best.safetensors"), load_file(tmp_path / "cut" / "best.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    drop = {"epoch_seconds", "images_per_second"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in runs.RunDir(tmp_path / "cut").read_metrics()] \
        == [{k: v for k, v in r.items() if k not in drop} for r in runs.RunDir(tmp_path / "whole").read_metrics()]


# A budget run on real CIFAR-10, as a process, ending within its minutes: tests/test_cli.py's end-to-end test.


def test_bad_budgets_are_one_line_errors(tmp_path, fake_cifar_root, capsys):
    """Through cli.main in this process, as test_bad_input.py does (test_cli.py runs a one-line error as a process)."""
    for value in ("0", "-1"):
        assert_one_line_error(*run(["train", "--minutes", value, "--data-root", fake_cifar_root, "--out",
                                    tmp_path / "r"], capsys)[::2], "train.budget_minutes", f"got {value}")
    assert_one_line_error(*run(["train", "--minutes", "0.01", "--data-root", fake_cifar_root, "data.download=false",
                                "--val-size", "0", "--out", tmp_path / "r2"], capsys)[::2],
                          "--minutes 0.01 is too small for one training step", "give at least --minutes")
    assert_one_line_error(*run(["train", "--minutes", "1", "--data-root", fake_cifar_root, "data.download=false",
                                "--val-size", "100", "train.budget_schedule=cosine", "--out", tmp_path / "r3"],
                               capsys)[::2], "train.budget_schedule", "anneal, recipe")


def test_the_budget_of_a_command_counts_from_its_process_start():
    """The interpreter's start and the imports (torch: seconds) belong to the minutes `--minutes` promises."""
    import time

    from cnnlab.engine.budget import process_start

    age = time.perf_counter() - process_start()
    if sys.platform.startswith("linux"):
        assert 0.3 < age < 600, age  # this pytest process has imported torch and collected tests by now
    else:
        assert age >= 0


def test_the_course_shares_the_minutes_really_left_before_every_budgeted_step():
    """Unused minutes reach every later step, the last one included; an overrun is taken from them, never
    below their minimums; the report and the fixed steps keep their estimates."""
    from cnnlab.course.plan import REPORT_MINUTES, RESERVE, START_MINUTES, Step, share

    def steps():
        return [Step("cnn", "task1", "", ["train", "{minutes}"], weight=4, min_minutes=0.8),
                Step("filters", "task1", "", ["visualize"], min_minutes=0.3),
                Step("finetune", "task3", "", ["finetune", "{minutes}"], weight=6, min_minutes=0.5),
                Step("style", "task5", "", ["stylize", "{minutes}"], weight=8, min_minutes=0.6, overhead_minutes=0.3),
                Step("apply", "task5", "", ["stylize"], min_minutes=0.3)]

    planned = steps()
    share(planned, 60)
    fixed = sum(s.minutes + START_MINUTES for s in planned if not s.budgeted)
    assert sum(s.minutes for s in planned if s.budgeted) + fixed + REPORT_MINUTES == pytest.approx(60 - 0.05 * 60)
    assert RESERVE == 0.05 and planned[3].command() == ["stylize", f"{planned[3].minutes - 0.3:.2f}"]
    early = steps()  # cnn and filters took 10 minutes instead of their share: the rest have more
    share(early, 50, finished=["cnn", "filters"])
    assert early[2].minutes > planned[2].minutes and early[3].minutes > planned[3].minutes  # the last one too
    assert (early[2].minutes - 0.5) / (early[3].minutes - 0.6) == pytest.approx(6 / 8)  # beyond the minimums
    late = steps()  # they overran: the later shares shrink, down to the minimums at most
    share(late, 1.5, finished=["cnn", "filters"])
    assert [late[2].minutes, late[3].minutes, late[4].minutes] == [0.5, 0.6, 0.3]
