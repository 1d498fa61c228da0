"""`cnnlab report RUN_DIR... -o OUT_DIR`: a self-contained static HTML report of any cnnlab runs.

Every run directory is read as it is (nothing is recomputed): classifier runs (CIFAR training, transfer,
features, fine-tuning) give their summary, config, curves and confusion matrix; ablation folders their
comparison table and plot, and each of their runs; style runs (optimize, style networks) their images and
evolution; visualization folders their grids and heatmaps. Several classifier runs also get one comparison
table and one plot of overlaid validation curves.

OUT_DIR/index.html references only files inside OUT_DIR (pictures are copied to OUT_DIR/assets/): it opens
offline, from a USB stick, with no CDN and no remote font. Templates are Jinja2 (report/templates/), with
autoescaping, so a run name or config value cannot inject markup.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import runs
from ..errors import UserError
from .course import figure_text, folder_kind

TEMPLATES = Path(__file__).resolve().parent / "templates"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp")
# Pictures shown first, in this order, when a run has them; any other picture follows by name.
KNOWN_PICTURES = ["curves.png", "confusion_matrix.png", "comparison.png", "stylized.png", "evolution.png",
                  "content-weights.png"]


@dataclass
class RunView:
    """What the report shows of one run directory."""

    name: str
    anchor: str
    kind: str
    path: str
    metrics: list[tuple[str, str]] = field(default_factory=list)
    pictures: list[tuple[str, str]] = field(default_factory=list)  # (caption, path relative to OUT_DIR)
    config: str = ""
    table: dict[str, Any] | None = None  # an ablation's comparison: {"headers": [...], "rows": [[...]]}
    children: list[str] = field(default_factory=list)
    folder: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{100 * float(value):.2f} %"


def _slug(text: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "run"
    slug, i = base, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    taken.add(slug)
    return slug


def _copy_pictures(folder: Path, out: Path, anchor: str) -> list[tuple[str, str]]:
    """Copy the run's pictures into OUT/assets/<anchor>/ (known ones first); (caption, relative path)."""
    # Symlinks are skipped: a link inside a run folder could otherwise copy (and serve) a file from anywhere.
    found = sorted(p for p in folder.iterdir()
                   if p.is_file() and not p.is_symlink() and p.suffix.lower() in IMAGE_SUFFIXES)
    order = {name: i for i, name in enumerate(KNOWN_PICTURES)}
    found.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    target = out / "assets" / anchor
    pictures = []
    for picture in found:
        target.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_bytes(target / picture.name, picture.read_bytes())  # never half a picture
        pictures.append((picture.stem.replace("_", " ").replace("-", " "), f"assets/{anchor}/{picture.name}"))
    return pictures


def _minutes(seconds: Any) -> str:
    return f"{seconds / 60:.2f}" if isinstance(seconds, (int, float)) else ""


def _number(value: Any, digits: int = 4) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "?"


def _classifier_metrics(s: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("kind", s.get("kind", "train")), ("model", s.get("model", "")),
            ("test accuracy", _pct(s.get("test_accuracy"))), ("best val accuracy", _pct(s.get("best_val_accuracy"))),
            ("epochs", str(s.get("epochs", ""))), ("training minutes", _minutes(s.get("train_seconds"))),
            ("precision", str(s.get("precision", ""))), ("CPU class", str(s.get("cpu_class", ""))),
            ("device", str(s.get("device", ""))), ("seed", str(s.get("seed", ""))),
            ("parameters", f"{s['params']:,}" if isinstance(s.get("params"), int) else "")]
    return [(k, v) for k, v in rows if v not in ("", "None")]


def _style_metrics(s: dict[str, Any]) -> list[tuple[str, str]]:
    if s.get("method") == "optimize":
        i, f = s.get("initial") or {}, s.get("final") or {}
        return [("method", "optimize (Gatys et al.)"), ("loss network", s.get("loss_net", {}).get("name", "")),
                ("content loss", f"{_number(i.get('content_loss'))} → {_number(f.get('content_loss'))}"),
                ("style loss", f"{_number(i.get('style_loss'))} → {_number(f.get('style_loss'))}"),
                ("seconds", _number(s.get("seconds"), 1)), ("precision", str(s.get("precision", ""))),
                ("CPU class", str(s.get("cpu_class", "")))]
    return [("method", "fast style network (Johnson et al.)"), ("style", Path(str(s.get("style", ""))).name),
            ("loss network", str(s.get("loss_net", ""))), ("steps", str(s.get("steps", ""))),
            ("loss", f"{_number(s.get('first_epoch_loss'))} → {_number(s.get('final_loss'))}"),
            ("training minutes", _minutes(s.get("train_seconds"))), ("CPU class", str(s.get("cpu_class", "")))]


def _read_comparison(folder: Path) -> dict[str, Any] | None:
    import csv

    path = folder / "comparison.csv"
    if not path.is_file():
        return None
    with path.open(newline="") as fh:
        rows = list(csv.reader(fh))
    return {"headers": rows[0], "rows": rows[1:]} if rows else None


def describe(folder: Path, out: Path, taken: set[str], views: list[RunView], parent: RunView | None = None,
             show_paths: bool = True) -> None:
    """Append the views of `folder` (and, for an ablation folder, of its runs) to `views`."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder; pass cnnlab run directories")
    anchor = _slug(folder.name if parent is None else f"{parent.anchor}-{folder.name}", taken)
    typed = runs.read_summary(folder) if (folder / runs.SUMMARY).is_file() else None
    summary = typed.to_dict() if typed is not None else None
    view = RunView(folder.name, anchor, "files", str(folder.resolve()) if show_paths else "", folder=folder,
                   summary=summary or {})
    view.kind = folder_kind(folder, typed)
    if view.kind == "style":
        view.metrics = _style_metrics(summary)
    elif isinstance(typed, runs.ClassifierSummary):
        view.metrics = _classifier_metrics(summary)
    config, settings = folder / runs.CONFIG, folder / "style.json"
    if config.is_file() and not config.is_symlink():
        view.config = config.read_text(errors="replace")
    elif settings.is_file() and not settings.is_symlink():
        try:
            view.config = json.dumps(json.loads(settings.read_text()), indent=2)
        except ValueError:
            view.config = "(style.json is damaged)"
    view.table = _read_comparison(folder)
    view.pictures = _copy_pictures(folder, out, anchor)
    if view.kind == "files" and not view.pictures:
        raise UserError(f"{folder} holds no cnnlab run (no {runs.SUMMARY}, comparison.csv or pictures); pass run "
                        f"directories written by cnnlab")
    views.append(view)
    if view.kind == "ablation":
        for child in sorted(p for p in folder.iterdir()
                            if p.is_dir() and not p.is_symlink() and (p / runs.SUMMARY).is_file()):
            before = len(views)
            describe(child, out, taken, views, parent=view, show_paths=show_paths)
            view.children += [v.anchor for v in views[before:]]


def _comparison(views: list[RunView], folders: list[Path], out: Path) -> dict[str, Any] | None:
    """One table and overlaid validation curves over the classifier runs, when there are two or more."""
    from . import plots

    classifiers = [(v, f) for v, f in zip(views, folders) if v.kind in ("train", "transfer", "features", "finetune")]
    if len(classifiers) < 2:
        return None
    curves, rows = [], []
    for view, folder in classifiers:
        run = runs.RunDir(folder)
        s = runs.read_summary(run)
        curves.append((view.name, run.read_metrics()))
        rows.append([view.name, view.anchor, s.kind, s.model or "", _pct(s.best_val_accuracy),
                     _pct(s.test_accuracy), _minutes(s.train_seconds)])
    (out / "assets").mkdir(parents=True, exist_ok=True)
    plots.comparison(curves, out / "assets" / "comparison-curves.png", title="validation accuracy by epoch")
    return {"rows": rows, "picture": "assets/comparison-curves.png"}


def _course_layout(views: list[RunView], out: Path) -> tuple[list[RunView], list[Any]]:
    """The views in the course's task order, and the five task sections (tables, curves): report.course."""
    from . import course, plots

    placed = []
    for view in views:
        task, key = course.place(view.kind, course.read_config(view.folder) if view.folder else {}, view.summary,
                                 view.folder)
        placed.append((task, key, view.name, view.anchor, view))
    tasks = course.layout([(t, k, name, anchor, v.summary) for t, k, name, anchor, v in placed])
    by_anchor = {v.anchor: v for v in views}
    for task in tasks:
        curves = [(by_anchor[a].name, runs.RunDir(by_anchor[a].folder).read_metrics()) for a in task.anchors
                  if by_anchor[a].kind in ("train", "transfer", "features", "finetune")]
        if len(curves) >= 1 and any(history for _, history in curves):
            (out / "assets").mkdir(parents=True, exist_ok=True)
            picture = out / "assets" / f"course-{task.task}-curves.png"
            plots.comparison(curves, picture, title=f"{task.task}: validation accuracy by epoch")
            task.curves = f"assets/{picture.name}"
    ordered = [by_anchor[a] for task in tasks for a in task.anchors]
    return ordered, tasks


def write_report(run_dirs: Sequence[str | Path], out: str | Path, title: str = "cnnlab report",
                 show_paths: bool = True, course: bool = False) -> Path:
    """Write OUT/index.html (and OUT/assets/) for the runs; return the index's path. `show_paths`: print each
    run's folder (the web app turns it off: no server paths in pages). `course`: lay it out as the course's
    write-up (its five tasks in order, its published figures beside cnnlab's; report.course)."""
    import jinja2

    from . import course as course_layout

    if not run_dirs:
        raise UserError("give at least one run directory")
    target = runs.RunDir(out).create().path
    folders = [Path(d) for d in run_dirs]
    views: list[RunView] = []
    taken: set[str] = set()
    tops = []
    for folder in folders:
        if not folder.exists():
            raise UserError(f"run directory {folder} does not exist; check the path")
        tops.append(len(views))
        describe(folder, target, taken, views, show_paths=show_paths)
    top_views = [views[i] for i in tops]
    tasks: list[Any] = []
    if course:
        views, tasks = _course_layout(views, target)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["figure"] = figure_text
    html = env.get_template("report.html.j2").render(
        title=title, generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), views=views,
        tops=top_views, comparison=None if course else _comparison(top_views, folders, target),
        tasks=tasks, protocol=course_layout.PROTOCOL)
    index = target / "index.html"
    runs.atomic_write_bytes(index, html.encode())
    return index
