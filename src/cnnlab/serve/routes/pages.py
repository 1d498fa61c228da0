"""What the app shows and only reads: the page, the runs list, each run's HTML report, result pictures and
the health check. GET routes only: nothing here changes state a browser could be tricked into changing."""

from __future__ import annotations

import functools
import re
import shutil
import uuid
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from ..deps import RunsDep, SettingsDep, StateDep
from ..jobs import PRESETS
from ..safety import file_inside, safe_run_dir
from ..state import ServeState

RESULT_NAME = re.compile(r"^[0-9a-f]{32}\.png$")

router = APIRouter()


@router.get("/healthz")
def healthz():
    return {"status": "ok"}


@functools.cache
def _templates():
    """Built on the first page, not at import: importing the app stays free of side effects."""
    import jinja2

    folder = Path(__file__).resolve().parents[1] / "templates"  # package data: pyproject.toml lists it
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), autoescape=True)


@router.get("/", response_class=HTMLResponse)
def page(settings: SettingsDep):
    return _templates().get_template("index.html.j2").render(
        runs=list_runs(settings.runs), default_model=settings.default_model,
        max_upload_mb=settings.max_upload_mb, presets=PRESETS)


@router.get("/api/runs")
def api_runs(runs: RunsDep):
    return {"runs": list_runs(runs)}


@router.get("/runs/{name}/report/{file:path}")
def report(name: str, file: str, state: StateDep):
    run = safe_run_dir(state.settings.runs, name)
    return FileResponse(file_inside(_fresh_report(state, name, run), file or "index.html"))


def _fresh_report(state: ServeState, name: str, run: Path) -> Path:
    """The run's report folder, written on the first request and again when its summary.json is newer.
    Written aside, then swapped in whole under the run's lock: a reader never sees half a report."""
    out = state.reports / name
    with state.report_lock(name):
        summary = run / "summary.json"
        stale = not (out / "index.html").is_file() or (
            summary.is_file() and summary.stat().st_mtime > (out / "index.html").stat().st_mtime)
        if stale:
            from ...report.html import write_report

            fresh = state.reports / f".{name}-{uuid.uuid4().hex}"
            write_report([run], fresh, title=f"cnnlab: {name}", show_paths=False)
            old = state.reports / f".{name}-old-{uuid.uuid4().hex}"
            if out.exists():
                out.rename(old)
            fresh.rename(out)
            shutil.rmtree(old, ignore_errors=True)
    return out


@router.get("/api/heatmaps/{name}")
def result(name: str, state: StateDep):
    """A heatmap or stylized picture this server made (by its random name)."""
    if not RESULT_NAME.match(name):
        raise HTTPException(404, "no such heatmap")
    return FileResponse(file_inside(state.results, name), media_type="image/png")


def list_runs(root: Path) -> list[dict]:
    """The run directories directly under `root`: name, kind and one key figure."""
    from ... import runs

    out = []
    if not root.is_dir():
        return out
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and (p / runs.SUMMARY).is_file()):
        s = runs.try_read_summary(folder)
        if s is None:  # damaged or of a newer cnnlab: not listed
            continue
        figure = ""
        for key, label in (("test_accuracy", "test"), ("best_val_accuracy", "val"), ("accuracy", "accuracy")):
            value = s.get(key)
            if isinstance(value, (int, float)):
                figure = f"{label} {100 * value:.2f} %"
                break
        out.append({"name": folder.name, "kind": s.kind, "figure": figure,
                    "style_network": s.kind == "style-network"})
    return out
