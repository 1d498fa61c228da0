"""What the app shows and only reads: the page, the runs list, each run's HTML report, result pictures, what
the server holds (/api/status) and the health check. GET routes only: nothing here changes state a browser
could be tricked into changing. /healthz is answered on the event loop itself, needing no worker thread, so
it answers at once however busy the workers are."""

from __future__ import annotations

import functools
import re
import shutil
import uuid
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from ..deps import StateDep
from ..jobs import PRESETS
from ..safety import file_inside, publishable_copy, safe_run_dir, scrub_page
from ..state import ServeState

RESULT_NAME = re.compile(r"^[0-9a-f]{32}\.png$")

router = APIRouter()


@router.get("/healthz")
async def healthz():
    return {"status": "ok"}


@router.get("/api/status")
async def status(state: StateDep):
    """Models in memory and whether a run is going (as Jupyter's /api/status tells its kernels)."""
    return state.status()


@functools.cache
def _templates():
    """Built on the first page, not at import: importing the app stays free of side effects."""
    import jinja2

    folder = Path(__file__).resolve().parents[1] / "templates"  # package data: pyproject.toml lists it
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), autoescape=True)


@router.get("/", response_class=HTMLResponse)
def page(state: StateDep):
    settings = state.settings
    return _templates().get_template("index.html.j2").render(
        runs=state.runs_index.rows(), default_model=settings.default_model,
        max_upload_mb=settings.max_upload_mb, presets=PRESETS)


@router.get("/api/runs")
def api_runs(state: StateDep):
    return {"runs": state.runs_index.rows()}


@router.get("/runs/{name}/report/{file:path}")
def report(name: str, file: str, state: StateDep):
    run = safe_run_dir(state.settings.runs, name)
    return FileResponse(file_inside(_fresh_report(state, name, run), file or "index.html"))


def _fresh_report(state: ServeState, name: str, run: Path) -> Path:
    """The run's report folder, written on the first request and again when its summary.json is newer.
    Written from a copy of the run that holds no links and no server paths (safety.publishable_copy), aside,
    then swapped in whole under the run's lock: a reader never sees half a report; a failed one leaves
    nothing."""
    out = state.reports / name
    with state.report_lock(name):
        summary = run / "summary.json"
        stale = not (out / "index.html").is_file() or (
            summary.is_file() and summary.stat().st_mtime > (out / "index.html").stat().st_mtime)
        if stale:
            from ...report.html import write_report

            work = state.reports / f".{name}-{uuid.uuid4().hex}"
            try:
                copy = publishable_copy(run, work / "runs" / name, state.settings)
                fresh = work / "report"
                scrub_page(write_report([copy], fresh, title=f"cnnlab: {name}", show_paths=False), state.settings)
                old = work / "old"
                if out.exists():
                    out.rename(old)
                fresh.rename(out)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return out


@router.get("/api/heatmaps/{name}")
def result(name: str, state: StateDep):
    """A heatmap or stylized picture this server made (by its random name)."""
    if not RESULT_NAME.match(name):
        raise HTTPException(404, "no such heatmap")
    return FileResponse(file_inside(state.results, name), media_type="image/png")
