"""Where a run's steps go: epochs, and the points inside them where a metrics row is written.

A plain run has one row per epoch: ``Layout.of([n, n, m])`` (the last epoch may be partial). A time budget
whose run has few epochs asks for several rows per epoch (``points``), so that its curves have enough
points to show anything: epoch e's steps are cut at round(j * n / points), j = 1 .. points - 1, and at its
end. Only the row that ends an epoch does what a plain run does at an epoch end (full validation, choosing the
best weights, reduce-on-plateau, early stopping); the rows inside an epoch only draw the curves. A budget
run's length may change while it trains (engine/pace.py re-plans it): :meth:`Layout.resize` lays the new
number of steps out over the same epochs of n steps.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Segment:
    """Steps [start, end) of epoch `epoch` (counted within the epoch), then a row."""

    epoch: int
    start: int
    end: int
    closes_epoch: bool   # the epoch's last segment: the row of an epoch end
    label: float         # the row's `epoch` value: epochs trained when it is written


@dataclass
class Layout:
    """The steps of each epoch, the length of a full epoch, and rows per epoch (see the module docstring).

    `exact`: label a partial epoch's rows with the epochs really trained (2.37); a plain run labels its
    partial last epoch by its number (3), as it always has.
    """

    epoch_steps: list[int]
    steps_per_epoch: int
    points: int = 1
    exact: bool = False

    @classmethod
    def of(cls, epoch_steps: list[int]) -> Layout:
        """A plain run's layout: one row per epoch."""
        steps = [int(s) for s in epoch_steps]
        return cls(steps, max(steps, default=1))

    @classmethod
    def budget(cls, steps_per_epoch: int, total_steps: int, points: int) -> Layout:
        layout = cls([], max(1, steps_per_epoch), max(1, points), exact=True)
        layout.resize(total_steps)
        return layout

    @property
    def total_steps(self) -> int:
        return sum(self.epoch_steps)

    def resize(self, total_steps: int) -> None:
        """Lay out `total_steps` steps as whole epochs and a partial last one."""
        whole, rest = divmod(max(0, int(total_steps)), self.steps_per_epoch)
        self.epoch_steps = [self.steps_per_epoch] * whole + ([rest] if rest else [])

    def epoch_start(self, epoch: int) -> int:
        """Steps before epoch `epoch`."""
        return sum(self.epoch_steps[:epoch])

    def cuts(self, epoch: int) -> list[int]:
        """Where epoch `epoch`'s rows are written, in steps from its start (ascending, the last its end)."""
        steps, n = self.epoch_steps[epoch], self.steps_per_epoch
        inner = {round(j * n / self.points) for j in range(1, self.points)}
        return sorted(c for c in inner if 0 < c < steps) + [steps]

    def label(self, epoch: int, steps: int) -> float:
        """The `epoch` value of a row written after `steps` steps of epoch `epoch`."""
        if steps >= self.steps_per_epoch or (not self.exact and steps == self.epoch_steps[epoch]):
            return epoch + 1
        return round(epoch + steps / self.steps_per_epoch, 4)

    def segment(self, done: int) -> Segment | None:
        """The segment that starts after `done` steps of the run, or None when the run is over."""
        start = 0
        for epoch, steps in enumerate(self.epoch_steps):
            if done < start + steps:
                local = done - start
                end = next(c for c in self.cuts(epoch) if c > local)
                return Segment(epoch, local, end, end == steps, self.label(epoch, end))
            start += steps
        return None

    def rows_after(self, done: int) -> tuple[int, int]:
        """(rows inside epochs, rows ending an epoch) still to be written after `done` steps."""
        inner = closing = 0
        start = 0
        for epoch, steps in enumerate(self.epoch_steps):
            for cut in self.cuts(epoch):
                if start + cut > done:
                    if cut == steps:
                        closing += 1
                    else:
                        inner += 1
            start += steps
        return inner, closing
