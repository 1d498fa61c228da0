"""cnnlab report, compare: what runs showed, as an HTML report or one table and plot."""

from __future__ import annotations

import argparse


def add_report(sub) -> None:
    r = sub.add_parser("report", help="a self-contained HTML report of run directories (opens offline)")
    r.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    r.add_argument("-o", "--out", metavar="OUT_DIR", required=True, help="where index.html and assets/ go")
    r.add_argument("--title", default="cnnlab report")
    r.add_argument("--course", action="store_true",
                   help="lay it out as the course write-up: its five tasks in order, its published figures "
                        "beside cnnlab's (each linked to its run)")
    r.set_defaults(handler=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from ..report.html import write_report

    index = write_report(args.run_dirs, args.out, title=args.title, course=args.course)
    print(f"report: {index}")
    return 0


def add_compare(sub) -> None:
    c = sub.add_parser("compare", help="one table and plot over runs (CIFAR, transfer, features, finetune)")
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    c.add_argument("--course", action="store_true", help="add the course's published transfer figures")
    c.add_argument("--out", metavar="DIR", help="where comparison.md/.csv/.png go (default runs/compare-TIME)")
    c.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    import time

    from ..report.compare import compare

    out = args.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}"
    table = compare(args.run_dirs, out, course=args.course)
    print(table)
    print(f"comparison written to {out}/comparison.md, comparison.csv, comparison.png")
    return 0
