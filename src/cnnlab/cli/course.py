"""cnnlab course: the course's five tasks as a plan of ordinary cnnlab runs in a time budget, then its report."""

from __future__ import annotations

import argparse

from ._common import add_fields


def add_course(sub) -> None:
    from ..course import CourseSettings

    co = sub.add_parser("course", help="reproduce the course's five tasks in a time budget, then its report",
                        description="Every experiment of the course's write-up as a plan of ordinary cnnlab runs, "
                                    "each with its share of --minutes; resumable (the same command continues it); "
                                    "ends with OUT/report/index.html and OUT/course.json.")
    add_fields(co, CourseSettings, ["minutes", "terrassa", "content_dir", "styles", "out", "full", "limit_train",
                                    "style_size", "data_root"],
               metavars={"terrassa": "PATH", "content_dir": "DIR", "styles": "IMG", "out": "DIR", "limit_train": "N",
                         "data_root": "PATH"})
    co.set_defaults(handler=cmd_course)


def cmd_course(args: argparse.Namespace) -> int:
    from ..course import CourseSettings, run_course
    from ._common import settings_from

    run_course(settings_from(args, CourseSettings))
    return 0
