"""The whole course write-up on this machine: `cnnlab course --minutes M`, its figures against the course's.

    python benchmarks/course.py --minutes 60                      # about an hour on 2 cores
    python benchmarks/course.py --minutes 60 --existing runs/course-60   # only (re)write the table

Runs `cnnlab course --minutes M --out OUT` as a process (its output saved to OUT/course-output.log), then
writes benchmarks/results/course-<M>-<CPU class>.md from OUT/course.json: each task's figure, the course's
published one, the run, its budget and its conditions, the whole command's minutes and exit code, and the
command's closing lines. The commit is the one the runs themselves recorded (environment.json), so a table
rewritten later still names the code that made its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from _common import cnnlab_env, cpu_banner, cpu_class, table

ROOT = Path(__file__).resolve().parents[1]
LOG = "course-output.log"


def run_course(minutes: float, out: Path, extra: list[str]) -> tuple[int, float]:
    """(exit code, wall seconds) of the whole command; its output goes to the terminal and to OUT/LOG (with
    the exit code as its last line, so the table can be rewritten later from the folder alone)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "cnnlab", "course", "--minutes", str(minutes), "--out", str(out), *extra]
    start = time.perf_counter()
    with open(out / LOG, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
env=cnnlab_env())
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
        code = proc.wait()
        wall = time.perf_counter() - start
        log.write(f"exit code: {code}\nwall seconds: {wall:.1f}\n")  # the whole process, measured from outside
    return code, wall


def run_commit(out: Path) -> str:
    """The commit the course's runs recorded (every run writes environment.json)."""
    commits = set()
    for env in (out / "runs").glob("*/environment.json"):
        commit = json.loads(env.read_text()).get("git_commit")
        if commit:
            commits.add(commit[:7])
    return ", ".join(sorted(commits)) or "unknown"


def cell(value: object, metric: str) -> str:
    """The report's own formatting of a course figure ('—' for anything that is not a number)."""
    from cnnlab.report.course import figure_text

    return figure_text(value if isinstance(value, (int, float)) else None, metric)


def results(out: Path) -> str:
    log = out / LOG
    text = log.read_text().splitlines() if log.exists() else []
    code = next((line.split(": ", 1)[1] for line in text if line.startswith("exit code: ")), None)
    wall = next((float(line.split(": ", 1)[1]) for line in text if line.startswith("wall seconds: ")), None)
    course = json.loads((out / "course.json").read_text())
    rows = []
    for task in ("task1", "task2", "task3", "task4", "task5"):
        for key, entry in course.get(task, {}).items():  # a course stopped part-way has fewer
            metric = next((k for k in entry if k not in ("published", "run", "conditions", "budget_minutes",
                                                   "published_is")),
                          "figure")
            test = entry.get("test_accuracy") if metric != "test_accuracy" else None  # tasks 2-4: the carved test split
            rows.append([task, f"{key}.{metric}", cell(entry.get(metric), metric), cell(entry.get("published"), metric),
                         cell(test, "test_accuracy") if test is not None else "",
                         entry.get("run", ""), entry.get("budget_minutes", ""), entry.get("conditions", "")])
    data, run = course["data"], course["run"]
    lines = [f"# `cnnlab course --minutes {run['minutes']:g}`", "",
             cpu_banner().rsplit(", commit", 1)[0] + f"; the runs' commit: {run_commit(out)}",
             f"(`python benchmarks/course.py --minutes {run['minutes']:g} --out {out}`, "
             f"CNNLAB_DATA={os.environ.get('CNNLAB_DATA', '')}).",
             "",
             f"Building dataset: {data['building_dataset']} ({data['layout']} layout, {data['images']} images), "
             f"standing in for Terrassa Buildings 900: {data['stands_in_for_terrassa']}.",
             (f"Whole process (wall time, measured from outside, interpreter start and report included): "
              f"{wall / 60:.1f} minutes of the {run['minutes']:g}" if wall is not None else
              "Whole process: wall time not recorded (a run from before benchmarks/course.py recorded it)")
             + (f" (exit code {code})." if code is not None else "."),
             f"The course's own timer (its steps only): {run['seconds'] / 60:.1f} minutes.", "",
             table(["task", "figure", "cnnlab", "course (published)", "cnnlab test (tasks 2-4: chosen on val, measured once)",
                    "run", "budget (min)", "conditions"], rows),
             "", f"Protocol: {run['protocol']}"]
    start = next((i for i, line in enumerate(text) if line.startswith("total time:")), None)
    if start is not None:
        closing = [line for line in text[start:] if not line.startswith("exit code: ")]
        lines += ["", "The command's closing lines:", "", "```", *closing, "```"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--out", type=Path, default=None, help="the course's folder (default runs/course-<M>)")
    parser.add_argument("--existing", type=Path, default=None,
                        help="a finished course folder: write its table without running anything")
    parser.add_argument("extra", nargs="*", help="more `cnnlab course` arguments (after --)")
    args = parser.parse_args()
    if args.existing:
        out = args.existing
    else:
        out = args.out or ROOT / "runs" / f"course-{args.minutes:g}"
        run_course(args.minutes, out, args.extra)
    text = results(out)
    minutes = json.loads((out / "course.json").read_text())["run"]["minutes"]
    path = ROOT / "benchmarks" / "results" / f"course-{minutes:g}-{cpu_class()}.md"
    path.write_text(text)
    print(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
