"""Training that fits a time budget: calibrate, plan the steps, stretch the recipe over them.

``cnnlab train --minutes M`` (``train.budget_minutes``) fits the *whole* run into M minutes on the machine
at hand: setup, training, validation, the final test-time-augmented evaluation and writing the run
directory. How:

1. Calibrate: a few training steps of a throwaway copy of the model (at each resolution the recipe uses)
   and one forward pass of an evaluation batch with the test-time views give seconds per step and per
   evaluated image. The copy has its own optimizer and the global RNG is restored afterwards, so the real
   run is exactly the plain run with the planned length.
2. Plan: the seconds left after setup, the final evaluation, the writing and a safety margin buy a number
   of steps S (validations and per-epoch checkpoints counted in).
3. Stretch: the recipe is scaled from its own length (train.epochs) to S steps: train.epochs becomes
   S / steps_per_epoch (the last epoch fractional), and every epoch-counted setting scales by the same
   factor: warm-up, the low-resolution epochs, the step schedule's interval, EMA warm-up, lookahead start,
   and the model's own epoch-counted arguments (fastnet's whitening-bias epochs). Schedules with an end
   (linear, cosine, one-cycle) reach their final learning rate at step S - 1; ``step`` keeps its number of
   decays; ``constant`` and ``plateau`` have no end, so for them a budget only sets the number of epochs
   (plateau still reduces on validation, patience counted in epochs).

A deadline (the planned end of training plus the margin) stops training mid-schedule only if the machine
turns out slower than calibrated; summary.json then says so (``stop_reason``).
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
"""Writing summary, weights, plots and the confusion matrix at the end (measured about 2 s on a 2-core CPU)."""
EPOCH_OVERHEAD_SECONDS = 0.3
"""Per epoch: metrics.csv, checkpoint.pt, best weights (fsync'd), progress output."""
CALIBRATION_WARMUP, CALIBRATION_STEPS = 1, 3


@dataclass
class BudgetPlan:
    """What a budget run planned (saved in its checkpoint and summary.json)."""

    budget_minutes: float
    total_steps: int
    steps_per_epoch: int
    epochs: float                   # the run's length: total_steps / steps_per_epoch
    recipe_epochs: float            # the config's train.epochs
    stretch: float                  # epochs / recipe_epochs
    low_res_share: float            # fraction of the steps at low resolution
    setup_seconds: float            # from the start of the run to the plan (calibration included)
    calibration_seconds: float
    step_seconds: float             # a full-resolution training step
    low_res_step_seconds: float | None
    eval_seconds_per_image: float   # all test-time views of one image
    validations: int
    planned_train_seconds: float
    planned_eval_seconds: float     # validations and the final test evaluation
    planned_total_seconds: float
    deadline_seconds: float         # from the start of the run: training stops here at the latest

    def record(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        low = f", {100 * self.low_res_share:.0f} % of them at low resolution" if self.low_res_share else ""
        return (f"budget {self.budget_minutes:g} min: {self.total_steps} steps ({self.epochs:.2f} epochs, the "
                f"recipe's {self.recipe_epochs:g} stretched x{self.stretch:.2f}{low}); step "
                f"{1000 * self.step_seconds:.0f} ms, planned training {self.planned_train_seconds:.0f} s + "
                f"evaluation {self.planned_eval_seconds:.0f} s, setup {self.setup_seconds:.0f} s")


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


def plan_steps(available_seconds: float, steps_per_epoch: int, step_seconds: float, low_res_step_seconds: float,
               low_res_share: float, validation_seconds: float, validate_every_epoch: bool) -> tuple[int, int]:
    """(steps, validations): the most steps whose cost fits `available_seconds`.

    cost(S) = S x mean step time + validations x validation time + epochs x EPOCH_OVERHEAD_SECONDS, with
    ceil(S / steps_per_epoch) epochs. It grows with S, so a bisection finds the largest S that fits.
    """
    per_step = low_res_share * low_res_step_seconds + (1 - low_res_share) * step_seconds

    def validations(steps: int) -> int:
        if validation_seconds <= 0:
            return 0
        return max(1, math.ceil(steps / steps_per_epoch)) if validate_every_epoch else 1

    def cost(steps: int) -> float:
        epochs = max(1, math.ceil(steps / steps_per_epoch))
        return steps * per_step + validations(steps) * validation_seconds + epochs * EPOCH_OVERHEAD_SECONDS

    lo, hi = 0, max(0, int(available_seconds / max(per_step, 1e-9))) + 1
    while lo < hi:  # largest steps with cost(steps) <= available
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if cost(mid) <= available_seconds else (lo, mid - 1)
    return lo, validations(lo)


def make_plan(cfg: Config, *, elapsed_seconds: float, calibration_seconds: float, steps_per_epoch: int,
              step_seconds: float, low_res_step_seconds: float | None, eval_seconds_per_image: float,
              val_images: int, test_images: int) -> BudgetPlan:
    """The plan for cfg.train.budget_minutes, or a UserError naming the smallest budget that would work."""
    budget = cfg.train.budget_minutes * 60
    low_share = min(1.0, cfg.data.low_res_epochs / cfg.train.epochs) if low_res_step_seconds else 0.0
    test_seconds = test_images * eval_seconds_per_image
    validation_seconds = val_images * eval_seconds_per_image
    margin = 2.0 + 0.02 * budget
    reserve = test_seconds + FINAL_WRITE_SECONDS + margin
    available = budget - elapsed_seconds - reserve
    steps, validations = plan_steps(available, steps_per_epoch, step_seconds, low_res_step_seconds or 0.0,
                                    low_share, validation_seconds, cfg.train.validate == "epoch")
    if steps < 1:
        one_step = max(step_seconds, low_res_step_seconds or 0.0)
        needed = elapsed_seconds + reserve + one_step + validation_seconds + EPOCH_OVERHEAD_SECONDS
        minimum = math.ceil(needed / 60 * 10) / 10
        raise UserError(f"--minutes {cfg.train.budget_minutes:g} is too small for one training step on this machine "
                        f"(setup {elapsed_seconds:.0f} s, a step {step_seconds:.1f} s, final evaluation "
                        f"{test_seconds:.0f} s); give at least --minutes {minimum:g}")
    epochs = steps / steps_per_epoch
    per_step = low_share * (low_res_step_seconds or 0.0) + (1 - low_share) * step_seconds
    train_seconds = steps * per_step
    eval_seconds = validations * validation_seconds + test_seconds
    planned_total = elapsed_seconds + train_seconds + eval_seconds + FINAL_WRITE_SECONDS + \
        math.ceil(epochs) * EPOCH_OVERHEAD_SECONDS
    return BudgetPlan(
        budget_minutes=cfg.train.budget_minutes, total_steps=steps, steps_per_epoch=steps_per_epoch, epochs=epochs,
        recipe_epochs=cfg.train.epochs, stretch=epochs / cfg.train.epochs, low_res_share=low_share,
        setup_seconds=elapsed_seconds, calibration_seconds=calibration_seconds, step_seconds=step_seconds,
        low_res_step_seconds=low_res_step_seconds, eval_seconds_per_image=eval_seconds_per_image,
        validations=validations, planned_train_seconds=train_seconds, planned_eval_seconds=eval_seconds,
        planned_total_seconds=planned_total,
        # Training may run into the margin, never into the time the final evaluation needs.
        deadline_seconds=budget - test_seconds - FINAL_WRITE_SECONDS - 1.0)


# ----------------------------------------------------------------------------------------------- calibrate


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cycle(make: Callable[[], Iterator]) -> Iterator:
    while True:
        yield from make()


def time_steps(trainer, batches: Iterator, device: torch.device, warmup: int = CALIBRATION_WARMUP,
               steps: int = CALIBRATION_STEPS, warmup_seconds: float = 1.0, timed_seconds: float = 1.5) -> float:
    """Median seconds of a training step, after warm-up (kernel selection, caches, allocator).

    At least `warmup` untimed steps and `warmup_seconds`, then at least `steps` timed steps and
    `timed_seconds`: short steps (a small net, a small batch) keep speeding up for a second or so, and a
    handful of them would overestimate the step time by a quarter (measured with cnn4, batch 128).
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
    return sorted(times)[len(times) // 2]


def calibrate(make_trainer: Callable[[], Any], train_batches, eval_images: torch.Tensor, tta: str,
              device: torch.device) -> dict[str, float | None]:
    """Seconds per training step (full and low resolution) and per evaluated image (all TTA views).

    `make_trainer()` builds a throwaway Trainer on a copy of the model; the global RNG state is restored.
    """
    from .loop import predict

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        start = time.perf_counter()
        trainer = make_trainer()
        full = time_steps(trainer, _cycle(lambda: train_batches.epoch(0, resolution="full")), device)
        low = None
        if train_batches.low_res:
            low = time_steps(trainer, _cycle(lambda: train_batches.epoch(0, resolution="low")), device)
        labels = torch.zeros(len(eval_images), dtype=torch.long, device=eval_images.device)
        _sync(device)  # one timed pass, its first-call costs included: a safe (high) estimate
        t = time.perf_counter()
        predict(trainer.eval_model, [(eval_images, labels)], device, trainer.precision, tta)
        _sync(device)
        per_image = (time.perf_counter() - t) / len(eval_images)
        return {"step_seconds": full, "low_res_step_seconds": low, "eval_seconds_per_image": per_image,
                "calibration_seconds": time.perf_counter() - start}
