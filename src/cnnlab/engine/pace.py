"""Re-planning a time budget while it trains: the pace is measured, the remaining schedule follows it.

A budget run's plan (engine/budget.py) rests on a calibration of a few seconds; the run itself may go faster
or slower (other processes, caches, clock speed, a first validation that costs more than measured). Every
few percent of the planned steps (CHECK_SHARE) the :class:`Pacer` compares:

- the time left until the plan's end of training (`train_end_seconds` on the budget's clock, which counts
  from the process's start; when the pace is slower than calibrated, less the extra time the final test
  evaluation, the end's files and the exit will take at that pace: a slowed machine does those slower too), with
- what the remaining steps would cost at the recent pace (measured seconds of the steps of the last WINDOW
  intervals between checks divided by their calibrated seconds, so low- and full-resolution steps are
  weighed right; a process's first step is left out: it pays for one-off setup), plus the rows still to
  write (validation, files) at their measured cost per kind (rows inside an epoch, rows ending one; the
  plan's estimates until measured).

It then sets the run's length to the most steps that fit: the layout gets the new number of steps, and the
learning-rate curve keeps the progress reached and lays the rest over the new remaining steps
(LrSchedule.replan), so it still anneals to its end at the new last step. A change smaller than MIN_CHANGE
of the remaining steps is not made (the curve does not jitter with noise).

Every decision ([step, new total steps]) is recorded, with the budget's clock and the measurements, in the
checkpoint. A resumed run replays them (the schedule's knots and the layout's length come back as they
were), and keeps re-planning against the same budget: its clock continues from the checkpoint's reading
(the resumed process's own start-up is not counted). Under torchrun every rank checks at the same steps
and takes the slowest rank's pace, so all make the same decision.
"""

from __future__ import annotations

import time
from typing import Any

from . import distributed
from .layout import Layout

CHECK_SHARE = 0.03   # re-plan every 3 % of the planned steps
WINDOW = 3           # ... at the pace of the last 3 intervals between checks (about 9 % of the steps)
MIN_CHANGE = 0.02    # ... when the remaining steps change by more than 2 % (and more than one step)


def clock() -> float:
    """The budget's clock: time.perf_counter(). Tests replace it to make the decisions reproducible."""
    return time.perf_counter()


class Pacer:
    """Measures the run's pace and re-plans its length (see the module docstring). The Trainer calls
    segment_begins / step_done / row_begins; state_dict travels in the checkpoint."""

    def __init__(self, plan, layout: Layout, schedule, *, start: float, low_res_steps: int, device):
        self.plan, self.layout, self.schedule = plan, layout, schedule
        self.low_res_steps, self.device = low_res_steps, device
        self.every = max(1, round(plan.total_steps * CHECK_SHARE))
        self.decisions: list[list[int]] = []
        self.origin, self.offset = start, 0.0   # the budget's clock reads offset + clock() - origin
        # The pace: [measured seconds, calibrated seconds] of the steps of each of the last WINDOW intervals
        # between checks, and of the interval in progress (rows left out: they are counted apart).
        self.window: list[list[float]] = []
        self.interval = [0.0, 0.0]
        self.rows: dict[str, list[float]] = {"inner": [0.0, 0], "closing": [0.0, 0]}  # kind -> [seconds, count]
        self._segment_start: float | None = None
        self._row: tuple[str, float] | None = None
        self._first = True

    # ------------------------------------------------------------------------------------------ measuring

    def elapsed(self) -> float:
        """Seconds on the budget's clock (since the process started; continued across a resume)."""
        return self.offset + clock() - self.origin

    def predicted(self, first: int, end: int) -> float:
        """Calibrated seconds of steps [first, end) (low-resolution steps cost less)."""
        if end <= first:
            return 0.0
        low = max(0, min(end, self.low_res_steps) - first)
        return low * (self.plan.low_res_step_seconds or 0.0) + (end - first - low) * self.plan.step_seconds

    def _bank(self, now: float) -> None:
        """The running segment's time so far goes to the interval in progress."""
        if self._segment_start is not None:
            self.interval[0] += now - self._segment_start
            self._segment_start = now

    def segment_begins(self) -> None:
        now = clock()
        if self._row is not None:  # the previous row: validation, files, printing
            kind, began = self._row
            self.rows[kind][0] += now - began
            self._row = None
        self._segment_start = now

    def step_done(self, trainer) -> None:
        done, now = trainer.state.steps, clock()
        if self._first:  # this process's first step pays for one-off costs: not part of the pace
            self._first, self._segment_start = False, now
        else:
            self.interval[1] += self.predicted(done - 1, done)
        if done % self.every == 0 and done < self.layout.total_steps:
            self._bank(now)
            if self.interval[1] > 0:
                self.window = (self.window + [self.interval])[-WINDOW:]
                self.interval = [0.0, 0.0]
            self._replan(done)

    def row_begins(self, closes_epoch: bool) -> None:
        now = clock()
        self._bank(now)
        self._segment_start = None
        kind = "closing" if closes_epoch else "inner"
        self.rows[kind][1] += 1  # counted now, so that the checkpoint written with this row knows it
        self._row = (kind, now)

    def row_seconds(self, kind: str) -> float:
        seconds, count = self.rows[kind]
        if count and seconds:
            return seconds / count
        return self.plan.inner_row_seconds if kind == "inner" else self.plan.closing_row_seconds

    # ------------------------------------------------------------------------------------------ deciding

    def pace(self) -> float:
        """Measured over calibrated seconds of the recent steps (the last WINDOW intervals; 1: as calibrated)."""
        seconds, predicted = (sum(x) for x in zip(*self.window)) if self.window else self.interval
        return seconds / predicted if predicted > 0 else 1.0

    def cost(self, done: int, total: int, pace: float) -> float:
        """Seconds from now to the end of training if the run had `total` steps."""
        layout = Layout([], self.layout.steps_per_epoch, self.layout.points, self.layout.exact)
        layout.resize(total)
        inner, closing = layout.rows_after(done)
        return pace * self.predicted(done, total) + inner * self.row_seconds("inner") + \
            closing * self.row_seconds("closing")

    def best_total(self, done: int, left: float, pace: float) -> int:
        """The most steps (at least `done`) whose remaining cost fits in `left` seconds."""
        cheapest = min(s for s in (self.plan.step_seconds, self.plan.low_res_step_seconds) if s) * pace
        lo, hi = done, done + int(max(left, 0.0) / max(cheapest, 1e-9)) + 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.cost(done, mid, pace) <= left else (lo, mid - 1)
        return lo

    def _replan(self, done: int) -> None:
        pace, elapsed = distributed.all_reduce_max([self.pace(), self.elapsed()], self.device)
        total = self.layout.total_steps
        # a machine that slowed down also evaluates the test set, writes the end's files and exits slower: the
        # reserve for what comes after training grows with the pace
        left = self.plan.train_end_seconds - elapsed - max(0.0, pace - 1.0) * self.plan.end_seconds()
        new = self.best_total(done, left, pace)
        if abs(new - total) <= max(1.0, MIN_CHANGE * (total - done)):
            return
        self.layout.resize(new)
        self.schedule.replan(done, new)
        self.decisions.append([done, new])

    # ------------------------------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        return {"decisions": [list(d) for d in self.decisions], "elapsed": self.elapsed(),
                "window": [list(w) for w in self.window], "interval": list(self.interval),
                "rows": {k: list(v) for k, v in self.rows.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replay the recorded decisions (the layout's length; the schedule restores its own curve) and
        continue the budget's clock from the checkpoint's reading."""
        self.decisions = [list(d) for d in state["decisions"]]
        if self.decisions:
            self.layout.resize(self.decisions[-1][1])
        self.offset, self.origin = float(state["elapsed"]), clock()
        self.window = [[float(a), float(b)] for a, b in state["window"]]
        self.interval = [float(x) for x in state["interval"]]
        self.rows = {k: [float(v[0]), int(v[1])] for k, v in state["rows"].items()}

    def record(self) -> dict[str, Any]:
        """What summary.json says about the re-planning."""
        return {"replans": [list(d) for d in self.decisions], "pace": round(self.pace(), 4),
                "row_seconds": {k: round(self.row_seconds(k), 3) for k in self.rows}}
