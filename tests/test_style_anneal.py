"""`stylize train --lr-anneal`: the lr decays to 0 at a run's last step, and under --minutes at the time cap,
which engine/callbacks.py's TimeCapAnneal finds from the measured pace (the run's length is not known before)."""

from __future__ import annotations

import csv
from types import SimpleNamespace

import pytest
import torch

from cnnlab import style
from cnnlab.config import ScheduleConfig
from cnnlab.engine import callbacks
from cnnlab.engine.callbacks import TimeCapAnneal
from cnnlab.engine.optim import LrSchedule
from test_style_network import _settings


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _lrs(run) -> list[float]:
    with open(run / "metrics.csv", newline="") as f:
        return [float(row["lr"]) for row in csv.DictReader(f)]


@pytest.mark.parametrize("form", ["linear", "cosine"])
def test_time_cap_anneal_ends_the_curve_at_the_cap(monkeypatch, form):
    """Steps of 0.5 s (the first one 5 s: set-up) under a 60 s cap: the curve, planned for 10,000 steps, is
    re-planned to the 110 steps that fit and reaches 0 there; it decays all the way, without jumps."""
    clock = FakeClock()
    monkeypatch.setattr(callbacks, "clock", clock)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = LrSchedule(optimizer, ScheduleConfig(name="constant"), steps_per_epoch=50, total_steps=10_000)
    trainer = SimpleNamespace(state=SimpleNamespace(steps=0, train_seconds=0.0))
    anneal = TimeCapAnneal(schedule, cap_seconds=60.0, form=form)
    anneal.on_fit_start(trainer)
    anneal.on_epoch_start(trainer, 0)
    lrs = []
    while clock.now < 60.0:
        clock.now += 5.0 if trainer.state.steps == 0 else 0.5
        schedule.step()
        trainer.state.steps += 1
        anneal.on_step_end(trainer)
        lrs.append(schedule.lr)
    assert len(lrs) == 111 and schedule.total_steps == pytest.approx(111, abs=2)
    assert lrs[-1] < 0.02 and lrs[len(lrs) // 2] == pytest.approx(0.5, abs=0.1)
    assert all(b <= a + 1e-9 for a, b in zip(lrs, lrs[1:]))
    assert max(a - b for a, b in zip(lrs, lrs[1:])) < 0.05


def test_time_cap_anneal_follows_a_slower_pace(monkeypatch):
    """The pace halves midway: the run is re-planned shorter and still ends its curve near the cap."""
    clock = FakeClock()
    monkeypatch.setattr(callbacks, "clock", clock)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = LrSchedule(optimizer, ScheduleConfig(name="constant"), steps_per_epoch=50, total_steps=10_000)
    trainer = SimpleNamespace(state=SimpleNamespace(steps=0, train_seconds=0.0))
    anneal = TimeCapAnneal(schedule, cap_seconds=100.0)
    anneal.on_fit_start(trainer)
    anneal.on_epoch_start(trainer, 0)
    while clock.now < 100.0:
        clock.now += 1.0 if clock.now < 50 else 2.0
        schedule.step()
        trainer.state.steps += 1
        anneal.on_step_end(trainer)
    assert trainer.state.steps == 75 and schedule.lr < 0.1


def test_a_constant_lr_unless_annealed_and_annealed_to_zero_at_the_last_step(tmp_path):
    cache = str(tmp_path / "cache")
    style.train(_settings(iterations=12, limit_images=8, batch_size=2), tmp_path / "const", cache_dir=cache,
                progress=False)
    style.train(_settings(iterations=12, limit_images=8, batch_size=2, lr_anneal="linear"), tmp_path / "anneal",
                cache_dir=cache, progress=False)
    assert _lrs(tmp_path / "const") == [3e-3] * 3
    annealed = _lrs(tmp_path / "anneal")
    assert annealed[0] < 3e-3 and annealed == sorted(annealed, reverse=True) and annealed[-1] == 0.0


def test_a_minutes_run_anneals_to_its_cap(tmp_path):
    # 96 photos in batches of 4: epochs of 24 steps, so that the epochs' ends (previews, checkpoint: outside the
    # cap, about 1 s each) stay few (8 photos in batches of 2, epochs of 4 steps: 81 s for a 15 s cap)
    summary = style.train(_settings(epochs=1000, minutes=0.25, limit_images=96, batch_size=4, lr_anneal="linear"),
                          tmp_path / "run", cache_dir=str(tmp_path / "cache"), progress=False)
    lrs = _lrs(tmp_path / "run")
    assert summary["steps"] > 10 and lrs == sorted(lrs, reverse=True)
    assert lrs[0] > 1e-3 and lrs[-1] < 0.3e-3  # from near 3e-3 to near 0 within the 15 s
