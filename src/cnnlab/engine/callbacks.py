"""Callbacks every kind of run shares: the run directory's files after each epoch, the epoch line, the bar.

Classification (classify.py), transfer and style training (style/train.py) all record through these, so
a run directory has the same files (metrics.csv, best.safetensors, checkpoint.pt) whatever trained.
"""

from __future__ import annotations

import sys
from typing import Any

from .. import runs
from . import distributed
from .loop import Callback, Trainer
from .pace import CHECK_SHARE, MIN_CHANGE, clock


class RunRecorder(Callback):
    """Writes metrics.csv, the best weights and the checkpoint after every epoch (rank 0 writes).

    The checkpoint also carries a copy of the best weights and the epoch they are from, so that after a
    crash between the two writes a resumed run repairs best.safetensors (:meth:`restore`) instead of
    mixing weights of one epoch with the history of another.
    """

    def __init__(self, run: runs.RunDir, has_validation: bool, meta: dict[str, str], extra: dict[str, Any]):
        self.run, self.has_validation, self.meta, self.extra = run, has_validation, meta, extra
        self.best: dict[str, Any] = {"epoch": 0, "weights": None}

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        state = trainer.state_dict()  # collective under torchrun: every rank takes part
        if not distributed.is_main():
            return
        self.run.write_csv(runs.METRICS, trainer.state.history)
        if row["improved"] or not self.has_validation:
            weights = {k: v.detach().cpu().clone() for k, v in trainer.eval_model.state_dict().items()}
            self.best = {"epoch": row["epoch"], "weights": weights}
            self.run.save_weights(weights, runs.BEST, metadata={**self.meta, "epoch": str(row["epoch"])})
        self.run.save_checkpoint({**state, "best": self.best, **self.extra})

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """On resume: take the checkpoint's best weights, and rewrite best.safetensors if it disagrees."""
        best = checkpoint.get("best") or {"epoch": 0, "weights": None}
        self.best = best
        if not distributed.is_main() or best["weights"] is None:
            return
        on_disk = self.run.weights_metadata(runs.BEST).get("epoch") if self.run.exists(runs.BEST) else None
        if on_disk != str(best["epoch"]):
            self.run.save_weights(best["weights"], runs.BEST, metadata={**self.meta, "epoch": str(best["epoch"])})


class TimeCapAnneal(Callback):
    """An lr curve that ends where a training-time cap does, for runs capped by minutes without a calibrated
    plan (a style network's ``--minutes``; a classifier's time budget has engine/budget.py and pace.py).

    The schedule anneals to its end (LrSchedule.anneal_to_end), and every CHECK_SHARE of the planned steps its
    length is re-planned (LrSchedule.replan) to the steps the time left holds at the pace measured since this
    process's first step (which pays for one-off setup and is left out). Time is counted as the Trainer's cap
    counts it: finished epochs' training seconds plus the running epoch's. The schedule's curve travels in the
    checkpoint, so a resumed run continues it."""

    def __init__(self, schedule, cap_seconds: float, form: str = "linear"):
        self.schedule, self.cap, self.form = schedule, cap_seconds, form
        self._epoch_start = 0.0
        self._first: tuple[int, float] | None = None  # (steps, seconds) after this process's first step

    def on_fit_start(self, trainer: Trainer) -> None:
        self.schedule.anneal_to_end(self.form)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        self._epoch_start = clock()

    def on_step_end(self, trainer: Trainer) -> None:
        done, seconds = trainer.state.steps, trainer.state.train_seconds + clock() - self._epoch_start
        if self._first is None:
            self._first = (done, seconds)
            return
        steps, spent = done - self._first[0], seconds - self._first[1]
        if steps > 3 and done % max(1, round(CHECK_SHARE * self.schedule.total_steps)):
            return  # re-planned at the first steps (the plan may be far off), then every few percent
        new = done + int(max(0.0, self.cap - seconds) / max(spent / steps, 1e-9))
        total = self.schedule.total_steps
        if abs(new - total) > max(1.0, MIN_CHANGE * max(total - done, 0)):
            self.schedule.replan(done, max(new, done + 1))


class EpochPrinter(Callback):
    """One line per epoch: train and validation metrics, time, throughput."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if not distributed.is_main():
            return
        val = "" if row["val_accuracy"] != row["val_accuracy"] else \
            f"  val loss {row['val_loss']:.4f} acc {100 * row['val_accuracy']:.2f}%"
        acc = "" if row["train_accuracy"] != row["train_accuracy"] else f" acc {100 * row['train_accuracy']:.2f}%"
        print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}{acc}"
              f"{val}  lr {row['lr']:.3g}  {row['epoch_seconds']:.1f} s, {row['images_per_second']:.0f} img/s",
              flush=True)


class ProgressBar:
    """A tqdm bar for one epoch showing loss, accuracy and images/s."""

    def __init__(self, epoch: int, epochs: int, steps: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=False, unit="step",
                        file=sys.stderr, dynamic_ncols=True)
        self.done = 0

    def update(self, step: int, loss: float, acc: float, images_per_second: float) -> None:
        self.bar.update(step - self.done)
        self.done = step
        shown = {"loss": f"{loss:.3f}", **({} if acc != acc else {"acc": f"{100 * acc:.1f}%"}),
                 "img_s": f"{images_per_second:.0f}"}
        self.bar.set_postfix(shown, refresh=False)

    def close(self) -> None:
        self.bar.close()
