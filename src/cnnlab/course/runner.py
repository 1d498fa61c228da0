"""`cnnlab course`: the plan run step by step, resumable, ending in course.json and the `--course` report.

Each step is a `cnnlab` process of its own (the very command the plan prints), so a crash or a kill of one
step cannot damage the others, and every run directory is what that command makes by hand. The course
folder keeps `course-state.json` (the arguments and the finished steps, written atomically after each):
started again with the same arguments, finished steps are skipped, a killed training run is resumed from its
last checkpoint, and a killed step that cannot resume (a visualization, an optimized image) starts again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from .. import runs
from ..errors import UserError
from . import plan as plan_mod

STATE = "course-state.json"
FIGURES = "course.json"


def _die_with_parent() -> None:
    """Linux: a step dies with `cnnlab course` (killed or not), so a restarted course never races an orphan."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _arguments(settings: plan_mod.CourseSettings) -> dict:
    return {k: v for k, v in asdict(settings).items() if k != "out"}


def _load_state(folder: runs.RunDir, settings: plan_mod.CourseSettings) -> dict:
    if not folder.exists(STATE):
        return {"arguments": _arguments(settings), "finished": []}
    state = folder.read_json(STATE)
    if state.get("arguments") != _arguments(settings):
        changed = sorted(k for k, v in _arguments(settings).items() if state.get("arguments", {}).get(k) != v)
        raise UserError(f"{folder} holds a course started with other arguments ({', '.join(changed)}); run it "
                        f"again with the same ones to continue, or choose another --out")
    return state


def _started(run_dir: Path) -> bool:
    return (run_dir / runs.CONFIG).is_file() or (run_dir / "style.json").is_file()


def run_step(step: plan_mod.Step, run_dir: Path) -> None:
    """The step's command (or its resume command), as a `cnnlab` process; its output goes to the terminal."""
    resuming = step.resume is not None and _started(run_dir)
    if not resuming and run_dir.exists():
        shutil.rmtree(run_dir)  # a half-made step that cannot resume: made again from the start
    argv = step.resume if resuming else step.command()
    print(f"\n== {step.name} ({step.reproduces}){' - resuming' if resuming else ''}\n$ cnnlab "
          + " ".join(argv), flush=True)
    for source, target in step.copies:  # the step's inputs, gathered in one folder (stylize apply reads one)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        runs.atomic_write_bytes(Path(target), Path(source).read_bytes())
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    code = subprocess.run([sys.executable, "-m", "cnnlab", *argv], preexec_fn=preexec).returncode
    if code != 0:
        raise UserError(f"step {step.name} failed (exit code {code}, its message is above); fix it and run the same "
                        f"command again: finished steps are skipped")


def run_course(settings: plan_mod.CourseSettings) -> dict:
    """Run (or continue) the course; return course.json's content."""
    started = time.monotonic()
    steps, inputs = plan_mod.build(settings)  # every input checked: nothing runs on bad input
    print(plan_mod.describe(steps, settings, inputs), flush=True)
    folder = runs.RunDir(settings.out).create()
    state = _load_state(folder, settings)
    configs = runs.RunDir(Path(settings.out) / "configs").create()
    for step in steps:
        if step.config_yaml:
            configs.write_text(f"{step.name}.yaml", step.config_yaml)
    earlier = state.get("seconds", 0.0)  # the finished steps' time in earlier invocations
    for step in steps:
        if step.name in state["finished"]:
            print(f"== {step.name}: finished, skipped", flush=True)
            continue
        if step.budgeted and not settings.full:
            # The minutes really left, shared again: earlier steps' unused minutes go to every step still to
            # come (the last ones too), an overrun is taken from them (plan.share).
            used = (earlier + time.monotonic() - started) / 60
            plan_mod.share(steps, settings.minutes - used, state["finished"])
        began = time.monotonic()
        run_step(step, Path(settings.out) / "runs" / step.name)
        state["finished"].append(step.name)
        state["seconds"] = state.get("seconds", 0.0) + time.monotonic() - began  # over every invocation
        folder.write_json(STATE, state)
    # The steps' time over every invocation (a resumed course counts the earlier ones too), or this one's.
    return finish(settings, steps, inputs, max(state.get("seconds", 0.0), time.monotonic() - started))


def finish(settings: plan_mod.CourseSettings, steps: list[plan_mod.Step], inputs: dict, seconds: float) -> dict:
    """course.json, the --course report, and the closing lines."""
    from ..report import course
    from ..report.html import write_report

    run_dirs = [Path(settings.out) / "runs" / s.name for s in steps]
    run_dirs = [d for d in run_dirs if d.is_dir()]
    tasks = course.tasks_from_runs(run_dirs)
    figures = course.figures_json(tasks)
    budgets = {s.name: round(s.minutes, 2) for s in steps} if not settings.full else {}
    for task in tasks:
        for row in figures[task.task].values():
            row["budget_minutes"] = budgets.get(row["run"])
    figures["data"] = {"building_dataset": str(inputs["terrassa"]), "layout": inputs["layout"],
                       "stands_in_for_terrassa": bool(inputs["stand_in"]), "images": inputs["images"]}
    figures["run"] = {"minutes": settings.minutes, "full": settings.full, "seconds": round(seconds, 1),
                      "protocol": course.PROTOCOL}
    folder = runs.RunDir(settings.out)
    folder.write_json(FIGURES, figures)
    index = write_report(run_dirs, Path(settings.out) / "report", course=True,
                         title="cnnlab course: the five tasks of the course, reproduced")
    _write_summary(folder, settings, steps, index, seconds)
    print(f"\nreport: {index}\nfigures: {Path(settings.out) / FIGURES}\ntotal time: {seconds / 60:.1f} minutes")
    for task in tasks:
        print(f"{task.task}: {course.one_line(task)}")
    return figures


def _write_summary(folder: runs.RunDir, settings: plan_mod.CourseSettings, steps: list[plan_mod.Step],
                   report: Path, seconds: float) -> None:
    """summary.json of kind `course`: the plan's steps and where its figures and report are."""
    import torch

    runs.write_summary(folder, runs.CourseSummary(
        kind="course", name=folder.path.name, minutes=settings.minutes, full=settings.full,
        steps=[s.name for s in steps], figures=str(folder / FIGURES), report=str(report),
        git_commit=runs.git_commit(), torch_version=torch.__version__, total_seconds=seconds))


def load_figures(out: str | Path) -> dict:
    return json.loads((Path(out) / FIGURES).read_text())
