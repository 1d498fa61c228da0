"""Ablation grids: run a list or product of configs one after another and compare them.

A grid file holds a ``base`` config and the variations, as an explicit list (``runs``), a cartesian
product (``grid``), or both (each listed run crossed with the product):

    name: course-task1
    base: {model: {name: cnn4}, optim: {name: rmsprop, lr: 0.001}}   # or a config file: base: fast94.yaml
    common: {data.val_size: 5000, train.final_test: false}           # optional: dotted keys set in every run
    runs:
      - name: cnn-bn
        set: {model.batchnorm: true}
        reference: "87 %"          # optional: a published figure shown beside ours
    grid:
      train.seed: [0, 1]

Each run gets its own run directory under the grid's output folder. Finished runs are skipped and
interrupted ones resumed, so the command can be stopped and started again. After every run the
comparison (``comparison.csv``, ``comparison.md``, ``comparison.png``) is rewritten.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config as config_mod
from . import runs
from .classify import check_names, train
from .config import Config
from .engine import TrainingDiverged
from .errors import UserError
from .report import plots

GRID_KEYS = {"name", "description", "base", "common", "runs", "grid"}


@dataclass
class PlannedRun:
    name: str
    config: Config
    reference: str = ""
    settings: dict[str, Any] = field(default_factory=dict)


def _nested(overrides: dict[str, Any]) -> dict[str, Any]:
    return config_mod.apply_overrides({}, config_mod.flatten(overrides))


def _base(base: Any, grid_file: Path) -> dict[str, Any]:
    """The grid's base config: a mapping, or the path of a config file (relative to the grid file or cwd)."""
    if base is None:
        return {}
    if isinstance(base, str):
        candidates = [grid_file.parent / base, Path(base)]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise UserError(f"base config '{base}' of grid file {grid_file} does not exist; give a path relative "
                            f"to the grid file or the current folder")
        return config_mod.load_yaml(found)
    if not isinstance(base, dict):
        raise UserError(f"'base' in grid file {grid_file} must be a config mapping or a config file path")
    return base


def plan(grid_file: str | Path, out: str | Path | None = None, *, max_epochs: float | None = None,
         max_minutes: float | None = None, minutes: float | None = None,
         overrides: dict[str, Any] | None = None) -> tuple[str, Path, list[PlannedRun]]:
    """(grid name, output folder, runs) with budgets and common overrides applied to every run.

    minutes: each run fits this time budget with its recipe stretched to it (annealed, train.budget_minutes);
    max_minutes: each run is cut after this much training (train.max_train_minutes, not annealed).
    """
    spec = config_mod.load_yaml(grid_file)
    unknown = set(spec) - GRID_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise UserError(f"unknown key '{key}' in grid file {grid_file}{config_mod.did_you_mean(key, GRID_KEYS)}; "
                        f"a grid file has {', '.join(sorted(GRID_KEYS))}")
    name = str(spec.get("name") or Path(grid_file).stem)
    out_dir = Path(out or Path("runs") / f"ablate-{name}")
    listed = spec.get("runs") or [{"name": "base"}]
    if not isinstance(listed, list):
        raise UserError(f"'runs' in grid file {grid_file} must be a list of {{name, set, reference}} entries")
    common = spec.get("common") or {}
    if not isinstance(common, dict):
        raise UserError(f"'common' in grid file {grid_file} must map dotted keys to values")
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(v, list) for v in grid.values()):
        raise UserError(f"'grid' in grid file {grid_file} must map dotted keys to lists of values")
    planned: list[PlannedRun] = []
    for i, item in enumerate(listed):
        if not isinstance(item, dict) or set(item) - {"name", "set", "reference"}:
            raise UserError(f"run {i + 1} in grid file {grid_file} must be a mapping with name, set, reference")
        for combo in itertools.product(*grid.values()) if grid else [()]:
            settings = {**config_mod.flatten(common), **config_mod.flatten(item.get("set") or {})}
            settings.update(dict(zip(grid.keys(), combo)))
            suffix = "-".join(f"{k.split('.')[-1]}={v}" for k, v in zip(grid.keys(), combo))
            run_name = "-".join(p for p in (str(item.get("name", f"run{i + 1}")), suffix) if p)
            data = config_mod.merge(_base(spec.get("base"), Path(grid_file)), _nested(settings))
            data = config_mod.apply_overrides(data, overrides or {})
            try:
                cfg = config_mod.resolve(base=data)
                check_names(cfg)
            except UserError as exc:
                raise UserError(f"grid file {grid_file}, run '{run_name}': {exc}") from None
            if max_epochs is not None:
                cfg.train.epochs = min(cfg.train.epochs, max_epochs)
            if max_minutes is not None:
                cfg.train.max_train_minutes = max_minutes
            if minutes is not None:
                cfg.train.budget_minutes = minutes
            cfg.name, cfg.out = run_name, str(out_dir / run_name)
            planned.append(PlannedRun(run_name, cfg, str(item.get("reference", "")), settings))
    names = [p.name for p in planned]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"grid file {grid_file} names run '{dupes[0]}' twice; give each run its own name")
    return name, out_dir, planned


def ablate(grid_file: str | Path, out: str | Path | None = None, *, max_epochs: float | None = None,
           max_minutes: float | None = None, minutes: float | None = None, only: list[str] | None = None,
           overrides: dict[str, Any] | None = None, workers: int = 1) -> Path:
    """Run (or continue) every run of the grid, then write the comparison; returns the output folder.
    `workers` > 1: that many runs at once, each in its own process (see run_parallel)."""
    started = time.perf_counter()
    name, out_dir, planned = plan(grid_file, out, max_epochs=max_epochs, max_minutes=max_minutes,
                                  minutes=minutes, overrides=overrides)
    if only:
        missing = [o for o in only if o not in {p.name for p in planned}]
        if missing:
            raise UserError(f"--only names unknown run '{missing[0]}'"
                            f"{config_mod.did_you_mean(missing[0], [p.name for p in planned])}")
        selected = [p for p in planned if p.name in only]
    else:
        selected = planned
    runs.RunDir(out_dir).create()
    failures: dict[str, str] = {}
    _check_finished_configs(selected)
    if workers > 1:
        failures = run_parallel(selected, out_dir, workers)
        write_comparison(name, out_dir, planned, failures)
        _write_summary(name, grid_file, out_dir, planned, started)
        return out_dir
    for i, item in enumerate(selected, 1):
        run = runs.RunDir(item.config.out)
        if run.finished:
            print(f"[{i}/{len(selected)}] {item.name}: finished, skipped", flush=True)
            continue
        resume = run.path if run.exists(runs.CHECKPOINT) else None
        print(f"[{i}/{len(selected)}] {item.name}: {'resuming' if resume else 'training'}", flush=True)
        try:
            train(item.config, resume=resume)
        except TrainingDiverged as exc:
            failures[item.name] = str(exc)
            print(f"[{i}/{len(selected)}] {item.name}: {exc}", flush=True)
        write_comparison(name, out_dir, planned, failures)
    write_comparison(name, out_dir, planned, failures)
    _write_summary(name, grid_file, out_dir, planned, started)
    return out_dir


def _write_summary(name: str, grid_file: str | Path, out_dir: Path, planned: list[PlannedRun],
                   started: float) -> None:
    """summary.json of kind `ablation`: the grid, its runs, how many have finished, where the table is."""
    import torch

    finished = sum(runs.RunDir(p.config.out).finished for p in planned)
    runs.write_summary(out_dir, runs.AblationSummary(
        kind="ablation", name=name, grid=str(grid_file), runs=[p.name for p in planned], finished=finished,
        comparison=str(Path(out_dir) / "comparison.csv"), git_commit=runs.git_commit(),
        torch_version=torch.__version__, total_seconds=time.perf_counter() - started))


def _check_finished_configs(selected: list[PlannedRun]) -> None:
    """Before any run starts: a finished run under this grid's --out must have been made by the same config,
    or skipping it would put another experiment's figures in this grid's table."""
    for item in selected:
        run = runs.RunDir(item.config.out)
        if run.finished:
            diff = config_mod.differences(config_mod.resolve(run / runs.CONFIG), item.config)
            if diff:
                raise UserError(f"{run} was finished with another config ({diff[0]}); use another --out for "
                                f"this grid, or delete that run")


def worker_slots(workers: int) -> list[dict[str, str]]:
    """Environment of each worker: its share of the CPU cores (threads), or one GPU each when there are GPUs
    (CUDA_VISIBLE_DEVICES), so that parallel runs never oversubscribe the machine."""
    import os

    import torch

    if workers < 1:
        raise UserError(f"--workers must be 1 or more, got {workers}")
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if workers > gpus:
            raise UserError(f"--workers {workers} but this machine has {gpus} GPU(s); give at most one worker "
                            f"per GPU")
        return [{"CUDA_VISIBLE_DEVICES": str(i), "train.threads": "1"} for i in range(workers)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers > cores:
        raise UserError(f"--workers {workers} but this machine has {cores} cores; give at most one worker per "
                        f"core (more would oversubscribe it and every run would be slower)")
    return [{"train.threads": str(cores // workers)} for _ in range(workers)]


def run_parallel(selected: list[PlannedRun], out_dir: Path, workers: int) -> dict[str, str]:
    """Each unfinished run as its own `cnnlab train` process, `workers` at a time, each with its share of the
    cores or its own GPU; finished runs skipped, interrupted ones resumed, as in a serial grid. A run's
    output goes to its train.log. Returns {run: error line} for the runs that failed."""
    import os
    import queue
    import subprocess
    import sys
    import threading

    slots: queue.Queue = queue.Queue()
    for slot in worker_slots(workers):
        slots.put(slot)
    failures: dict[str, str] = {}
    lock = threading.Lock()
    todo = [item for item in selected if not runs.RunDir(item.config.out).finished]
    for item in selected:
        if item not in todo:
            print(f"{item.name}: finished, skipped", flush=True)
    configs = runs.RunDir(out_dir / ".configs").create()

    def one(item: PlannedRun) -> None:
        slot = slots.get()
        try:
            run = runs.RunDir(item.config.out).create()
            config_file = configs.write_text(f"{item.name}.yaml", item.config.to_yaml())
            resume = ["--resume", str(run.path)] if run.exists(runs.CHECKPOINT) else []
            cmd = [sys.executable, "-m", "cnnlab", "train", "--config", str(config_file), "--out", str(run.path),
                   *resume, f"train.threads={slot['train.threads']}"]
            env = {**os.environ, **{k: v for k, v in slot.items() if k.isupper()},
                   "OMP_NUM_THREADS": slot["train.threads"]}
            with lock:
                print(f"{item.name}: {'resuming' if resume else 'training'} ({', '.join(f'{k}={v}' for k, v in slot.items())})",
                      flush=True)
            with open(run.path / "train.log", "ab") as log:
                code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
            if code != 0:
                lines = (run.path / "train.log").read_text(errors="replace").strip().splitlines()
                with lock:
                    failures[item.name] = lines[-1] if lines else f"exit code {code}"
            with lock:
                print(f"{item.name}: {'done' if code == 0 else 'failed: ' + failures[item.name]}", flush=True)
        finally:
            slots.put(slot)

    threads = [threading.Thread(target=one, args=(item,)) for item in todo]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failures


def _differing_keys(planned: list[PlannedRun]) -> list[str]:
    flat = [config_mod.flatten(p.config.to_dict()) for p in planned]
    keys = sorted(set().union(*flat)) if flat else []
    return [k for k in keys if k not in ("name", "out") and len({repr(f.get(k)) for f in flat}) > 1]


def _pct(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f} %"


def write_comparison(name: str, out_dir: Path, planned: list[PlannedRun], failures: dict[str, str]) -> None:
    """comparison.csv / .md / .png over the runs that have results so far.

    Runs are ranked by best validation accuracy (the test set never chooses); the test column is filled
    only for runs that evaluated on it (train.final_test).
    """
    keys = _differing_keys(planned)
    rows, curves = [], []
    for p in planned:
        run = runs.RunDir(p.config.out)
        summary = runs.read_summary(run) if run.finished else None
        history = run.read_metrics()
        flat = config_mod.flatten(p.config.to_dict())
        status = "finished" if summary else ("diverged" if p.name in failures else
                                             ("partial" if history else "not run"))
        rows.append({
            "run": p.name,
            "settings": ", ".join(f"{k}={flat[k]}" for k in keys if k in flat),
            "best_val_accuracy": summary.best_val_accuracy if summary else None,
            "val_rank": None,
            "test_accuracy": summary.test_accuracy if summary else None,
            "epochs": summary.epochs if summary else (len(history) or None),
            "minutes": (summary.train_seconds / 60) if summary and summary.train_seconds is not None else None,
            "reference": p.reference,
            "status": status,
        })
        if history:
            curves.append((p.name, history))
    ranked = sorted((r for r in rows if r["best_val_accuracy"] is not None), key=lambda r: -r["best_val_accuracy"])
    for i, r in enumerate(ranked, 1):
        r["val_rank"] = i
    target = runs.RunDir(out_dir)
    target.write_csv("comparison.csv", rows)
    lines = [f"# {name}", "", "Ranked by validation accuracy (rank 1 = best); the test set is not used to choose.",
             "", "| run | settings that differ | best val acc | val rank | test acc | epochs | minutes | "
             "reference | status |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        minutes = "" if r["minutes"] is None else f"{r['minutes']:.1f}"
        lines.append(f"| {r['run']} | {r['settings']} | {_pct(r['best_val_accuracy'])} | {r['val_rank'] or ''} | "
                     f"{_pct(r['test_accuracy'])} | {r['epochs'] or ''} | {minutes} | {r['reference']} | "
                     f"{r['status']} |")
    target.write_text("comparison.md", "\n".join(lines) + "\n")
    if curves:
        plots.comparison(curves, out_dir / "comparison.png", title=f"{name}: validation accuracy")
