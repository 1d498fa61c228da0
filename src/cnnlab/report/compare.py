"""`cnnlab compare RUN_DIR...`: one table and one plot over runs of any kind (CIFAR training, transfer,
features, fine-tuning), read from their run directories only; with ``--course`` the course's published
transfer figures sit beside them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from .. import runs
from ..errors import UserError
from . import plots
from .course import PUBLISHED_TRANSFER

# The course's published figures for its building dataset (Terrassa Buildings 900, validation accuracy).
COURSE = [("course: features + softmax", "features", PUBLISHED_TRANSFER["task2"]["features_softmax"]),
          ("course: fine-tuning", "finetune", PUBLISHED_TRANSFER["task3"]["finetune"]),
          ("course: fine-tuning + plateau + augmentation", "finetune",
           PUBLISHED_TRANSFER["task4"]["finetune_plateau_aug"])]


def _pct(value) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f} %"


def compare(run_dirs: Sequence[str | Path], out: str | Path, course: bool = False) -> str:
    """Write comparison.csv/.md/.png to `out`; return the Markdown table."""
    rows, curves = [], []
    for d in run_dirs:
        run = runs.RunDir(d)
        if not run.finished:
            raise UserError(f"{run} is not a finished cnnlab run (it has no {runs.SUMMARY}); pass finished runs")
        s = runs.read_summary(run)
        if not isinstance(s, runs.ClassifierSummary):
            raise UserError(f"{run} is a {s.kind} run; compare takes classifier runs (train, features, finetune, "
                            f"transfer)")
        rows.append({"run": run.path.name, "kind": s.kind, "model": s.model or "",
                     "data": Path(s.data_source or "").name or s.dataset or "cifar10",
                     "trainable": s.trainable or "all", "val_accuracy": s.best_val_accuracy,
                     "test_accuracy": s.test_accuracy, "epochs": s.epochs,
                     "minutes": (s.train_seconds or 0) / 60, "source": str(run.path)})
        curves.append((run.path.name, run.read_metrics()))
    if course:
        rows += [{"run": label, "kind": kind, "model": "ResNet-50 (course)", "data": "Terrassa Buildings 900",
                  "trainable": "", "val_accuracy": acc, "test_accuracy": None, "epochs": None, "minutes": None,
                  "source": "published"} for label, kind, acc in COURSE]
    target = runs.RunDir(out).create()
    target.write_csv("comparison.csv", rows)
    lines = ["| run | kind | model | data | trainable | best val acc | test acc | epochs | train min |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        minutes = "" if r["minutes"] is None else f"{r['minutes']:.1f}"
        lines.append(f"| {r['run']} | {r['kind']} | {r['model']} | {r['data']} | {r['trainable']} | "
                     f"{_pct(r['val_accuracy'])} | {_pct(r['test_accuracy'])} | {r['epochs'] or ''} | {minutes} |")
    table = "\n".join(lines)
    target.write_text("comparison.md", f"# Comparison\n\n{table}\n")
    plots.comparison(curves, target / "comparison.png", title="validation accuracy by epoch")
    return table
