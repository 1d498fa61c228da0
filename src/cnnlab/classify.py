"""Image classification runs: ``train(cfg)`` and ``evaluate(run_dir)``, the API behind `cnnlab train/evaluate`.

This module wires the layers together (data -> model -> engine -> run directory); the work itself lives
in those layers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import config as config_mod
from . import data as data_mod
from . import models, runs
from .config import Config
from .data.augment import BatchAugment
from .data.loader import TensorBatches, steps_per_epoch
from .engine import Callback, Trainer, TrainingDiverged, budget, distributed, predict
from .engine.averaging import Lookahead
from .engine.device import (Execution, configure_threads, memory_format, resolve_execution, select_device,
                            tune_cpu_allocator)
from .engine.metrics import confusion_matrix, per_class_accuracy
from .engine.optim import LrSchedule, build_optimizer, check_names as check_optim_names
from .errors import UserError
from .report import plots


class Interrupted(UserError):
    """Ctrl-C during training: the last finished epoch is checkpointed and can be resumed."""

    exit_code = 130


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]


# ----------------------------------------------------------------------------------------------- building


def check_names(cfg: Config) -> None:
    """Every name in the config is known to its registry (dataset, model and its arguments, optimizer,
    schedule); each registry checks its own names, with the closest valid one in the error."""
    data_mod.check_dataset(cfg.data)
    models.check_arguments(cfg.model.name, cfg.model.args)
    check_optim_names(cfg.optim, cfg.schedule)


def build_model(cfg: Config, data: data_mod.ClassificationData | None = None, num_classes: int | None = None,
                image_shape: tuple[int, int, int] | None = None) -> nn.Module:
    """The configured model; class count and input shape come from the data unless the config sets them."""
    if data is not None:
        num_classes, image_shape = len(data.classes), data.image_shape
    accepted = models.arguments(cfg.model.name)
    implied = {"num_classes": num_classes}
    if image_shape is not None:
        implied.update(in_channels=image_shape[0], image_size=image_shape[1])
    kwargs = {k: v for k, v in implied.items() if k in accepted and v is not None}
    kwargs.update(cfg.model.args)
    return models.create(cfg.model.name, **kwargs)


def make_batches(cfg: Config, data: data_mod.ClassificationData, device: torch.device,
                 channels_last: bool) -> tuple[TensorBatches, ...]:
    """(train, val, test) batch iterables on the device; train.batch_size is the global batch (torchrun)."""
    t = cfg.train
    common = dict(mean=data.mean, std=data.std, device=device, channels_last=channels_last)
    train = TensorBatches(data.train_images, data.train_labels, t.batch_size, shuffle=True, seed=t.seed,
                          augment=BatchAugment(cfg.data.augment, data.image_shape[-1], seed=t.seed),
                          rank=distributed.rank(), world_size=distributed.world_size(),
                          low_res=(cfg.data.low_res_size, cfg.data.low_res_epochs), **common)
    val = TensorBatches(data.val_images, data.val_labels, t.eval_batch_size, **common)
    test = TensorBatches(data.test_images, data.test_labels, t.eval_batch_size, **common)
    return train, val, test


def effective_optim(cfg: Config):
    """The optimizer settings with lr scaled to the batch size when the recipe gives lr per lr_batch_size.

    train.batch_size is the global batch (all torchrun processes together), so the lr does not change
    with the number of processes."""
    o = cfg.optim
    if o.lr_batch_size is None:
        return o
    return dataclasses.replace(o, lr=o.lr * cfg.train.batch_size / o.lr_batch_size)


def build_trainer(cfg: Config, model: nn.Module, train_batches: TensorBatches, execution: Execution,
                  device: torch.device, total_steps: int, **extra: Any) -> Trainer:
    """Optimizer, schedule and Trainer for `model` (used by training and by the budget's calibration)."""
    t = cfg.train
    optimizer = build_optimizer(model, effective_optim(cfg), execution.precision)
    schedule = LrSchedule(optimizer, cfg.schedule, steps_per_epoch=len(train_batches), total_steps=total_steps,
                          keras_decay=cfg.optim.decay)
    return Trainer(model, optimizer, schedule, device=device, precision=execution.precision,
                   channels_last=execution.channels_last, label_smoothing=t.label_smoothing, grad_clip=t.grad_clip,
                   ema_decay=t.ema.decay, ema_every=t.ema.every,
                   ema_start_step=int(t.ema.warmup_epochs * len(train_batches)), tta=t.tta, validate=t.validate,
                   **extra)


# ----------------------------------------------------------------------------------------------- callbacks


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


class EpochPrinter(Callback):
    """One line per epoch: train and validation metrics, time, throughput."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if not distributed.is_main():
            return
        val = "" if row["val_accuracy"] != row["val_accuracy"] else \
            f"  val loss {row['val_loss']:.4f} acc {100 * row['val_accuracy']:.2f}%"
        print(f"epoch {row['epoch']}: train loss {row['train_loss']:.4f} acc {100 * row['train_accuracy']:.2f}%"
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
        self.bar.set_postfix(loss=f"{loss:.3f}", acc=f"{100 * acc:.1f}%", img_s=f"{images_per_second:.0f}",
                             refresh=False)

    def close(self) -> None:
        self.bar.close()


# ----------------------------------------------------------------------------------------------- train


def _prepare_run_dir(cfg: Config, resume: str | Path | None) -> tuple[runs.RunDir, Config]:
    """The run directory and the config to run: a new run, or the saved config of a resumed one."""
    if resume is not None:
        run = runs.RunDir(resume)
        if not run.exists(runs.CONFIG):
            raise UserError(f"cannot resume {run}: it has no {runs.CONFIG}; is it a cnnlab run directory?")
        saved = config_mod.resolve(run / runs.CONFIG)
        diff = config_mod.differences(saved, cfg)
        if diff:
            raise UserError(f"cannot resume {run}: its config differs ({'; '.join(diff[:3])}); resume without "
                            f"changes, or start a new run with another --out")
        if run.finished:
            raise UserError(f"{run} is already finished (it has {runs.SUMMARY}); nothing to resume")
        # Keep where-it-runs settings of the current invocation (threads, device, progress, data root).
        saved.train.threads, saved.train.device = cfg.train.threads, cfg.train.device
        saved.train.progress, saved.data.root = cfg.train.progress, cfg.data.root
        saved.out = str(run.path)
        return run.create(), saved
    out = cfg.out or os.path.join("runs", f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    run = runs.RunDir(out)
    if run.exists(runs.SUMMARY) or run.exists(runs.CHECKPOINT):
        raise UserError(f"output directory {run} already holds a run; continue it with --resume {run} or "
                        f"choose a new --out")
    cfg.out = str(run.path)
    return run.create(), cfg


def plan_budget(cfg: Config, data: data_mod.ClassificationData, device: torch.device, execution: Execution,
                wall_start: float) -> budget.BudgetPlan:
    """Calibrate this machine on a throwaway copy of the model, then plan cfg.train.budget_minutes."""
    train_batches, _, _ = make_batches(cfg, data, device, execution.channels_last)

    def make_trainer() -> Trainer:
        model = build_model(cfg, data).to(device, memory_format=memory_format(execution.channels_last))
        return build_trainer(cfg, model, train_batches, execution, device, total_steps=10 ** 6)

    eval_images = train_batches.normalize(train_batches.images[: cfg.train.eval_batch_size])
    timing = budget.calibrate(make_trainer, train_batches, eval_images, cfg.train.tta, device)
    # Every rank plans with the slowest rank's timings, so all agree on the number of steps.
    keys = ["step_seconds", "low_res_step_seconds", "eval_seconds_per_image", "calibration_seconds"]
    values = distributed.all_reduce_max([timing[k] or 0.0 for k in keys], device)
    timing = {k: (v if timing[k] is not None else None) for k, v in zip(keys, values)}
    return budget.make_plan(cfg, elapsed_seconds=time.perf_counter() - wall_start,
                            calibration_seconds=timing["calibration_seconds"], steps_per_epoch=len(train_batches),
                            step_seconds=timing["step_seconds"], low_res_step_seconds=timing["low_res_step_seconds"],
                            eval_seconds_per_image=timing["eval_seconds_per_image"],
                            val_images=len(data.val_labels),
                            test_images=len(data.test_labels) if cfg.train.final_test else 0)


def _check_fits(cfg: Config, data: data_mod.ClassificationData) -> None:
    """Settings that only make sense with the data at hand."""
    world = distributed.world_size()
    if cfg.train.batch_size % world:
        raise UserError(f"config field 'train.batch_size' ({cfg.train.batch_size}) is the global batch and must be "
                        f"a multiple of the {world} processes")
    if cfg.schedule.name == "plateau" and (len(data.val_labels) == 0 or cfg.train.validate != "epoch"):
        raise UserError("schedule 'plateau' reduces the learning rate when validation stops improving, so it "
                        "needs data.val_size > 0 and train.validate: epoch")


def train(cfg: Config, *, resume: str | Path | None = None, callbacks: Sequence[Callback] = (),
          started: float | None = None) -> RunResult:
    """Train the configured classifier, write its run directory, evaluate it on the test set.

    `resume` continues an interrupted run from its last checkpoint; the result equals an uninterrupted
    run with the same seed. Extra `callbacks` see every epoch (tests use them to interrupt). `started` is the
    time.perf_counter() value a time budget counts from (default: now; the CLI passes its process's start,
    so that --minutes covers the interpreter's start and imports too).
    """
    wall_start = time.perf_counter() if started is None else started
    config_mod.validate(cfg)
    check_names(cfg)
    run, cfg = _prepare_run_dir(cfg, resume)
    device = select_device(cfg.train.device, distributed.local_rank())
    distributed.init(device)
    threads = configure_threads(cfg.train.threads, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    execution = resolve_execution(device, cfg.train.precision, cfg.train.channels_last)
    allocator = tune_cpu_allocator()
    if distributed.is_main():
        print(execution.describe(), flush=True)  # the first line of every run: what was chosen and why
        if execution.warning:
            print(f"warning: {execution.warning}", file=sys.stderr, flush=True)
    if cfg.train.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
    if distributed.is_main():
        run.write_text(runs.CONFIG, cfg.to_yaml())
        run.write_json(runs.ENVIRONMENT, runs.environment(threads, device, distributed.world_size(),
                                                          {**execution.record(), "cpu_allocator": allocator}))

    data = data_mod.load(cfg.data)
    _check_fits(cfg, data)
    checkpoint = run.load_checkpoint(device) if resume is not None else None
    plan = None
    if cfg.train.budget_minutes:
        if checkpoint is not None and checkpoint.get("budget_plan"):
            plan = budget.BudgetPlan(**checkpoint["budget_plan"])  # a resumed run keeps its plan
        else:
            plan = plan_budget(cfg, data, device, execution, wall_start)
        if distributed.is_main():
            print(plan.describe(), flush=True)
    run_cfg = budget.stretch(cfg, plan.epochs, models.epoch_arguments(cfg.model.name, cfg.model.args)) \
        if plan else cfg

    torch.manual_seed(cfg.train.seed)
    model = build_model(run_cfg, data)
    if hasattr(model, "fit_to_data"):  # data-dependent init (e.g. the fast recipe's frozen whitening)
        model.fit_to_data(data.train_images, data.mean, data.std)
    model.to(device, memory_format=memory_format(execution.channels_last))
    torch.manual_seed(cfg.train.seed + distributed.rank())  # dropout differs per rank, weights do not

    train_batches, val_batches, test_batches = make_batches(run_cfg, data, device, execution.channels_last)
    epoch_steps = steps_per_epoch(train_batches, run_cfg.train.epochs)
    has_val = len(data.val_labels) > 0
    t = run_cfg.train
    extra = list(model.training_callbacks(run_cfg)) if hasattr(model, "training_callbacks") else []
    if t.lookahead.every:
        extra.append(Lookahead(t.lookahead, len(train_batches)))
    train_module = distributed.wrap(model, device)
    if t.compile:
        train_module = torch.compile(train_module)
    recorder = RunRecorder(run, has_val, weights_metadata(data), {"budget_plan": plan.record() if plan else None})
    deadline = wall_start + plan.deadline_seconds if plan and checkpoint is None else None
    trainer = build_trainer(run_cfg, model, train_batches, execution, device, total_steps=sum(epoch_steps),
                            callbacks=[*extra, recorder, EpochPrinter(), *callbacks],
                            max_train_seconds=t.max_train_minutes * 60 if t.max_train_minutes else None,
                            deadline=deadline, train_module=train_module)
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)
        recorder.restore(checkpoint)
        if distributed.is_main():
            print(f"resuming {run} after epoch {trainer.state.epoch}", flush=True)
    params = sum(p.numel() for p in model.parameters())
    if distributed.is_main():
        epochs = len(epoch_steps) if len(epoch_steps) == t.epochs else f"{t.epochs:.3g}"
        print(f"training {cfg.model.name} ({params:,} parameters) on {len(data.train_labels):,} images, "
              f"{epochs} epochs ({sum(epoch_steps)} steps), {device}, {threads} threads -> {run}", flush=True)

    progress = ProgressBar if (t.progress and distributed.is_main()) else None
    try:
        state = trainer.fit(train_batches, val_batches if has_val else None, epoch_steps, progress)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {trainer.state.epoch} finished epochs; continue with: "
                          f"cnnlab train --resume {run}") from None
    except TrainingDiverged as exc:
        kept = (f"kept the last good checkpoint {run / runs.CHECKPOINT} (epoch {trainer.state.epoch})"
                if run.exists(runs.CHECKPOINT) else "no epoch finished, so no checkpoint was written")
        raise TrainingDiverged(f"{exc}; stopped and {kept}; lower optim.lr or check the data") from None

    if distributed.is_main():
        # Test with the selected weights: best validation epoch, or the last epoch without validation.
        trainer.eval_model.load_state_dict(run.load_weights(runs.BEST))
        evaluation = {"test_accuracy": None, "test_loss": None}
        if t.final_test:  # recipe sweeps turn it off: they choose on validation and never see the test set
            evaluation = write_evaluation(run, trainer.predict(test_batches), data.classes)
        plots.curves(state.history, run / "curves.png", title=f"{cfg.name}: {cfg.model.name}")
        summary = {
            "name": cfg.name, "model": cfg.model.name, "epochs": state.epoch, "epochs_planned": t.epochs,
            "steps": trainer.schedule.step_count, "steps_planned": sum(epoch_steps),
            "best_val_accuracy": state.best_val_accuracy if has_val else None,
            "best_epoch": state.best_epoch if has_val else state.epoch,
            "final_val_accuracy": state.history[-1]["val_accuracy"] if state.history else None,
            "test_accuracy": evaluation["test_accuracy"], "test_loss": evaluation["test_loss"],
            "train_seconds": state.train_seconds, "total_seconds": time.perf_counter() - wall_start,
            "budget_minutes": cfg.train.budget_minutes, "budget": plan.record() if plan else None,
            "planned_seconds": plan.planned_total_seconds if plan else None,
            "params": params, "seed": t.seed, "train_images": len(data.train_labels),
            "val_images": len(data.val_labels), "test_images": len(data.test_labels),
            "precision": execution.precision, "channels_last": execution.channels_last,
            "precision_reason": execution.reason, "cpu_capability": execution.cpu_capability,
            "cpu_class": execution.cpu_class, "native_bf16": execution.native_bf16,
            "tta": t.tta, "device": str(device), "threads": threads, "world_size": distributed.world_size(),
            "stop_reason": state.stop_reason, "resumed": resume is not None,
            "git_commit": runs.git_commit(), "torch_version": torch.__version__, "data_checksum": data.checksum,
        }
        summary["actual_seconds"] = time.perf_counter() - wall_start  # the last thing measured
        run.write_json(runs.SUMMARY, summary)
    distributed.barrier()
    distributed.shutdown()
    return RunResult(run.path, run.read_json(runs.SUMMARY) if distributed.is_main() else {})


# ----------------------------------------------------------------------------------------------- evaluate


def write_evaluation(run: runs.RunDir, result, classes: Sequence[str]) -> dict[str, Any]:
    """evaluation.json, confusion_matrix.csv and confusion_matrix.png for a test-set prediction."""
    cm = confusion_matrix(result.predictions, result.labels, len(classes))
    per_class = per_class_accuracy(cm)
    evaluation = {"test_accuracy": result.accuracy, "test_loss": result.loss, "test_images": len(result.labels),
                  "per_class_accuracy": dict(zip(classes, per_class)), "confusion_matrix": cm.tolist(),
                  "classes": list(classes)}
    run.write_json("evaluation.json", evaluation)
    run.write_csv("confusion_matrix.csv", [{"true": c, **{p: int(v) for p, v in zip(classes, row)}}
                                           for c, row in zip(classes, cm.tolist())])
    plots.confusion_matrix(cm, classes, run / "confusion_matrix.png",
                           title=f"test accuracy {100 * result.accuracy:.2f}%")
    return evaluation


def load_run_model(run_dir: str | Path, weights: str = "best") -> tuple[nn.Module, Config, runs.RunDir]:
    """(model with the run's weights, its config, the run directory), e.g. for visualization.

    weights: 'best' (best validation epoch) or 'last' (last finished epoch, from the checkpoint).
    """
    run = runs.RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError(f"run directory {run} does not exist; pass the --out folder of a cnnlab train run")
    if not run.exists(runs.CONFIG):
        raise UserError(f"{run} has no {runs.CONFIG}; pass the --out folder of a cnnlab train run")
    cfg = config_mod.resolve(run / runs.CONFIG)
    meta = run.weights_metadata(runs.BEST)
    state = run.load_checkpoint()["model"] if weights == "last" else run.load_weights(runs.BEST)
    model = build_model(cfg, num_classes=len(json.loads(meta["classes"])),
                        image_shape=tuple(json.loads(meta["image_shape"])))
    model.load_state_dict(state)
    return model.eval(), cfg, run


def weights_metadata(data: data_mod.ClassificationData) -> dict[str, str]:
    """What a weights file needs to rebuild its model and name its outputs (safetensors metadata)."""
    return {"classes": json.dumps(list(data.classes)), "image_shape": json.dumps(list(data.image_shape)),
            "mean": json.dumps(list(data.mean)), "std": json.dumps(list(data.std))}


def evaluate(run_dir: str | Path, *, weights: str = "best", data_root: str | None = None,
             threads: int | None = None, device: str = "auto") -> dict[str, Any]:
    """Test-set top-1, per-class accuracy and confusion matrix of a finished (or interrupted) run."""
    model, cfg, run = load_run_model(run_dir, weights)
    if data_root:
        cfg.data.root = data_root
    configure_threads(threads)
    dev = select_device(device)
    execution = resolve_execution(dev, cfg.train.precision, cfg.train.channels_last)
    print(execution.describe(), flush=True)
    data = data_mod.load(cfg.data)
    model.to(dev, memory_format=memory_format(execution.channels_last))
    _, _, test_batches = make_batches(cfg, data, dev, execution.channels_last)
    result = predict(model, test_batches, dev, execution.precision, cfg.train.tta)
    return write_evaluation(run, result, data.classes)
