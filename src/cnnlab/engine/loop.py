"""The one training loop: CIFAR training, the fast recipe, transfer heads, fine-tuning and style networks.

A :class:`Trainer` owns the model, optimizer, schedule and optional weight average, and knows precision,
memory format and device. ``fit`` runs epochs of ``train_epoch`` + ``evaluate`` and hands each epoch's row
of metrics to callbacks (checkpoints, metrics files, progress printing, plateau logic live there or in the
schedule). ``state_dict`` captures everything needed to continue bit-for-bit after an interruption.

Where the steps and rows go is a :class:`~cnnlab.engine.layout.Layout`: one row per epoch, or (a time budget
with few epochs) several, the rows inside an epoch validated on a fixed subset when the budget asked for one
(``val_subset``). A time budget also hands the Trainer a ``pacer`` (engine/pace.py) that sees every step and
row and may change the run's length while it trains; its decisions are part of the checkpoint.

The loss is pluggable: by default softmax cross-entropy on the labels (classifiers, with accuracy); an
``objective(outputs, inputs, labels) -> loss`` replaces it for networks that are not classifiers (a style
transform network's perceptual loss, computed by a frozen loss network on its output and input). Such
runs report no accuracy (NaN in metrics.csv) and need no validation split.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..errors import UserError
from . import distributed, pace
from .device import autocast
from .evaluate import EvalResult, predict, tta_views  # noqa: F401  (their home until they moved)
from .layout import Layout
from .optim import LrSchedule


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class Callback:
    """Hooks called by :meth:`Trainer.fit`; override what you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_step_end(self, trainer: Trainer) -> None: ...

    def on_train_epoch_end(self, trainer: Trainer) -> None:
        """After the epoch's last step, before validation."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


@dataclass
class FitState:
    """Progress that survives a resume."""

    epoch: int = 0  # epochs completed
    steps: int | None = None  # steps completed (None: a checkpoint from before rows inside epochs, at an epoch end)
    best_val_accuracy: float = float("nan")
    best_epoch: int = 0
    train_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = ""


class Trainer:
    """Trains and evaluates one classifier (see module docstring)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: LrSchedule, *,
                 device: torch.device, precision: str = "fp32", channels_last: bool = False,
                 label_smoothing: float = 0.0, grad_clip: float | None = None, ema_decay: float = 0.0,
                 ema_every: int = 1, ema_start_step: int = 0, tta: str = "none",
                 callbacks: Sequence[Callback] = (), max_train_seconds: float | None = None,
                 deadline: float | None = None, validate: str = "epoch", early_stopping: int = 0,
                 train_module: nn.Module | None = None,
                 rewrap: Callable[[nn.Module], nn.Module] | None = None,
                 objective: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                 layout: Layout | None = None, val_subset=None, pacer=None):
        self.model = model
        self.objective = objective  # None: cross-entropy on the labels (see the module docstring)
        # Under torchrun the forward/backward go through the DDP wrapper; everything else uses the model.
        self.train_module = train_module if train_module is not None else model  # (a compiled module has no len)
        self.rewrap = rewrap  # builds train_module again from the model (under torchrun; see below)
        self.optimizer, self.schedule = optimizer, schedule
        self.device, self.precision, self.channels_last = device, precision, channels_last
        self.label_smoothing, self.grad_clip = label_smoothing, grad_clip
        self.tta = tta
        self.callbacks = list(callbacks)
        # Two hard stops, both mid-epoch: a cap on training seconds (train.max_train_minutes), and a
        # wall-clock deadline (a pace.clock() value: time.perf_counter()) that a time budget sets as its safety net.
        self.max_train_seconds, self.deadline = max_train_seconds, deadline
        self.validate = validate  # 'epoch': validate after every epoch; 'end': after the last one only
        self.early_stopping = early_stopping  # epochs without a better validation accuracy before stopping
        self.ema: AveragedModel | None = None
        self.ema_every, self.ema_start_step = ema_every, ema_start_step
        if ema_decay > 0:
            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        self.state = FitState()
        self.stop_requested = ""
        self.layout = layout          # None: one row per epoch of fit()'s epoch_steps
        self.val_subset = val_subset  # batches that validate the rows inside an epoch (None: the full set)
        self.pacer = pacer            # a time budget's re-planner (engine/pace.py), or None

    # ------------------------------------------------------------------------------------------ pieces

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated and saved as 'best': the average when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step; returns (loss, number correct) as tensors (no host sync)."""
        with autocast(self.device, self.precision):
            logits = self.train_module(x)
            if self.objective is not None:  # inside autocast: a loss network runs in the run's precision too
                loss = self.objective(logits, x, y).float()
        if self.objective is None:
            loss = self.loss(logits, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.schedule.step()
        if self.ema is not None and self.schedule.step_count % self.ema_every == 0:
            if self.schedule.step_count <= self.ema_start_step:
                # Before averaging starts the average simply follows the weights.
                for avg, cur in zip(self.ema.module.state_dict().values(), self.model.state_dict().values()):
                    avg.copy_(cur)
            else:
                self.ema.update_parameters(self.model)
        if self.objective is not None:
            return loss.detach(), torch.zeros((), device=loss.device, dtype=torch.long)
        return loss.detach(), (logits.argmax(1) == y).sum()

    def train_epoch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], total: int | None = None,
                    progress=None) -> dict[str, float]:
        """Train over `batches`; returns train_loss, train_accuracy, images, seconds (summed over ranks)."""
        self.train_module.train()
        start = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        check_every = 1 if self.device.type == "cpu" else 25
        for i, (x, y) in enumerate(batches):
            loss, right = self.train_step(x, y)
            self.state.steps = (self.state.steps or 0) + 1
            loss_sum += loss * len(y)
            correct += right
            seen += len(y)
            if (i + 1) % check_every == 0 or (total is not None and i + 1 == total):
                if not math.isfinite(float(loss)):
                    raise TrainingDiverged(f"loss became {float(loss)} at epoch {self.state.epoch + 1}, step {i + 1}")
                if progress is not None:
                    elapsed = time.perf_counter() - start
                    acc = float(correct) / seen if self.objective is None else float("nan")
                    progress(i + 1, float(loss_sum) / seen, acc, seen / max(elapsed, 1e-9))
            for cb in self.callbacks:
                cb.on_step_end(self)
            if self.pacer is not None:
                self.pacer.step_done(self)  # may change the run's length (collective under torchrun)
            if self._time_is_up(time.perf_counter() - start) or \
                    (self.layout is not None and self.state.steps >= self.layout.total_steps):
                break
        totals = distributed.all_reduce_sum([float(loss_sum), float(correct), float(seen)], self.device)
        seconds = time.perf_counter() - start
        if not math.isfinite(totals[0]):
            raise TrainingDiverged(f"loss became {totals[0]} in epoch {self.state.epoch + 1}")
        # The loss of a step is computed before its update: only the weights show whether the last step
        # of the epoch blew up. Checked before anything is validated or saved.
        bad = next((name for name, t in self.model.state_dict().items()
                    if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if bad is not None:
            raise TrainingDiverged(f"weights became NaN or infinite ({bad}) in epoch {self.state.epoch + 1}")
        accuracy = totals[1] / max(totals[2], 1) if self.objective is None else float("nan")
        return {"train_loss": totals[0] / max(totals[2], 1), "train_accuracy": accuracy,
                "images": totals[2], "seconds": seconds}

    def _no_progress_for_too_long(self) -> bool:
        """Early stopping: `early_stopping` validated epochs without a better accuracy; the best epoch's
        weights stay the run's weights (they are what best.safetensors holds)."""
        s = self.state
        if not self.early_stopping or not s.best_epoch or s.epoch - s.best_epoch < self.early_stopping:
            return False
        self.stop_requested = (f"early stopping: no better validation accuracy for {self.early_stopping} epochs "
                               f"(best: epoch {s.best_epoch})")
        return True

    def _time_is_up(self, epoch_seconds: float) -> bool:
        """True when a hard stop is reached; under torchrun every rank stops at the same step."""
        if self.max_train_seconds is None and self.deadline is None:
            return False
        reason = ""
        if self.max_train_seconds is not None and self.state.train_seconds + epoch_seconds >= self.max_train_seconds:
            reason = f"training time cap of {self.max_train_seconds / 60:g} minutes reached"
        if self.deadline is not None and pace.clock() >= self.deadline:
            reason = "time budget deadline reached (the machine ran slower than re-planning could follow)"
        # Each rank runs on its own clock: stop when any rank says so, or the others would wait forever.
        if distributed.any_rank(bool(reason), self.device):
            self.stop_requested = reason or "another process reached the time limit"
            return True
        return False

    def predict(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], model: nn.Module | None = None,
                tta: str | None = None) -> EvalResult:
        """Logits and loss of the evaluated weights (EMA when on) with the configured test-time views."""
        return predict(model or self.eval_model, batches, self.device, self.precision, tta or self.tta)

    # ------------------------------------------------------------------------------------------ fit

    def trainable_parameters_changed(self) -> None:
        """Callbacks that freeze or unfreeze parameters mid-run call this. Under torchrun the DDP wrapper
        averages the gradients of the parameters that required them when it was built, and waits for every one
        of them: layers that join would train apart on each rank, and a frozen one would stall the next step.
        So the wrapper is built again (and compiled again when it was compiled)."""
        if self.rewrap is not None:
            self.train_module = None  # let the old wrapper (and its gradient buckets) go first
            self.train_module = self.rewrap(self.model)

    def fit(self, train_batches, val_batches, epoch_steps: list[int], progress_factory=None) -> FitState:
        """Train the steps of `epoch_steps` (or of self.layout, when set), from where self.state left off.

        `train_batches.epoch(e, max_batches)` yields the batches of epoch e; `val_batches` may be None. Each
        segment of the layout ends in a row (see engine/layout.py); a run resumed mid-epoch skips the batches
        of that epoch it had trained on (same order, same augmentation: the epoch's generator is seeded).
        ``on_epoch_start`` is called when an epoch starts, and when a run resumes inside one.
        """
        layout = self.layout = self.layout if self.layout is not None else Layout.of(list(epoch_steps))
        if self.state.steps is None:
            self.state.steps = layout.epoch_start(self.state.epoch)
        for cb in self.callbacks:
            cb.on_fit_start(self)
        if self._no_progress_for_too_long():  # a resumed run that had already stopped early
            self.state.stop_reason = self.state.stop_reason or self.stop_requested
            return self.state
        source: tuple[int, Any] | None = None
        while (segment := layout.segment(self.state.steps)) is not None:
            epoch = segment.epoch
            if source is None or source[0] != epoch:
                cap = layout.steps_per_epoch if layout.exact else layout.epoch_steps[epoch]
                batches = iter(train_batches.epoch(epoch, cap))
                for _ in range(segment.start):
                    next(batches)
                source = (epoch, batches)
                for cb in self.callbacks:
                    cb.on_epoch_start(self, epoch)
            steps = segment.end - segment.start
            bar = progress_factory(epoch, len(layout.epoch_steps), steps) if progress_factory else None
            if self.pacer is not None:
                self.pacer.segment_begins()
            began = self.state.steps
            try:
                stats = self.train_epoch(itertools.islice(source[1], steps), steps, bar.update if bar else None)
            finally:
                if bar:
                    bar.close()
            if self.state.steps - began < steps and not self.stop_requested and self.state.steps < layout.total_steps:
                self.state.steps = layout.epoch_start(epoch) + layout.epoch_steps[epoch]  # its batches ran out
            for cb in self.callbacks:
                cb.on_train_epoch_end(self)
            self.state.train_seconds += stats["seconds"]
            if self._row(epoch, stats, val_batches):
                break
        for cb in self.callbacks:
            cb.on_fit_end(self)
        return self.state

    def _row(self, epoch: int, stats: dict[str, float], val_batches) -> bool:
        """Validate, write the row of metrics after a segment (callbacks: files, printing); True: stop."""
        layout = self.layout
        done = self.state.steps - layout.epoch_start(epoch)  # the layout may have changed during the segment
        last = self.state.steps >= layout.total_steps or bool(self.stop_requested)
        closes = last or done >= layout.epoch_steps[epoch]  # an epoch end: what a plain run does there
        if self.pacer is not None:
            self.pacer.row_begins(closes)
        validate = val_batches is not None and len(val_batches.labels) and (self.validate == "epoch" or last)
        checked = val_batches if closes or self.val_subset is None else self.val_subset
        val = self.predict(checked) if validate else None
        if closes:
            self.state.epoch = epoch + 1
        row = {"epoch": layout.label(epoch, done), "lr": self.schedule.lr, "train_loss": stats["train_loss"],
               "train_accuracy": stats["train_accuracy"],
               "val_loss": val.loss if val else float("nan"),
               "val_accuracy": val.accuracy if val else float("nan"),
               "train_images": int(stats["images"]),  # summed over torchrun processes
               "epoch_seconds": stats["seconds"], "images_per_second": stats["images"] / stats["seconds"]}
        improved = closes and val is not None and not (val.accuracy <= self.state.best_val_accuracy)  # NaN-safe
        if improved:
            self.state.best_val_accuracy, self.state.best_epoch = val.accuracy, epoch + 1
        row["improved"] = improved
        if closes:
            self._no_progress_for_too_long()
            self.schedule.epoch_end(row)
        self.state.history.append(row)
        if self.stop_requested:
            self.state.stop_reason = self.stop_requested
        for cb in self.callbacks:
            cb.on_epoch_end(self, row)
        return bool(self.state.stop_reason)

    # ------------------------------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs (readable with torch.load(weights_only=True)).

        Under torchrun this is a collective call (every rank's RNG state is gathered: dropout differs per
        rank), so every rank calls it and rank 0 saves it.
        """
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device).cpu()
        s = self.state
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "rng": distributed.all_gather_object(rng),  # one entry per rank
                "fit": {"epoch": s.epoch, "steps": s.steps, "best_val_accuracy": s.best_val_accuracy,
                        "best_epoch": s.best_epoch, "train_seconds": s.train_seconds,
                        "history": s.history, "stop_reason": s.stop_reason},
                "pace": self.pacer.state_dict() if self.pacer is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        ranks = state["rng"] if isinstance(state["rng"], list) else [state["rng"]]
        # This rank's own RNG state; a rank the checkpoint did not have (more processes now) takes the
        # last one's, with its dropout then differing from an uninterrupted run (stated in the README).
        rng = ranks[min(distributed.rank(), len(ranks) - 1)]
        torch.set_rng_state(rng["cpu"].cpu())  # RNG states are CPU byte tensors whatever the device
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu(), self.device)
        f = state["fit"]
        self.state = FitState(epoch=f["epoch"], steps=f.get("steps"), best_val_accuracy=f["best_val_accuracy"],
                              best_epoch=f["best_epoch"], train_seconds=f["train_seconds"],
                              history=list(f["history"]), stop_reason=f.get("stop_reason", ""))
        if self.pacer is not None and state.get("pace"):
            self.pacer.load_state_dict(state["pace"])
