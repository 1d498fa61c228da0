"""Training a classifier run (`cnnlab train`, and `features`, `finetune`, `transfer`: the same path).

The run session (engine/run.py) owns the folder, resume checks, device and precision, recording and
summary.json; this module resolves the config, builds the parts (building.py), plans a time budget, trains
with the one Trainer, and tests the kept weights once, at the end.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import config as config_mod
from .. import data as data_mod
from .. import models, runs, transfer
from ..config import Config
from ..data.loader import steps_per_epoch
from ..engine import Callback, Trainer, budget, distributed, pace
from ..engine.averaging import Lookahead
from ..engine.layout import Layout
from ..engine.pace import Pacer
from ..engine.callbacks import ProgressBar
from ..engine.device import Execution
from ..engine.run import Interrupted, RunSession, default_out
from ..errors import UserError
from ..report import plots
from .building import build_trainer, check_names, is_features, load_data, make_batches, prepared_model
from .inference import write_evaluation

__all__ = ["Interrupted", "RunResult", "train", "plan_budget"]


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]


def plan_budget(cfg: Config, data: data_mod.ClassificationData, device: torch.device, execution: Execution,
                wall_start: float) -> budget.BudgetPlan:
    """Calibrate this machine on a throwaway copy of the model, then plan cfg.train.budget_minutes."""
    train_batches, _, _ = make_batches(cfg, data, device, execution.channels_last)

    def make_trainer() -> Trainer:  # frozen layers and all, as the run will train it
        model, _ = prepared_model(cfg, data, device, execution, load_source=False)
        return build_trainer(cfg, model, train_batches, execution, device, total_steps=10 ** 6)

    eval_images = train_batches.normalize(train_batches.images[: cfg.train.eval_batch_size])
    timing = budget.calibrate(make_trainer, train_batches, eval_images, cfg.train.tta, device,
                              cfg.train.budget_minutes * 60)
    # Every rank plans with the slowest rank's timings, so all agree on the number of steps.
    keys = ["step_seconds", "low_res_step_seconds", "eval_seconds_per_image", "calibration_seconds",
            "step_seconds_spread", "calibration_steps"]
    values = distributed.all_reduce_max([timing[k] or 0.0 for k in keys], device)
    timing = {k: (v if timing[k] is not None else None) for k, v in zip(keys, values)}
    return budget.make_plan(cfg, write_seconds=budget.final_write_seconds(_curves_seconds()),
                            exit_estimate=budget.exit_seconds(), elapsed_seconds=pace.clock() - wall_start,
                            calibration_seconds=timing["calibration_seconds"], steps_per_epoch=len(train_batches),
                            step_seconds=timing["step_seconds"], low_res_step_seconds=timing["low_res_step_seconds"],
                            eval_seconds_per_image=timing["eval_seconds_per_image"],
                            val_images=len(data.val_labels),
                            test_images=len(data.test_labels) if cfg.train.final_test else 0,
                            step_seconds_spread=timing["step_seconds_spread"],
                            calibration_steps=int(timing["calibration_steps"]))


def _curves_seconds() -> float:
    """Seconds to draw a learning-curve figure on this machine (the budget's estimate of the end's files)."""
    import tempfile

    history = [{"epoch": e, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5}
               for e in range(1, 11)]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        plots.curves(history, Path(folder) / "curves.png", title="calibration")
        return time.perf_counter() - start


def _open(cfg: Config, resume: str | Path | None, started: float | None) -> tuple[RunSession, Config]:
    """Validate the config, open the run session, and settle the config to run: a new run's, or the saved
    config of a resumed one with this invocation's where-it-runs settings (config.RESUME_CHANGEABLE)."""
    config_mod.validate(cfg)
    check_names(cfg)
    kind = transfer.kind(cfg)
    if resume is None:
        cfg.out = str(cfg.out or default_out(cfg.name))
        return RunSession.open(cfg.out, kind=kind, started=started), cfg
    session = RunSession.open(resume, kind=kind, resume=True, started=started)
    saved = config_mod.resolve(session.run / runs.CONFIG)
    diff = config_mod.differences(saved, cfg)
    if diff:
        raise UserError(f"cannot resume {session.run}: its config differs ({'; '.join(diff[:3])}); resume without "
                        f"changes, or start a new run with another --out")
    for key in config_mod.RESUME_CHANGEABLE:  # where it runs may change, what it computes may not
        _set_field(saved, key, config_mod.get_field(cfg, key))
    saved.out = str(session.run.path)
    return session, saved


def _set_field(cfg: Config, dotted: str, value: Any) -> None:
    parent, _, last = dotted.rpartition(".")
    setattr(config_mod.get_field(cfg, parent) if parent else cfg, last, value)


def train(cfg: Config, *, resume: str | Path | None = None, callbacks: Sequence[Callback] = (),
          started: float | None = None) -> RunResult:
    """Train the configured classifier, write its run directory, evaluate it on the test set.

    `resume` continues an interrupted run from its last checkpoint; the result equals an uninterrupted
    run with the same seed. Extra `callbacks` see every epoch (tests use them to interrupt). `started` is the
    time.perf_counter() value a time budget counts from (default: now; the CLI passes its process's start,
    so that --minutes covers the interpreter's start and imports too).
    """
    session, cfg = _open(transfer.adopt_source_model(cfg), resume, started)
    with session.removed_if_it_fails_early():
        return _train(session, cfg, callbacks)


def _train(session: RunSession, cfg: Config, callbacks: Sequence[Callback]) -> RunResult:
    t = cfg.train
    execution = session.start(device=t.device, threads=t.threads, precision=t.precision,
                              channels_last=t.channels_last, deterministic=t.deterministic,
                              sync_batchnorm=t.sync_batchnorm, tensorboard=t.tensorboard)
    session.write_settings(runs.CONFIG, cfg.to_yaml())
    run, device = session.run, session.device
    data, meta, notes = load_data(cfg, device, execution)
    _check_fits(cfg, data)
    checkpoint = session.checkpoint()
    plan = _budget_plan(session, cfg, data, checkpoint)
    run_cfg = budget.stretch(cfg, plan.epochs, models.epoch_arguments(cfg.model.name, cfg.model.args)) \
        if plan else cfg
    t = run_cfg.train

    model, extra = prepared_model(run_cfg, data, device, execution)
    notes["params"] = sum(p.numel() for p in model.parameters())
    train_batches, val_batches, test_batches = make_batches(run_cfg, data, device, execution.channels_last)
    epoch_steps = steps_per_epoch(train_batches, t.epochs)
    extra += models.training_callbacks(model, run_cfg)
    if t.lookahead.every:
        extra.append(Lookahead(t.lookahead, len(train_batches)))

    def wrap_for_training(module: nn.Module, sync_batchnorm: bool = False) -> nn.Module:
        wrapped = distributed.wrap(module, device, sync_batchnorm)
        return torch.compile(wrapped) if t.compile else wrapped

    train_module = wrap_for_training(model, t.sync_batchnorm)  # batch norms converted once, here
    recording = session.recording(meta.to_metadata(), data.has_validation,
                                  {"budget_plan": plan.record() if plan else None})
    trainer = build_trainer(run_cfg, model, train_batches, execution, device, total_steps=sum(epoch_steps),
                            callbacks=[*extra, *recording, *callbacks],
                            max_train_seconds=t.max_train_minutes * 60 if t.max_train_minutes else None,
                            deadline=session.wall_start + plan.deadline_seconds if plan and checkpoint is None
                            else None, train_module=train_module,
                            rewrap=wrap_for_training if distributed.is_active() else None,
                            **_budget_parts(plan, train_batches, val_batches))
    if plan:
        _pace(trainer, plan, train_batches, session)
    session.restore(trainer, checkpoint)
    if distributed.is_main():
        epochs = len(epoch_steps) if len(epoch_steps) == t.epochs else f"{t.epochs:.3g}"
        print(f"training {cfg.model.name} ({notes['params']:,} parameters) on {len(data.train_labels):,} images, "
              f"{epochs} epochs ({sum(epoch_steps)} steps), {device}, {session.threads} threads -> {run}", flush=True)

    state = session.fit(trainer, train_batches, val_batches if data.has_validation else None, epoch_steps,
                        ProgressBar if (t.progress and distributed.is_main()) else None, t.detect_anomaly)
    differs = distributed.replicas_differ(model)
    if differs:  # a cnnlab bug (a parameter outside DDP's gradient averaging), never the user's input
        raise RuntimeError(f"the processes' weights diverged during training (first: {differs}); the run "
                           f"directory holds rank 0's. Please report this with the run's config.yaml")
    summary = None
    if distributed.is_main():
        summary = _finish(session, cfg, run_cfg, data, trainer, state, test_batches, plan, notes)
    distributed.barrier()
    distributed.shutdown()
    return RunResult(run.path, summary.to_dict() if summary is not None else {})


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
    if is_features(cfg) and cfg.train.tta != "none":
        raise UserError(f"train.tta '{cfg.train.tta}' needs images, but a features run classifies feature vectors; "
                        f"set train.tta: none")


def _budget_plan(session: RunSession, cfg: Config, data: data_mod.ClassificationData,
                 checkpoint: dict[str, Any] | None) -> budget.BudgetPlan | None:
    """The time budget's plan: the checkpoint's when resuming (a run keeps its plan), else a new one."""
    if not cfg.train.budget_minutes:
        return None
    budget.check_schedule_choice(cfg)
    if checkpoint is not None and checkpoint.get("budget_plan"):
        plan = budget.BudgetPlan(**checkpoint["budget_plan"])
    else:
        plan = plan_budget(cfg, data, session.device, session.execution, session.wall_start)
    if distributed.is_main():
        print(plan.describe(), flush=True)
    return plan


def _budget_parts(plan: budget.BudgetPlan | None, train_batches, val_batches) -> dict[str, Any]:
    """The Trainer's layout of a budget run (rows per epoch) and the validation subset of the rows inside
    epochs (the first N images of the validation split, which is stratified and seeded)."""
    if not plan:
        return {}
    subset = None
    if plan.val_subset:
        subset = copy.copy(val_batches)
        subset.images, subset.labels = val_batches.images[: plan.val_subset], val_batches.labels[: plan.val_subset]
    return {"layout": Layout.budget(len(train_batches), plan.total_steps, plan.points_per_epoch),
            "val_subset": subset}


def _pace(trainer: Trainer, plan: budget.BudgetPlan, train_batches, session: RunSession) -> None:
    """A budget run's lr curve (annealed where its plan says: train.budget_schedule) and its re-planner;
    both follow the plan, so a resumed run (whose plan comes from its checkpoint) continues the same way."""
    trainer.schedule.anneal_to_end(plan.anneal)
    if plan.train_end_seconds > 0:  # a plan from before re-planning has none: it keeps its length
        trainer.pacer = Pacer(plan, trainer.layout, trainer.schedule, start=session.wall_start,
                              low_res_steps=train_batches.low_res_steps(), device=session.device)


def _finish(session: RunSession, cfg: Config, run_cfg: Config, data: data_mod.ClassificationData, trainer: Trainer,
            state, test_batches, plan: budget.BudgetPlan | None, notes: dict) -> runs.ClassifierSummary:
    """Test the selected weights (best validation epoch, else the last), plot, write summary.json."""
    run, t, execution = session.run, run_cfg.train, session.execution
    has_val = data.has_validation
    trainer.eval_model.load_state_dict(run.load_weights(runs.BEST))
    evaluation = {"test_accuracy": None, "test_loss": None}
    if t.final_test and len(data.test_labels):  # sweeps turn it off: they choose on validation, never on test
        evaluation = write_evaluation(run, trainer.predict(test_batches), data.classes)
    plots.curves(state.history, run / "curves.png", title=f"{cfg.name}: {cfg.model.name}")
    summary = runs.ClassifierSummary(
        kind=transfer.kind(cfg), name=cfg.name, model=cfg.model.name, epochs=state.epoch, epochs_planned=t.epochs,
        steps=trainer.schedule.step_count, steps_planned=trainer.schedule.total_steps,
        val_accuracy=state.best_val_accuracy if has_val else None,
        best_val_accuracy=state.best_val_accuracy if has_val else None,
        best_epoch=state.best_epoch if has_val else state.epoch,
        final_val_accuracy=state.history[-1]["val_accuracy"] if state.history else None,
        test_accuracy=evaluation["test_accuracy"], test_loss=evaluation["test_loss"], test_split=data.test_split,
        train_seconds=state.train_seconds, budget_minutes=cfg.train.budget_minutes,
        budget={**plan.record(), **(trainer.pacer.record() if trainer.pacer else {})} if plan else None,
        planned_seconds=plan.planned_total_seconds if plan else None,
        seed=t.seed, train_images=len(data.train_labels), val_images=len(data.val_labels),
        test_images=len(data.test_labels), channels_last=execution.channels_last,
        precision_reason=execution.reason, cpu_capability=execution.cpu_capability,
        native_bf16=execution.native_bf16, tta=t.tta, world_size=distributed.world_size(),
        stop_reason=state.stop_reason, resumed=session.resuming, data_checksum=data.checksum,
        dataset=cfg.data.dataset, data_source=data.source, layout=data.layout, classes=list(data.classes),
        trainable=cfg.transfer.trainable if transfer.is_transfer(cfg) else "all", **notes)
    summary.actual_seconds = time.perf_counter() - session.wall_start  # the last thing measured
    return session.close(summary)
