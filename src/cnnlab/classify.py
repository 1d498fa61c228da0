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
from . import models, runs, transfer
from .config import Config
from .data.augment import BatchAugment
from .data.loader import TensorBatches, steps_per_epoch
from .engine import Callback, Trainer, TrainingDiverged, budget, distributed, predict
from .engine.averaging import Lookahead
from .engine.callbacks import EpochPrinter, ProgressBar, RunRecorder
from .engine.device import (Execution, autocast, configure_threads, memory_format, resolve_execution,
                            select_device, tune_cpu_allocator)
from .engine.metrics import confusion_matrix, per_class_accuracy
from .engine.optim import LrSchedule, build_optimizer, check_names as check_optim_names
from .errors import UserError
from .models import surgery
from .models.backbones import preprocess_for
from .transfer import features as transfer_features
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
    return models.create_for(cfg.model.name, cfg.model.args, num_classes, image_shape)


def make_batches(cfg: Config, data: data_mod.ClassificationData, device: torch.device,
                 channels_last: bool) -> tuple[TensorBatches, ...]:
    """(train, val, test) batch iterables on the device; train.batch_size is the global batch (torchrun).

    For a features run the tensors are feature vectors: no normalization, augmentation or image layout."""
    t = cfg.train
    images = not cfg.transfer.features
    common = dict(mean=data.mean, std=data.std, device=device, channels_last=channels_last and images,
                  normalize=images)
    augment = BatchAugment(cfg.data.augment, data.image_shape[-1], seed=t.seed) if images else None
    train = TensorBatches(data.train_images, data.train_labels, t.batch_size, shuffle=True, seed=t.seed,
                          augment=augment,
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
    optim = effective_optim(cfg)
    groups = transfer.parameter_groups(model, cfg, optim.lr) if transfer.adapts_network(cfg) else None
    optimizer = build_optimizer(model, optim, execution.precision, groups)
    schedule = LrSchedule(optimizer, cfg.schedule, steps_per_epoch=len(train_batches), total_steps=total_steps,
                          keras_decay=cfg.optim.decay)
    return Trainer(model, optimizer, schedule, device=device, precision=execution.precision,
                   channels_last=execution.channels_last, label_smoothing=t.label_smoothing, grad_clip=t.grad_clip,
                   ema_decay=t.ema.decay, ema_every=t.ema.every,
                   ema_start_step=int(t.ema.warmup_epochs * len(train_batches)), tta=t.tta, validate=t.validate,
                   early_stopping=cfg.transfer.early_stopping, **extra)


# ----------------------------------------------------------------------------------------------- callbacks


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

    def make_trainer() -> Trainer:  # frozen layers and all, as the run will train it
        model, _ = prepared_model(cfg, data, device, execution, load_source=False)
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
    if (cfg.transfer.early_stopping or cfg.schedule.name == "plateau") and \
            (len(data.val_labels) == 0 or cfg.train.validate != "epoch"):
        if cfg.transfer.early_stopping:
            raise UserError("early stopping watches the validation accuracy, so it needs validation images "
                            "(data.val_size / data.val_fraction > 0) and train.validate: epoch")
        raise UserError("schedule 'plateau' reduces the learning rate when validation stops improving, so it "
                        "needs data.val_size > 0 and train.validate: epoch")
    if cfg.transfer.features and cfg.train.tta != "none":
        raise UserError(f"train.tta '{cfg.train.tta}' needs images, but a features run classifies feature vectors; "
                        f"set train.tta: none")


@dataclass
class Session:
    """Where and how a run computes (resolved once at its start)."""

    run: runs.RunDir
    cfg: Config
    device: torch.device
    threads: int
    execution: Execution
    wall_start: float


def _open_session(cfg: Config, resume: str | Path | None, wall_start: float) -> Session:
    """Validate, open the run directory, pick device / threads / precision, write config and environment."""
    config_mod.validate(cfg)
    check_names(cfg)
    run, cfg = _prepare_run_dir(cfg, resume)
    device = select_device(cfg.train.device, distributed.local_rank())
    distributed.check_sync_batchnorm(cfg.train.sync_batchnorm, device)
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
    return Session(run, cfg, device, threads, execution, wall_start)


def _budget_plan(session: Session, data: data_mod.ClassificationData,
                 checkpoint: dict[str, Any] | None) -> budget.BudgetPlan | None:
    """The time budget's plan: the checkpoint's when resuming (a run keeps its plan), else a new one."""
    cfg = session.cfg
    if not cfg.train.budget_minutes:
        return None
    if checkpoint is not None and checkpoint.get("budget_plan"):
        plan = budget.BudgetPlan(**checkpoint["budget_plan"])
    else:
        plan = plan_budget(cfg, data, session.device, session.execution, session.wall_start)
    if distributed.is_main():
        print(plan.describe(), flush=True)
    return plan


def image_view(cfg: Config) -> data_mod.ImageView | None:
    """How the model wants its photos (folder datasets): a backbone's preprocessing, a source run's
    input size and normalization, or the data's own statistics for a network trained from scratch."""
    if cfg.data.dataset != "folder":
        return None
    if cfg.transfer.from_run:
        meta = transfer.source_metadata(cfg.transfer.from_run)
        side = json.loads(meta["image_shape"])[-1]
        return data_mod.ImageView(side, side, tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"])))
    pre = preprocess_for(cfg.model.name)
    if pre is not None:
        return data_mod.ImageView(pre.resize, pre.crop, pre.mean, pre.std)
    return data_mod.ImageView()


def prepared_model(cfg: Config, data: data_mod.ClassificationData, device: torch.device, execution: Execution,
                   load_source: bool = True) -> tuple[nn.Module, list[Callback]]:
    """The seeded model on the device, in the chosen layout, ready to train, and the callbacks it brings:
    fitted to the data where it asks to be; for transfer, cut from its source run (``load_source``: with
    the source's weights; the budget's calibration only needs the shapes) and frozen per the config."""
    torch.manual_seed(cfg.train.seed)
    callbacks: list[Callback] = []
    if cfg.transfer.features:
        model = nn.Linear(data.train_images.shape[1], len(data.classes))
    elif cfg.transfer.from_run:
        model = transfer.cut_source_run(cfg.transfer.from_run, len(data.classes), load_weights=load_source)
    else:
        model = build_model(cfg, data)
        if cfg.transfer.head_from and load_source:
            transfer.load_head(model, cfg, list(data.classes))
    if hasattr(model, "fit_to_data"):  # data-dependent init (e.g. the fast recipe's frozen whitening)
        model.fit_to_data(data.train_images, data.mean, data.std)
    if transfer.adapts_network(cfg):
        callbacks += transfer.prepare(model, cfg)
    model.to(device, memory_format=memory_format(execution.channels_last and not cfg.transfer.features))
    torch.manual_seed(cfg.train.seed + distributed.rank())  # dropout differs per rank, weights do not
    return model, callbacks


def load_data(cfg: Config, session: Session) -> tuple[data_mod.ClassificationData, dict[str, str], dict]:
    """(the data the model trains on, the weights metadata, notes): images; for a features run, the
    backbone's features of them (extracted once, cached)."""
    data = data_mod.load(cfg.data, image_view(cfg))
    meta, notes = weights_metadata(data), {"decoded_images": data.decoded_images}
    if cfg.transfer.features:
        torch.manual_seed(cfg.train.seed)
        backbone = build_model(cfg, data)
        data, info = transfer_features.feature_data(data, backbone, cfg.model.name, cfg.data, session.device,
                                                    session.execution.precision, session.execution.channels_last,
                                                    cfg.transfer.extract_backend)
        notes.update({"feature_cache": info["cache"], "feature_dimensions": info["dimensions"],
                      "feature_backend": info["backend"]})
        if distributed.is_main():
            print(f"features of {cfg.model.name}: {info['dimensions']} per image ({info['cache']} of the feature "
                  f"cache)", flush=True)
    return data, meta, notes


def _fit(trainer: Trainer, run: runs.RunDir, train_batches, val_batches, epoch_steps: list[int], progress,
         detect_anomaly: bool = False):
    """trainer.fit with the run's messages for Ctrl-C and divergence (`detect_anomaly`: autograd names the
    operation that produced a NaN, for debugging)."""
    try:
        with torch.autograd.set_detect_anomaly(detect_anomaly):
            return trainer.fit(train_batches, val_batches, epoch_steps, progress)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {trainer.state.epoch} finished epochs; continue with: "
                          f"cnnlab train --resume {run}") from None
    except TrainingDiverged as exc:
        kept = (f"kept the last good checkpoint {run / runs.CHECKPOINT} (epoch {trainer.state.epoch})"
                if run.exists(runs.CHECKPOINT) else "no epoch finished, so no checkpoint was written")
        raise TrainingDiverged(f"{exc}; stopped and {kept}; lower optim.lr or check the data") from None


def train(cfg: Config, *, resume: str | Path | None = None, callbacks: Sequence[Callback] = (),
          started: float | None = None) -> RunResult:
    """Train the configured classifier, write its run directory, evaluate it on the test set.

    `resume` continues an interrupted run from its last checkpoint; the result equals an uninterrupted
    run with the same seed. Extra `callbacks` see every epoch (tests use them to interrupt). `started` is the
    time.perf_counter() value a time budget counts from (default: now; the CLI passes its process's start,
    so that --minutes covers the interpreter's start and imports too).
    """
    wall_start = time.perf_counter() if started is None else started
    cfg = transfer.adopt_source_model(cfg)
    session = _open_session(cfg, resume, wall_start)
    cfg, run, device = session.cfg, session.run, session.device
    data, meta, notes = load_data(cfg, session)
    _check_fits(cfg, data)
    checkpoint = None
    if resume is not None and run.exists(runs.CHECKPOINT):
        checkpoint = run.load_checkpoint(device)
    elif resume is not None:  # killed before its first epoch ended: nothing to lose, start it again
        if distributed.is_main():
            print(f"{run} has no finished epoch yet: starting it from the beginning", flush=True)
        resume = None
    plan = _budget_plan(session, data, checkpoint)
    run_cfg = budget.stretch(cfg, plan.epochs, models.epoch_arguments(cfg.model.name, cfg.model.args)) \
        if plan else cfg
    t = run_cfg.train

    model, extra = prepared_model(run_cfg, data, device, session.execution)
    notes["params"] = sum(p.numel() for p in model.parameters())
    train_batches, val_batches, test_batches = make_batches(run_cfg, data, device, session.execution.channels_last)
    epoch_steps = steps_per_epoch(train_batches, t.epochs)
    has_val = data.has_validation
    extra += list(model.training_callbacks(run_cfg)) if hasattr(model, "training_callbacks") else []
    if t.lookahead.every:
        extra.append(Lookahead(t.lookahead, len(train_batches)))
    def wrap_for_training(module: nn.Module, sync_batchnorm: bool = False) -> nn.Module:
        wrapped = distributed.wrap(module, device, sync_batchnorm)
        return torch.compile(wrapped) if t.compile else wrapped

    train_module = wrap_for_training(model, t.sync_batchnorm)  # batch norms converted once, here
    recorder = RunRecorder(run, has_val, meta, {"budget_plan": plan.record() if plan else None})
    trainer = build_trainer(run_cfg, model, train_batches, session.execution, device, total_steps=sum(epoch_steps),
                            callbacks=[*extra, recorder, EpochPrinter(), *callbacks],
                            max_train_seconds=t.max_train_minutes * 60 if t.max_train_minutes else None,
                            deadline=session.wall_start + plan.deadline_seconds if plan and checkpoint is None
                            else None, train_module=train_module,
                            rewrap=wrap_for_training if distributed.is_active() else None)
    if checkpoint is not None:
        trainer.load_state_dict(checkpoint)
        recorder.restore(checkpoint)
        if distributed.is_main():
            print(f"resuming {run} after epoch {trainer.state.epoch}", flush=True)
    if distributed.is_main():
        epochs = len(epoch_steps) if len(epoch_steps) == t.epochs else f"{t.epochs:.3g}"
        print(f"training {cfg.model.name} ({notes['params']:,} parameters) on {len(data.train_labels):,} images, "
              f"{epochs} epochs ({sum(epoch_steps)} steps), {device}, {session.threads} threads -> {run}", flush=True)

    state = _fit(trainer, run, train_batches, val_batches if has_val else None, epoch_steps,
                 ProgressBar if (t.progress and distributed.is_main()) else None, t.detect_anomaly)
    differs = distributed.replicas_differ(model)
    if differs:  # a cnnlab bug (a parameter outside DDP's gradient averaging), never the user's input
        raise RuntimeError(f"the processes' weights diverged during training (first: {differs}); the run "
                           f"directory holds rank 0's. Please report this with the run's config.yaml")
    if distributed.is_main():
        _finish(session, run_cfg, data, trainer, state, test_batches, plan, notes, resumed=resume is not None)
    distributed.barrier()
    distributed.shutdown()
    return RunResult(run.path, run.read_json(runs.SUMMARY) if distributed.is_main() else {})


def _finish(session: Session, run_cfg: Config, data: data_mod.ClassificationData, trainer: Trainer, state,
            test_batches, plan: budget.BudgetPlan | None, notes: dict, resumed: bool) -> None:
    """Test the selected weights (best validation epoch, else the last), plot, write summary.json."""
    cfg, run, t, execution = session.cfg, session.run, run_cfg.train, session.execution
    has_val = data.has_validation
    trainer.eval_model.load_state_dict(run.load_weights(runs.BEST))
    evaluation = {"test_accuracy": None, "test_loss": None}
    if t.final_test and len(data.test_labels):  # sweeps turn it off: they choose on validation, never on test
        evaluation = write_evaluation(run, trainer.predict(test_batches), data.classes)
    plots.curves(state.history, run / "curves.png", title=f"{cfg.name}: {cfg.model.name}")
    summary = {
        "name": cfg.name, "model": cfg.model.name, "epochs": state.epoch, "epochs_planned": t.epochs,
        "steps": trainer.schedule.step_count, "steps_planned": trainer.schedule.total_steps,
        # val_accuracy: of the weights the run keeps (best.safetensors, the best validation epoch)
        "val_accuracy": state.best_val_accuracy if has_val else None,
        "best_val_accuracy": state.best_val_accuracy if has_val else None,
        "best_epoch": state.best_epoch if has_val else state.epoch,
        "final_val_accuracy": state.history[-1]["val_accuracy"] if state.history else None,
        "test_accuracy": evaluation["test_accuracy"], "test_loss": evaluation["test_loss"],
        "train_seconds": state.train_seconds, "total_seconds": time.perf_counter() - session.wall_start,
        "budget_minutes": cfg.train.budget_minutes, "budget": plan.record() if plan else None,
        "planned_seconds": plan.planned_total_seconds if plan else None,
        "seed": t.seed,
        "train_images": len(data.train_labels), "val_images": len(data.val_labels),
        "test_images": len(data.test_labels),
        "precision": execution.precision, "channels_last": execution.channels_last,
        "precision_reason": execution.reason, "cpu_capability": execution.cpu_capability,
        "cpu_class": execution.cpu_class, "native_bf16": execution.native_bf16,
        "tta": t.tta, "device": str(session.device), "threads": session.threads,
        "world_size": distributed.world_size(), "stop_reason": state.stop_reason, "resumed": resumed,
        "git_commit": runs.git_commit(), "torch_version": torch.__version__, "data_checksum": data.checksum,
        "dataset": cfg.data.dataset, "data_source": data.source, "layout": data.layout, "classes": data.classes,
        "kind": transfer.kind(cfg), "trainable": cfg.transfer.trainable if transfer.is_transfer(cfg) else "all",
        **notes,
    }
    summary["actual_seconds"] = time.perf_counter() - session.wall_start  # the last thing measured
    run.write_json(runs.SUMMARY, summary)


# ----------------------------------------------------------------------------------------------- evaluate


def write_evaluation(run: runs.RunDir, result, classes: Sequence[str], name: str = "evaluation.json",
                     source: str = "") -> dict[str, Any]:
    """evaluation.json (or `name`), confusion_matrix.csv/.png for a test-set prediction."""
    cm = confusion_matrix(result.predictions, result.labels, len(classes))
    per_class = per_class_accuracy(cm)
    evaluation = {"test_accuracy": result.accuracy, "test_loss": result.loss, "test_images": len(result.labels),
                  "per_class_accuracy": dict(zip(classes, per_class)), "confusion_matrix": cm.tolist(),
                  "classes": list(classes), "data": source}
    run.write_json(name, evaluation)
    stem = "confusion_matrix" if name == "evaluation.json" else Path(name).stem.replace("evaluation", "confusion_matrix")
    run.write_csv(f"{stem}.csv", [{"true": c, **{p: int(v) for p, v in zip(classes, row)}}
                                  for c, row in zip(classes, cm.tolist())])
    plots.confusion_matrix(cm, classes, run / f"{stem}.png", title=f"test accuracy {100 * result.accuracy:.2f}%")
    return evaluation


def load_run_model(run_dir: str | Path, weights: str = "best") -> tuple[nn.Module, Config, runs.RunDir]:
    """(model with the run's weights, its config, the run directory), e.g. for visualization or predict.

    weights: 'best' (best validation epoch) or 'last' (last finished epoch, from the checkpoint). A features
    run comes back whole: the backbone with the trained classifier as its head, so it takes images.
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
    target = surgery.head(model) if cfg.transfer.features else model
    try:
        target.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"the weights in {run} do not fit the model its config describes; the run directory "
                        f"is damaged or was edited") from None
    return model.eval(), cfg, run


def weights_metadata(data: data_mod.ClassificationData) -> dict[str, str]:
    """What a weights file needs to rebuild its model and name its outputs (safetensors metadata)."""
    return {"classes": json.dumps(list(data.classes)), "image_shape": json.dumps(list(data.image_shape)),
            "mean": json.dumps(list(data.mean)), "std": json.dumps(list(data.std))}


def run_view(run: runs.RunDir) -> data_mod.ImageView:
    """The input size and normalization a run's model was trained with (from its weights metadata)."""
    meta = run.weights_metadata(runs.BEST)
    side = json.loads(meta["image_shape"])[-1]
    return data_mod.ImageView(side, side, tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"])))


def match_classes(run_classes: Sequence[str], data: data_mod.ClassificationData, path: str) -> torch.Tensor:
    """Map the data's label indices onto the run's by class name; a class either side lacks is an error."""
    extra = [c for c in data.classes if c not in run_classes]
    missing = [c for c in run_classes if c not in data.classes]
    if extra:
        raise UserError(f"dataset {path} has class '{extra[0]}' that the run does not know (its classes: "
                        f"{', '.join(run_classes)})")
    if missing:
        raise UserError(f"dataset {path} lacks class '{missing[0]}' of the run; evaluate on data with all its "
                        f"classes ({', '.join(run_classes)})")
    return torch.tensor([list(run_classes).index(c) for c in data.classes], dtype=torch.long)


def evaluate(run_dir: str | Path, *, weights: str = "best", data_root: str | None = None,
             threads: int | None = None, device: str = "auto", data_path: str | None = None,
             layout: str = "auto") -> dict[str, Any]:
    """Test-set top-1, per-class accuracy and confusion matrix of a finished (or interrupted) run.

    `data_path`: evaluate on another labelled dataset instead (any layout of data/folders.py; its test split
    when it has one, else all its images), its classes matched to the run's by name.
    """
    model, cfg, run = load_run_model(run_dir, weights)
    if data_root:
        cfg.data.root = data_root
    configure_threads(threads)
    dev = select_device(device)
    execution = resolve_execution(dev, cfg.train.precision, cfg.train.channels_last)
    print(execution.describe(), flush=True)
    run_classes = json.loads(run.weights_metadata(runs.BEST)["classes"])
    tta = "none" if cfg.transfer.features else cfg.train.tta
    if data_path is None and cfg.transfer.features:
        cfg.transfer.features = False  # the whole model (backbone + trained head) evaluates the images
    if data_path is not None:
        other = dataclasses.replace(cfg.data, dataset="folder", path=str(data_path), layout=layout,
                                    val_fraction=0.0, test_fraction=0.0, image_size=0)
        data = data_mod.load(other, run_view(run))
        mapping = match_classes(run_classes, data, str(data_path))
        images = data.test_images if len(data.test_labels) else \
            torch.cat([data.train_images, data.val_images])
        labels = data.test_labels if len(data.test_labels) else torch.cat([data.train_labels, data.val_labels])
        data = dataclasses.replace(data, test_images=images, test_labels=mapping[labels], classes=run_classes)
        cfg = dataclasses.replace(cfg, transfer=dataclasses.replace(cfg.transfer, features=False))
    else:
        data = data_mod.load(cfg.data, run_view(run) if cfg.data.dataset == "folder" else None)
    model.to(dev, memory_format=memory_format(execution.channels_last))
    _, _, test_batches = make_batches(cfg, data, dev, execution.channels_last)
    result = predict(model, test_batches, dev, execution.precision, tta)
    name = "evaluation.json" if data_path is None else "evaluation-other.json"
    return write_evaluation(run, result, run_classes, name=name, source=str(data_path or data.source))


def predict_images(run_dir: str | Path, images: Sequence[str | Path], *, top_k: int = 5,
                   threads: int | None = None, device: str = "auto") -> list[dict[str, Any]]:
    """Top-k class names and probabilities for each image file (folders expanded), with the run's model."""
    from .data.folders import decode
    from .data.images import expand_image_paths
    from .engine.metrics import topk

    model, cfg, run = load_run_model(run_dir)
    configure_threads(threads)
    dev = select_device(device)
    execution = resolve_execution(dev, cfg.train.precision, cfg.train.channels_last)
    view = run_view(run)
    classes = json.loads(run.weights_metadata(runs.BEST)["classes"])
    paths = expand_image_paths(images)
    batch = torch.stack([decode(p, view.resize, view.crop) for p in paths])
    x = ((batch.float() / 255 - torch.tensor(view.mean).view(1, -1, 1, 1)) /
         torch.tensor(view.std).view(1, -1, 1, 1)).to(dev, memory_format=memory_format(execution.channels_last))
    model.to(dev, memory_format=memory_format(execution.channels_last))
    with torch.no_grad(), autocast(dev, execution.precision):
        logits = model(x).float()
    probs, index = topk(logits, top_k)
    return [{"image": str(p), "predictions": [{"class_index": int(i), "class_name": classes[int(i)],
                                               "probability": float(q)} for q, i in zip(pr, ix)]}
            for p, pr, ix in zip(paths, probs.cpu(), index.cpu())]
