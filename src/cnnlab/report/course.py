"""The course write-up's layout: its five tasks in order, the course's published figures beside cnnlab's.

A run is placed by what it is, read from its own files (summary.json, config.yaml), never by its folder name,
so runs made by hand, by `cnnlab ablate` or by `cnnlab course` land in the same rows:

- task 1, CIFAR-10: the 2-FC baseline and the 4-conv CNN grid (which row follows from the model, batch norm,
  dropout and augmentation of the config), the dropout study (its curves), the fast recipes (cnnlab's own rows,
  no published figure) and the visualizations of the network ("look inside");
- task 2, transfer to the building dataset: a new head on the frozen CIFAR model, ImageNet features + softmax;
- task 3, fine-tuning the last layers with a low learning rate;
- task 4, fine-tuning with reduce-on-plateau and augmentation (a fine-tuning run whose schedule is `plateau`
  and whose training images are augmented);
- task 5, style transfer: optimized images (and their content-weight study) and fast style networks (and
  their per-epoch evolution).

The published figures are the course's own (trained on a GPU, Keras, ResNet-50 for tasks 2-4); the course
chose its models on the test set, cnnlab on a validation split carved from the training data, and that
difference is stated wherever the two stand side by side. Task 1's figures are read from the packaged
`course-task1.yaml` (its `reference` fields), so they live in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TASKS = {
    "task1": "Task 1 · CIFAR-10: from a 2-FC baseline to a CNN with batch norm, dropout and augmentation",
    "task2": "Task 2 · Transfer to a building dataset: a new head on the CIFAR CNN, ImageNet features + softmax",
    "task3": "Task 3 · Fine-tuning the last layers with a low learning rate",
    "task4": "Task 4 · Fine-tuning with reduce-on-plateau and augmentation",
    "task5": "Task 5 · Neural style transfer: optimized images and fast style networks",
}
PROTOCOL = ("The course chose its models on the test set (task 1) and reported validation accuracy on its "
            "building dataset (tasks 2-4); cnnlab chooses on a validation split carved from the training data "
            "and touches the test set once, at the end of a run.")

# Rows of each task: key (as in course.json), label, the metric compared.
ROWS: dict[str, list[tuple[str, str, str]]] = {
    "task1": [("fc_100", "2-FC network, 100 epochs", "test_accuracy"),
              ("fc_200", "2-FC network, 200 epochs", "test_accuracy"),
              ("cnn", "4-conv CNN + dropout", "test_accuracy"),
              ("cnn_aug", "CNN + dropout + augmentation", "test_accuracy"),
              ("cnn_aggressive_dropout", "CNN + aggressive dropout + augmentation (dropout study)",
               "test_accuracy"),
              ("cnn_bn", "CNN + batch norm + augmentation", "test_accuracy"),
              ("cnn_bn_dropout_aug", "CNN + batch norm + dropout + augmentation", "test_accuracy"),
              ("fast_recipe", "cnnlab's fast recipe (fastnet; not in the course)", "test_accuracy")],
    "task2": [("cifar_head", "CIFAR CNN, frozen, new head", "val_accuracy"),
              ("features_softmax", "ImageNet features + softmax", "val_accuracy")],
    "task3": [("finetune", "fine-tuning, low learning rate", "val_accuracy")],
    "task4": [("finetune_plateau_aug", "fine-tuning + reduce-on-plateau + augmentation", "val_accuracy")],
    "task5": [("optimize", "optimized image (Gatys et al.): style loss at the last iteration", "style_loss"),
              ("style_network", "fast style network (Johnson et al.): training loss at the end", "final_loss")],
}
# The course's figures for tasks 2-4 (Terrassa Buildings 900, ResNet-50, validation accuracy).
PUBLISHED_TRANSFER = {"task2": {"features_softmax": 0.898}, "task3": {"finetune": 0.932},
                      "task4": {"finetune_plateau_aug": 0.928}}
# course-task1.yaml's run names, as task-1 keys.
TASK1_NAMES = {"fc-100": "fc_100", "fc-200": "fc_200", "cnn": "cnn", "cnn-aug": "cnn_aug",
               "cnn-aggressive-dropout": "cnn_aggressive_dropout", "cnn-bn": "cnn_bn",
               "cnn-bn-dropout-aug": "cnn_bn_dropout_aug"}


def _reference(text: Any) -> float | None:
    match = re.fullmatch(r"\s*([0-9.]+)\s*%\s*", str(text or ""))
    return float(match.group(1)) / 100 if match else None


def published() -> dict[str, dict[str, float | None]]:
    """{task: {key: the course's figure or None}} for every row (None: the course showed pictures only)."""
    import yaml

    from ..config import find_config

    grid = yaml.safe_load(find_config("course-task1").read_text())
    task1 = {TASK1_NAMES[r["name"]]: _reference(r.get("reference")) for r in grid.get("runs", [])
             if r.get("name") in TASK1_NAMES}
    figures = {task: {key: None for key, _, _ in rows} for task, rows in ROWS.items()}
    figures["task1"].update(task1)
    for task, values in PUBLISHED_TRANSFER.items():
        figures[task].update(values)
    return figures


def _augmented(augment: Any) -> bool:
    if not isinstance(augment, dict):
        return False
    return any(bool(augment.get(k)) for k in ("translate", "flip", "crop_scale", "color_jitter", "cutout"))


def _dropout(value: Any) -> list[float]:
    from ..models.classic import DROPOUT_PRESETS

    if isinstance(value, str):
        return list(DROPOUT_PRESETS.get(value, []))
    if isinstance(value, (int, float)):
        return [float(value)]
    return [float(v) for v in value or []]


def task1_key(config: dict[str, Any]) -> str | None:
    """Which course row a CIFAR-10 run's config is (None: a cnn4 variant the course did not train)."""
    model, data = config.get("model") or {}, config.get("data") or {}
    name = model.get("name")
    if name == "mlp":
        return "fc_100" if float((config.get("train") or {}).get("epochs", 100)) <= 150 else "fc_200"
    if name == "fastnet":
        return "fast_recipe"
    if name != "cnn4":
        return None
    bn, aug, dropout = bool(model.get("batchnorm")), _augmented(data.get("augment")), _dropout(model.get("dropout"))
    has_dropout = any(p > 0 for p in dropout)
    if bn:
        return ("cnn_bn_dropout_aug" if has_dropout else "cnn_bn") if aug else None
    if not has_dropout:
        return None
    if aug:
        return "cnn_aggressive_dropout" if max(dropout) > 0.5 else "cnn_aug"
    return "cnn"


# summary.json kinds the report shows alike: both style kinds in the style layout, visualizations with pictures
REPORT_KINDS = {"stylize": "style", "style-network": "style", "visualize": "visualization"}


def folder_kind(folder: Path, summary: Any) -> str:
    """What a folder the report is given holds: its summary's kind (runs.Summary.kind, the style kinds as
    "style"), an ablation grid, a visualization (its .json records), or plain pictures ("files", e.g. what
    `stylize apply` writes)."""
    if summary is not None:
        return REPORT_KINDS.get(summary.kind, summary.kind)
    if (folder / "comparison.csv").is_file():
        return "ablation"
    if any(p.suffix == ".json" for p in folder.iterdir()):
        return "visualization"
    return "files"


def place(kind: str, config: dict[str, Any], summary: dict[str, Any],
          folder: Path | None = None) -> tuple[str, str | None]:
    """(task, row key or None) of one run: None for a run shown in the task without a table row."""
    if kind == "visualization":
        return _visualized_task(folder), None
    if kind == "files":  # pictures only: stylized photos (`cnnlab stylize apply`)
        return "task5", None
    if kind == "style":
        return "task5", ("optimize" if summary.get("method") == "optimize" else "style_network")
    if kind == "transfer":
        return "task2", "cifar_head"
    if kind == "features":
        return "task2", "features_softmax"
    if kind == "finetune":
        plateau = (config.get("schedule") or {}).get("name") == "plateau"
        if plateau and _augmented((config.get("data") or {}).get("augment")):
            return "task4", "finetune_plateau_aug"
        return "task3", "finetune"
    if kind == "ablation":
        return "task1", None
    return "task1", task1_key(config)


def _visualized_task(folder: Path | None) -> str:
    """A visualization goes with the run it looks inside (its records name the network as "model (RUN_DIR)"):
    Grad-CAM of a fine-tuned building network is task 4's; CIFAR networks and ImageNet models are task 1's."""
    import json

    for record in sorted(folder.glob("*.json")) if folder else []:
        try:
            model = json.loads(record.read_text()).get("model", "")
        except (ValueError, AttributeError):
            continue
        match = re.search(r"\((.+)\)$", str(model))
        run = Path(match.group(1)) if match else None
        from .. import runs

        summary = runs.try_read_summary(run) if run is not None else None
        if summary is not None:
            task, _ = place(folder_kind(run, summary), read_config(run), summary)
            return task
        break
    return "task1"


def tasks_from_runs(folders: list[Path]) -> list[CourseTask]:
    """The five tasks from run directories read from disk (what course.json is made of)."""
    from .. import runs

    placed = []
    for folder in folders:
        summary = runs.try_read_summary(folder)
        kind = folder_kind(folder, summary)
        figures = summary.to_dict() if summary is not None else {}
        task, key = place(kind, read_config(folder), figures, folder)
        placed.append((task, key, folder.name, folder.name, figures))
    return layout(placed)


def figure_text(value: float | None, metric: str, *, short: bool = False) -> str:
    """A course figure as people read it: accuracies as percentages, losses as numbers, '—' where there is
    none (`short`: one digit fewer, for the one-line summaries printed at the end of `cnnlab course`)."""
    if value is None:
        return "—"
    if metric.endswith("accuracy"):
        return f"{100 * value:.{1 if short else 2}f} %"
    return f"{value:.{3 if short else 4}g}"


def one_line(task: CourseTask) -> str:
    """A task's figures in one line: cnnlab's (and the course's) per filled row."""
    parts = []
    for row in task.rows:
        for name, _, value, _ in row.runs[-1:]:
            ours = figure_text(value, row.metric, short=True)
            theirs = "" if row.published is None else f" (course {figure_text(row.published, row.metric, short=True)})"
            parts.append(f"{row.key} {ours}{theirs}")
    return "; ".join(parts) or f"{len(task.anchors)} run(s), pictures only"


def measured(key: str, metric: str, summary: dict[str, Any]) -> float | None:
    """The figure a run gives for its row (val accuracy: the best epoch's, the one whose weights are kept)."""
    if metric == "val_accuracy":
        value = summary.get("best_val_accuracy", summary.get("val_accuracy"))
    elif key == "optimize":
        value = (summary.get("final") or {}).get("style_loss")
    else:
        value = summary.get(metric)
    return float(value) if isinstance(value, (int, float)) else None


@dataclass
class CourseRow:
    """One line of a task's table: the course's figure and cnnlab's, linked to the run that made it."""

    key: str
    label: str
    metric: str
    published: float | None
    runs: list[tuple[str, str, float | None, str]] = field(default_factory=list)  # (run, anchor, value, note)
    tests: dict[str, float | None] = field(default_factory=dict)
    """Each run's test accuracy (rows compared on validation: tasks 2-4), measured once on photos no choice saw."""

    @property
    def shows_test(self) -> bool:
        return self.metric == "val_accuracy"


@dataclass
class CourseTask:
    task: str
    title: str
    rows: list[CourseRow]
    anchors: list[str] = field(default_factory=list)  # every run of the task, in report order
    curves: str | None = None  # overlaid validation curves of the task's classifier runs


def layout(placed: list[tuple[str, str | None, str, str, dict[str, Any]]]) -> list[CourseTask]:
    """The five tasks from placed runs: (task, key, run name, anchor, summary) each."""
    figures = published()
    tasks = []
    for task, title in TASKS.items():
        rows = [CourseRow(key, label, metric, figures[task].get(key)) for key, label, metric in ROWS[task]]
        by_key = {row.key: row for row in rows}
        anchors = []
        for t, key, name, anchor, summary in placed:
            if t != task:
                continue
            anchors.append(anchor)
            if key in by_key:
                row = by_key[key]
                row.runs.append((name, anchor, measured(key, row.metric, summary), _note(summary)))
                if row.shows_test:
                    value = summary.get("test_accuracy")
                    row.tests[name] = float(value) if isinstance(value, (int, float)) else None
        tasks.append(CourseTask(task, title, rows, anchors))
    return tasks


def _note(summary: dict[str, Any]) -> str:
    """Budget, hardware and precision of a run, as the course table shows them beside its figure."""
    parts = []
    if summary.get("budget_minutes"):
        parts.append(f"budget {float(summary['budget_minutes']):g} min")
    if summary.get("epochs") is not None and summary.get("method") is None:
        parts.append(f"{summary['epochs']} epochs")
    device = str(summary.get("device") or "")
    parts.append(device if device.startswith("cuda") else str(summary.get("cpu_class") or device or ""))
    if summary.get("precision"):
        parts.append(str(summary["precision"]))
    return ", ".join(p for p in parts if p)


def figures_json(tasks: list[CourseTask]) -> dict[str, dict[str, dict[str, Any]]]:
    """course.json's shape: {task: {key: {metric: cnnlab's value, "published": ..., "run": ...}}} for every
    row a run filled (the last run of a row when several did)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task in tasks:
        out[task.task] = {}
        for row in task.rows:
            if row.runs:
                name, _, value, note = row.runs[-1]
                out[task.task][row.key] = {row.metric: value, "published": row.published, "run": name,
                                           "conditions": note}
                if row.shows_test:  # the course reported its best validation epoch; cnnlab adds a test split
                    out[task.task][row.key]["test_accuracy"] = row.tests.get(name)
                    out[task.task][row.key]["published_is"] = "the course's best validation epoch"
    return out


def read_config(folder: Path) -> dict[str, Any]:
    """A run's config.yaml (safe YAML), or {} when it has none or it cannot be read."""
    import yaml

    path = folder / "config.yaml"
    if not path.is_file() or path.is_symlink():
        return {}
    try:
        data = yaml.safe_load(path.read_text(errors="replace"))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}
