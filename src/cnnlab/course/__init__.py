"""`cnnlab course`: one command reproduces the course's write-up, its five tasks as a plan of ordinary cnnlab runs
with a share of a time budget each, resumable, ending in course.json and the `--course` report.

    from cnnlab.course import CourseSettings, run_course
    run_course(CourseSettings(minutes=60, out="runs/course"))
"""

from .plan import CourseSettings, Step, build, describe
from .runner import load_figures, run_course

__all__ = ["CourseSettings", "Step", "build", "describe", "load_figures", "run_course"]
