"""RunSession: what stands around the training loop, written once for every kind of run.

Classifier training (train, features, finetune, transfer) and style-network training each open a session:

    session = RunSession.open(out, kind="style-network", resume=resume, settings_file="style.json")
    session.start(device="auto", threads=None, precision="auto")     # device, threads, precision, environment.json
    checkpoint = session.checkpoint()                                 # None: a new run (or never got past epoch 1)
    trainer = Trainer(..., callbacks=[*session.recording(meta), ...])
    state = session.fit(trainer, batches, None, epoch_steps, progress)
    session.close(StyleNetworkSummary(...))                           # summary.json, common fields filled

It owns the run folder and its checks (a new run never overwrites one; a resumed run must exist, be unfinished
and be of this kind; a run killed before its first epoch ended starts again; a new run that fails with a one-line
error before its first epoch leaves no folder behind), where and how the run computes,
the recording callbacks (metrics.csv, best weights, checkpoint, the epoch line, TensorBoard logs when asked),
the Ctrl-C and NaN messages with the command that resumes, environment.json and summary.json. What may change
when a run is resumed is declared once, in config.RESUME_CHANGEABLE, and applied by the caller's settings loader.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import runs
from ..errors import UserError
from . import distributed
from .callbacks import EpochPrinter, RunRecorder
from .device import Execution, configure_threads, resolve_execution, select_device, tune_cpu_allocator
from .loop import Callback, FitState, Trainer, TrainingDiverged
from .tensorboard import TensorBoardLog

# The command that resumes each kind of run (the resume hint in the Ctrl-C and NaN messages).
RESUME_COMMANDS = {"train": "cnnlab train", "features": "cnnlab features", "finetune": "cnnlab finetune",
                   "transfer": "cnnlab transfer", "style-network": "cnnlab stylize train"}


class Interrupted(UserError):
    """Ctrl-C during training: the last finished epoch is checkpointed and can be resumed."""

    exit_code = 130


def default_out(name: str) -> str:
    """runs/NAME-TIMESTAMP: where a run goes when no --out is given."""
    return os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")


@dataclass
class RunSession:
    """One run of the training engine: its folder, where it computes, and its files (module docstring)."""

    run: runs.RunDir
    kind: str
    resuming: bool
    wall_start: float
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    threads: int = 1
    execution: Execution | None = None
    recorder: RunRecorder | None = None
    tensorboard: TensorBoardLog | None = None
    created: tuple[Path, ...] = ()  # the folders this new run made, its own first (removed_if_it_fails_early)

    # ------------------------------------------------------------------------------------------- open

    @classmethod
    def open(cls, out: str | Path, *, kind: str, resume: bool = False, settings_file: str = runs.CONFIG,
             started: float | None = None) -> RunSession:
        """Check and create the run folder. `settings_file`: the file that marks a run of this kind
        (config.yaml for classifiers, style.json for style networks); `started`: the perf_counter value
        a time budget counts from (the process's start, so --minutes covers imports too)."""
        run = runs.RunDir(out)
        if resume:
            if not run.exists(settings_file):
                raise UserError(f"cannot resume {run}: it has no {settings_file}; is it a cnnlab "
                                f"{kind} run directory?")
            if run.finished:
                raise UserError(f"{run} is already finished (it has {runs.SUMMARY}); nothing to resume")
        elif run.exists(runs.SUMMARY) or run.exists(runs.CHECKPOINT):
            raise UserError(f"output directory {run} already holds a run; continue it with --resume {run} or "
                            f"choose a new --out")
        created = () if resume else tuple(p for p in (run.path, *run.path.parents) if not p.exists())
        run.create()
        return cls(run=run, kind=kind, resuming=resume, created=created,
                   wall_start=time.perf_counter() if started is None else started)

    @contextlib.contextmanager
    def removed_if_it_fails_early(self) -> Iterator[None]:
        """A new run that stops with a one-line error before its first epoch's files (data that does not
        load, a budget too small for one step, a loss that turned NaN at once) leaves no folder behind: only
        its settings and environment.json would be there, a folder that looks like a run and never trained.
        The parent folders made for it go too while empty. Kept: a folder that existed before (the user's), a
        resumed run's, anything after the first epoch, and a run stopped by Ctrl-C (its message names the
        folder: --resume starts it again)."""
        try:
            yield
        except Interrupted:
            raise
        except UserError:
            trained = any(self.run.exists(name) for name in (runs.CHECKPOINT, runs.METRICS, runs.BEST, runs.SUMMARY))
            if self.created and not trained and distributed.is_main():
                shutil.rmtree(self.run.path, ignore_errors=True)
                for parent in self.created[1:]:  # runs/ and the like, made for it: only while empty
                    with contextlib.suppress(OSError):
                        parent.rmdir()
            raise

    @property
    def resume_command(self) -> str:
        return f"{RESUME_COMMANDS.get(self.kind, 'cnnlab ' + self.kind)} --resume {self.run}"

    # ------------------------------------------------------------------------------------------- compute

    def start(self, *, device: str = "auto", threads: int | None = None, precision: str = "auto",
              channels_last: bool | str = "auto", deterministic: bool = False, sync_batchnorm: bool = False,
              announce: bool = True, tensorboard: bool = False) -> Execution:
        """Pick device, threads (never more than the cores), precision and memory format; join torchrun's
        process group when launched by it; write environment.json. Prints what was chosen and why first.
        `tensorboard`: the recording also writes RUN_DIR/tensorboard/ (engine/tensorboard.py; checked here,
        before anything is computed, that the package is installed)."""
        if tensorboard and distributed.is_main():
            self.tensorboard = TensorBoardLog(self.run.path)
        self.device = select_device(device, distributed.local_rank())
        distributed.check_sync_batchnorm(sync_batchnorm, self.device)
        distributed.init(self.device)
        self.threads = configure_threads(threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        self.execution = resolve_execution(self.device, precision, channels_last)
        allocator = tune_cpu_allocator()
        if distributed.is_main() and announce:
            print(self.execution.describe(), flush=True)  # the first line of every run: what was chosen and why
            if self.execution.warning:
                print(f"warning: {self.execution.warning}", file=sys.stderr, flush=True)
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        if distributed.is_main():
            self.run.write_json(runs.ENVIRONMENT, runs.environment(
                self.threads, self.device, distributed.world_size(),
                {**self.execution.record(), "cpu_allocator": allocator}))
        return self.execution

    def write_settings(self, name: str, text: str) -> None:
        """The run's resolved settings (config.yaml, style.json), by the main process only."""
        if distributed.is_main():
            self.run.write_text(name, text)

    # ------------------------------------------------------------------------------------------- resume

    def checkpoint(self) -> dict[str, Any] | None:
        """The checkpoint to resume from, or None for a fresh start. A run killed before its first epoch
        ended has none: nothing is lost, so it starts again (and counts as not resumed)."""
        if not self.resuming:
            return None
        if self.run.exists(runs.CHECKPOINT):
            return self.run.load_checkpoint(self.device)
        if distributed.is_main():
            print(f"{self.run} has no finished epoch yet: starting it from the beginning", flush=True)
        self.resuming = False
        return None

    def recording(self, meta: dict[str, str], has_validation: bool = False,
                  extra: dict[str, Any] | None = None) -> list[Callback]:
        """The callbacks that write the run's files each epoch (metrics.csv, best weights with `meta`,
        checkpoint with `extra`) and print its epoch line; TensorBoard's first when on (a row is logged
        before the checkpoint that makes it final: see engine/tensorboard.py on resuming)."""
        self.recorder = RunRecorder(self.run, has_validation, meta, extra or {})
        return [*([self.tensorboard] if self.tensorboard else []), self.recorder, EpochPrinter()]

    def restore(self, trainer: Trainer, checkpoint: dict[str, Any] | None) -> None:
        """Put a resumed run's trainer and recorder back where its last finished epoch left them."""
        if checkpoint is None:
            return
        trainer.load_state_dict(checkpoint)
        if self.recorder is not None:
            self.recorder.restore(checkpoint)
        if distributed.is_main():
            print(f"resuming {self.run} after epoch {trainer.state.epoch}", flush=True)

    # ------------------------------------------------------------------------------------------- train

    def fit(self, trainer: Trainer, train_batches, val_batches, epoch_steps: Sequence[int], progress=None,
            detect_anomaly: bool = False) -> FitState:
        """trainer.fit with the run's messages: Ctrl-C names the command that resumes; a loss turning NaN
        says which checkpoint was kept. `detect_anomaly`: autograd names the operation that made the NaN."""
        try:
            with torch.autograd.set_detect_anomaly(detect_anomaly):
                return trainer.fit(train_batches, val_batches, list(epoch_steps), progress)
        except KeyboardInterrupt:
            raise Interrupted(f"interrupted after {trainer.state.epoch} finished epochs; continue with: "
                              f"{self.resume_command}") from None
        except TrainingDiverged as exc:
            kept = (f"kept the last good checkpoint {self.run / runs.CHECKPOINT} (epoch {trainer.state.epoch}); "
                    f"resume after a fix with: {self.resume_command}"
                    if self.run.exists(runs.CHECKPOINT) else "no epoch finished, so no checkpoint was written")
            raise TrainingDiverged(f"{exc}; stopped and {kept}; lower optim.lr (--lr) or check the data") from None

    # ------------------------------------------------------------------------------------------- close

    def close(self, summary: runs.Summary) -> runs.Summary:
        """Fill what every summary says about where the run computed, and write summary.json (main process)."""
        execution = self.execution
        summary.git_commit = summary.git_commit or runs.git_commit()
        summary.torch_version = torch.__version__
        summary.device, summary.threads = str(self.device), self.threads
        if execution is not None:
            summary.precision, summary.cpu_class = execution.precision, execution.cpu_class
        summary.total_seconds = time.perf_counter() - self.wall_start
        if self.tensorboard is not None:  # the run's figures, before summary.json marks the run finished
            self.tensorboard.close()
        if distributed.is_main():
            runs.write_summary(self.run, summary)
        return summary
