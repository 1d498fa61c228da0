"""Training that fits a time budget: calibrate, plan the steps, stretch the recipe over them, re-plan.

``cnnlab train --minutes M`` (``train.budget_minutes``) fits the *whole* run into M minutes on the machine
at hand: setup, training, validation, the final test-time-augmented evaluation and writing the run
directory. How:

1. Calibrate: training steps of a throwaway copy of the model (at each resolution the recipe uses), timed
   in steady state, after a warm-up that lets the allocator, oneDNN's primitive creation and the caches
   settle; the median is the step time and the 10th-90th percentile range its spread (both in the plan).
   Two evaluation passes of a batch with the test-time views (the second timed) give seconds per evaluated
   image. The copy has its own optimizer and the global RNG is restored afterwards.
2. Plan: the seconds left after setup, the final evaluation, the writing and a small margin buy a number of
   steps S, rows of metrics counted in. A run of fewer than TARGET_ROWS epochs writes several rows per epoch
   (engine/layout.py), so its curves have about TARGET_ROWS points; those rows validate on a fixed subset of
   the validation images when validating all of them would cost more than VALIDATION_SHARE of the training.
3. Stretch: the recipe is scaled from its own length (train.epochs) to S steps: train.epochs becomes
   S / steps_per_epoch (the last epoch fractional), and every epoch-counted setting scales by the same
   factor: warm-up, the low-resolution epochs, the step schedule's interval, EMA warm-up, lookahead start,
   and the model's own epoch-counted arguments (fastnet's whitening-bias epochs). Schedules with an end
   (linear, cosine, one-cycle) reach their final learning rate at the last step; ``step`` keeps its number
   of decays. ``constant`` and ``plateau`` have no end: with ``train.budget_schedule: anneal`` (the default)
   their lr is annealed to final_factor at the last step (ANNEAL_FORM; plateau still reduces on
   validation); ``train.budget_schedule: recipe`` keeps the recipe's schedule as it is, and then a budget
   only sets how long it runs.
4. Re-plan while training (engine/pace.py): every few percent of the steps the measured pace is compared
   with the plan, and the remaining steps and the lr curve are stretched or shrunk together to end training
   at the planned time; the decisions are part of the checkpoint, so a resumed run replays them.

A deadline (the planned end of training plus the margin) stops training mid-schedule only if the machine
turns out slower than even re-planning could follow; summary.json then says so (``stop_reason``).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

from ..config import Config
from ..errors import UserError
from .layout import Layout

def process_start() -> float:
    """The time.perf_counter() value at which this process started (from /proc on Linux), else now.

    `cnnlab train --minutes M` promises M minutes for the whole command, and the interpreter's start and
    the imports (torch alone takes 1-3 s) come before any line of cnnlab runs: measured from inside
    train(), a 15-minute budget ended 3 s late. An age that /proc cannot give sensibly (not Linux, or not
    within 10 minutes) counts from now.
    """
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        age = uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, clock ticks after boot
    except (OSError, ValueError, IndexError):
        return time.perf_counter()
    return time.perf_counter() - age if 0.0 <= age < 600.0 else time.perf_counter()


FINAL_WRITE_SECONDS = 3.0
"""Writing summary, weights, plots and the confusion matrix at the end, when not measured (final_write_seconds:
about 2 s on a 2-core AVX2 CPU, 0.4 s on a 2-core native-bf16 one)."""
ROW_OVERHEAD_SECONDS = 0.3
"""Per row of metrics: metrics.csv, checkpoint.pt, best weights (fsync'd), progress output."""
TARGET_ROWS = 10
"""Rows of metrics a run with few epochs aims at (at least 8 even when re-planning shortens it)."""
VALIDATION_SHARE = 0.05
"""The rows inside epochs may spend this share of the training time validating; beyond it they validate a
fixed subset of the validation images (the first N of the split: it is stratified and seeded)."""
MIN_VALIDATION_SUBSET = 1000
ANNEAL_FORM = "cosine"
"""How a budget anneals a schedule without an end (constant, plateau): half-cosine to final_factor, chosen on
validation over linear (course-cnn, 1 minute, 2 seeds, native-bf16 CPU: 67.20 vs 67.05 %, the recipe's constant lr
65.58 %; benchmarks/results/budget-anneal-native-bf16.md). The two are within noise; both beat no annealing."""
BUDGET_SCHEDULES = ("anneal", "recipe")


@dataclass
class BudgetPlan:
    """What a budget run planned (saved in its checkpoint and summary.json). Fields after `deadline_seconds`
    came with re-planning; a checkpoint from before them loads with their defaults."""

    budget_minutes: float
    total_steps: int
    steps_per_epoch: int
    epochs: float                   # the run's length: total_steps / steps_per_epoch
    recipe_epochs: float            # the config's train.epochs
    stretch: float                  # epochs / recipe_epochs
    low_res_share: float            # fraction of the steps at low resolution
    setup_seconds: float            # from the start of the run to the plan (calibration included)
    calibration_seconds: float
    step_seconds: float             # a full-resolution training step (median after warm-up)
    low_res_step_seconds: float | None
    eval_seconds_per_image: float   # all test-time views of one image
    validations: int                # rows with a validation
    planned_train_seconds: float
    planned_eval_seconds: float     # validations and the final test evaluation
    planned_total_seconds: float
    deadline_seconds: float         # from the start of the run: training stops here at the latest
    step_seconds_spread: float = 0.0  # (90th - 10th percentile) / median of the timed calibration steps
    calibration_steps: int = 0        # timed steps (both resolutions)
    points_per_epoch: int = 1         # rows of metrics per epoch (engine/layout.py)
    rows: int = 0                     # rows planned
    val_subset: int = 0               # images the rows inside an epoch validate (0: all)
    inner_row_seconds: float = 0.0    # a row inside an epoch: its validation and files
    closing_row_seconds: float = 0.0  # a row at an epoch end
    train_end_seconds: float = 0.0    # from the start of the run: re-planning aims to end training here
    anneal: str | None = None         # constant/plateau annealed to final_factor: the form (ANNEAL_FORM)
    final_write_seconds: float = FINAL_WRITE_SECONDS  # the end's files (measured: final_write_seconds())
    exit_seconds: float = 0.0         # the process's exit after summary.json (exit_seconds())
    test_seconds: float = 0.0         # the final test evaluation, at the calibrated pace (part of the end's reserve)

    def record(self) -> dict[str, Any]:
        return asdict(self)

    def end_seconds(self) -> float:
        """What comes after training, at the calibrated pace: the final test evaluation, the end's files, the exit."""
        return self.test_seconds + self.final_write_seconds + self.exit_seconds

    def describe(self) -> str:
        low = f", {100 * self.low_res_share:.0f} % of them at low resolution" if self.low_res_share else ""
        rows = f", {self.rows} rows of metrics" if self.points_per_epoch > 1 else ""
        subset = f" (inside epochs on {self.val_subset} validation images)" if self.val_subset else ""
        anneal = f", lr annealed ({self.anneal})" if self.anneal else ""
        return (f"budget {self.budget_minutes:g} min: {self.total_steps} steps ({self.epochs:.2f} epochs, the "
                f"recipe's {self.recipe_epochs:g} stretched x{self.stretch:.2f}{low}{rows}{subset}{anneal}); step "
                f"{1000 * self.step_seconds:.0f} ms (spread {100 * self.step_seconds_spread:.0f} %), planned "
                f"training {self.planned_train_seconds:.0f} s + evaluation {self.planned_eval_seconds:.0f} s, setup "
                f"{self.setup_seconds:.0f} s; re-planned as it trains")


def check_schedule_choice(cfg: Config) -> None:
    if cfg.train.budget_schedule not in BUDGET_SCHEDULES:
        raise UserError(f"config field 'train.budget_schedule' must be one of {', '.join(BUDGET_SCHEDULES)}, got "
                        f"{cfg.train.budget_schedule!r}")


def anneal_form(cfg: Config) -> str | None:
    """How a budget run anneals its schedule (LrSchedule.anneal_to_end), None where it keeps the recipe's."""
    if cfg.train.budget_schedule == "anneal" and cfg.schedule.name in ("constant", "plateau"):
        return ANNEAL_FORM
    return None


# ----------------------------------------------------------------------------------------------- stretch


def stretch(cfg: Config, epochs: float, model_epoch_args: dict[str, float]) -> Config:
    """A copy of `cfg` whose recipe runs `epochs` epochs instead of cfg.train.epochs (see module docstring)."""
    factor = epochs / cfg.train.epochs
    out = copy.deepcopy(cfg)
    out.train.epochs = epochs
    out.data.low_res_epochs = cfg.data.low_res_epochs * factor
    out.schedule.warmup_epochs = cfg.schedule.warmup_epochs * factor
    out.schedule.step_epochs = cfg.schedule.step_epochs * factor
    out.train.ema.warmup_epochs = cfg.train.ema.warmup_epochs * factor
    out.train.lookahead.start_epochs = cfg.train.lookahead.start_epochs * factor
    for name, value in model_epoch_args.items():
        out.model.args[name] = value * factor
    return out


# ----------------------------------------------------------------------------------------------- plan


def points_per_epoch(epochs: float, steps_per_epoch: int) -> int:
    """Rows per epoch so that a run of `epochs` epochs writes about TARGET_ROWS rows (1 for longer runs)."""
    if epochs >= TARGET_ROWS or epochs <= 0:
        return 1
    return max(1, min(steps_per_epoch, math.ceil(TARGET_ROWS / epochs)))


@dataclass
class RowCosts:
    inner: float      # seconds of a row inside an epoch
    closing: float    # seconds of a row at an epoch end


def plan_steps(available_seconds: float, steps_per_epoch: int, points: int, per_step: float,
               rows: RowCosts) -> int:
    """The most steps S whose cost fits `available_seconds`: S x per_step plus the rows of the layout of S
    steps (engine/layout.py), each at its cost. It grows with S, so a bisection finds the largest S."""
    def cost(steps: int) -> float:
        inner, closing = Layout.budget(steps_per_epoch, steps, points).rows_after(0)
        return steps * per_step + inner * rows.inner + closing * rows.closing

    lo, hi = 0, max(0, int(available_seconds / max(per_step, 1e-9))) + 1
    while lo < hi:  # largest steps with cost(steps) <= available
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= available_seconds else (lo, mid - 1)
    return lo


def margin_seconds(budget_seconds: float) -> float:
    """What a plan leaves unused, for the noise of the final evaluation, the writing and the exit."""
    return 1.0 + 0.01 * budget_seconds


def final_write_seconds(curves_seconds: float) -> float:
    """The end's files from the time one learning-curve figure took to draw: the curves and the confusion
    matrix (about 3 curves' worth: its cells are text) and the small files (measured on a 2-core native-bf16
    CPU: curves 0.09 s, confusion matrix 0.17 s, the rest 0.1 s)."""
    return 0.15 + 3.5 * curves_seconds


def exit_seconds() -> float:
    """The process's exit after summary.json: the interpreter's teardown and the kernel unmapping the memory
    the run touched (the allocator keeps its peak: engine/device.py). Measured 0.85 s for a 1.8 GB course-CNN
    process on a 2-core native-bf16 CPU; estimated from this process's peak memory so far."""
    try:
        import resource

        peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux
    except (ImportError, OSError):
        return 0.5
    return 0.25 + 0.35 * peak_gb


def make_plan(cfg: Config, *, elapsed_seconds: float, calibration_seconds: float, steps_per_epoch: int,
              step_seconds: float, low_res_step_seconds: float | None, eval_seconds_per_image: float,
              val_images: int, test_images: int, step_seconds_spread: float = 0.0,
              calibration_steps: int = 0, write_seconds: float = FINAL_WRITE_SECONDS,
              exit_estimate: float = 0.0) -> BudgetPlan:
    """The plan for cfg.train.budget_minutes, or a UserError naming the smallest budget that would work."""
    budget = cfg.train.budget_minutes * 60
    low_share = min(1.0, cfg.data.low_res_epochs / cfg.train.epochs) if low_res_step_seconds else 0.0
    per_step = low_share * (low_res_step_seconds or 0.0) + (1 - low_share) * step_seconds
    test_seconds = test_images * eval_seconds_per_image
    validation_seconds = val_images * eval_seconds_per_image
    end_reserve = test_seconds + write_seconds + exit_estimate  # after training: test, files, the exit
    train_end = budget - end_reserve - margin_seconds(budget)
    available = train_end - elapsed_seconds
    every_row = cfg.train.validate == "epoch" and val_images > 0
    epochs_estimate = available / max(per_step, 1e-9) / steps_per_epoch  # the rows' cost not counted yet
    points = points_per_epoch(epochs_estimate, steps_per_epoch)
    subset = 0
    if every_row and points > 1:  # the rows inside epochs validate a subset when all of it would cost too much
        inner_rows = max(1, TARGET_ROWS - math.ceil(epochs_estimate))
        affordable = int(VALIDATION_SHARE * available / (inner_rows * max(eval_seconds_per_image, 1e-9)))
        subset = max(MIN_VALIDATION_SUBSET, affordable) if affordable < val_images else 0
        subset = subset if subset < val_images else 0
    rows = RowCosts(inner=ROW_OVERHEAD_SECONDS + ((subset or val_images) * eval_seconds_per_image if every_row else 0),
                    closing=ROW_OVERHEAD_SECONDS + validation_seconds)
    steps = plan_steps(available, steps_per_epoch, points, per_step, rows)
    if steps < 1:
        one_step = max(step_seconds, low_res_step_seconds or 0.0)
        needed = budget - available + one_step + rows.closing
        minimum = math.ceil(needed / 60 * 10) / 10
        raise UserError(f"--minutes {cfg.train.budget_minutes:g} is too small for one training step on this machine "
                        f"(setup {elapsed_seconds:.0f} s, a step {step_seconds:.1f} s, final evaluation "
                        f"{test_seconds:.0f} s); give at least --minutes {minimum:g}")
    epochs = steps / steps_per_epoch
    inner, closing = Layout.budget(steps_per_epoch, steps, points).rows_after(0)
    validations = (inner if every_row else 0) + (closing if val_images else 0)
    train_seconds = steps * per_step
    eval_seconds = inner * (rows.inner - ROW_OVERHEAD_SECONDS) + closing * validation_seconds + test_seconds
    planned_total = elapsed_seconds + train_seconds + eval_seconds + write_seconds + exit_estimate + \
        (inner + closing) * ROW_OVERHEAD_SECONDS
    return BudgetPlan(
        budget_minutes=cfg.train.budget_minutes, total_steps=steps, steps_per_epoch=steps_per_epoch, epochs=epochs,
        recipe_epochs=cfg.train.epochs, stretch=epochs / cfg.train.epochs, low_res_share=low_share,
        setup_seconds=elapsed_seconds, calibration_seconds=calibration_seconds, step_seconds=step_seconds,
        low_res_step_seconds=low_res_step_seconds, eval_seconds_per_image=eval_seconds_per_image,
        validations=validations, planned_train_seconds=train_seconds, planned_eval_seconds=eval_seconds,
        planned_total_seconds=planned_total,
        # Training may run into the margin, never into the time the final evaluation needs.
        deadline_seconds=budget - end_reserve - 0.25 * margin_seconds(budget),
        step_seconds_spread=step_seconds_spread, calibration_steps=calibration_steps, points_per_epoch=points,
        rows=inner + closing, val_subset=subset, inner_row_seconds=rows.inner, closing_row_seconds=rows.closing,
        train_end_seconds=train_end, anneal=anneal_form(cfg), final_write_seconds=write_seconds,
        exit_seconds=exit_estimate, test_seconds=test_seconds)


# ----------------------------------------------------------------------------------------------- calibrate


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cycle(make: Callable[[], Iterator]) -> Iterator:
    while True:
        yield from make()


@dataclass
class StepTiming:
    median: float
    spread: float   # (90th - 10th percentile) / median
    steps: int


def time_steps(trainer, batches: Iterator, device: torch.device, warmup_seconds: float = 1.5,
               timed_seconds: float = 2.0, warmup: int = 3, steps: int = 6) -> StepTiming:
    """Steady-state seconds of a training step: at least `warmup` untimed steps and `warmup_seconds` (the
    allocator, oneDNN's primitive creation and caches settle there), then at least `steps` timed steps and
    `timed_seconds`. Their median is the step time, and their 10th-90th percentile range its spread. Short
    steps (a small net, a small batch) keep speeding up for a second or so: a handful of them overestimated
    the step time by a quarter (cnn4, batch 128), and a 2-core AVX2 CPU's course CNN by 30 % (911 vs 700 ms).
    """
    start = time.perf_counter()
    done = 0
    while done < warmup or time.perf_counter() - start < warmup_seconds:
        float(trainer.train_step(*next(batches))[0])
        done += 1
    times: list[float] = []
    while len(times) < steps or sum(times) < timed_seconds:
        x, y = next(batches)  # making the batch is part of a step's cost
        _sync(device)
        t = time.perf_counter()
        loss, _ = trainer.train_step(x, y)
        float(loss)  # wait for the step
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    spread = (times[int(0.9 * (len(times) - 1))] - times[int(0.1 * (len(times) - 1))]) / max(median, 1e-12)
    return StepTiming(median, spread, len(times))


def calibrate(make_trainer: Callable[[], Any], train_batches, eval_images: torch.Tensor, tta: str,
              device: torch.device, budget_seconds: float = 60.0) -> dict[str, float | None]:
    """Seconds per training step (full and low resolution, steady state) and per evaluated image (all TTA
    views; the second of two passes, the first paying for evaluation's own primitives and caches).

    `make_trainer()` builds a throwaway Trainer on a copy of the model; the global RNG state is restored.
    A longer budget affords a longer measurement (1 % of it, 2 to 4 s per resolution).
    """
    from .evaluate import predict

    timed = min(4.0, max(2.0, 0.01 * budget_seconds))
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        start = time.perf_counter()
        trainer = make_trainer()
        full = time_steps(trainer, _cycle(lambda: train_batches.epoch(0, resolution="full")), device,
                          timed_seconds=timed)
        low = None
        if train_batches.low_res:
            low = time_steps(trainer, _cycle(lambda: train_batches.epoch(0, resolution="low")), device,
                             timed_seconds=timed)
        labels = torch.zeros(len(eval_images), dtype=torch.long, device=eval_images.device)
        seconds = []
        for _ in range(2):
            _sync(device)
            t = time.perf_counter()
            predict(trainer.eval_model, [(eval_images, labels)], device, trainer.precision, tta)
            _sync(device)
            seconds.append(time.perf_counter() - t)
        return {"step_seconds": full.median, "low_res_step_seconds": low.median if low else None,
                "eval_seconds_per_image": seconds[-1] / len(eval_images),
                "calibration_seconds": time.perf_counter() - start,
                "step_seconds_spread": max(full.spread, low.spread if low else 0.0),
                "calibration_steps": full.steps + (low.steps if low else 0)}
