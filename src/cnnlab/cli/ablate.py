"""cnnlab ablate: a grid of configs, each run resumable, and their comparison."""

from __future__ import annotations

import argparse

from ._common import add_overrides, add_run_flags


def add_ablate(sub) -> None:
    a = sub.add_parser("ablate", help="run a grid of configs and compare them",
                       description="Run every config of a grid file (resumable) and write comparison.csv/.md/.png.")
    a.add_argument("grid", metavar="GRID.yaml")
    add_overrides(a, "overrides applied to every run")
    a.add_argument("--out", metavar="DIR", help="output folder (default runs/ablate-NAME)")
    a.add_argument("--max-epochs", type=float, metavar="N", help="cap every run at N epochs")
    a.add_argument("--minutes", type=float, metavar="M",
                   help="fit each run into M minutes, its recipe stretched to fit (annealed)")
    a.add_argument("--max-minutes", type=float, metavar="M",
                   help="cut each run after M minutes of training (not annealed: for truncation studies)")
    a.add_argument("--only", nargs="+", metavar="RUN", help="run only these runs of the grid")
    a.add_argument("--list", action="store_true", help="list the runs and their settings, run nothing")
    a.add_argument("--workers", type=int, default=1, metavar="N",
                   help="run N grid points at once, each in its own process with its share of the cores (or "
                        "one GPU each); results as a serial grid's with the same threads per run")
    a.add_argument("--no-progress", action="store_true")
    add_run_flags(a)
    a.set_defaults(handler=cmd_ablate)


def cmd_ablate(args: argparse.Namespace) -> int:
    from ..ablate import ablate, plan
    from ..config import parse_overrides

    overrides = parse_overrides(args.overrides)
    for flag, key in (("data_root", "data.root"), ("threads", "train.threads"), ("device", "train.device")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    if args.no_progress:
        overrides["train.progress"] = False
    if args.list:
        _, out_dir, planned = plan(args.grid, args.out, max_epochs=args.max_epochs, max_minutes=args.max_minutes,
                                   minutes=args.minutes, overrides=overrides)
        for p in planned:
            settings = ", ".join(f"{k}={v}" for k, v in p.settings.items())
            print(f"{p.name}: {settings} (epochs {p.config.train.epochs:g}) -> {p.config.out}")
        return 0
    out_dir = ablate(args.grid, args.out, max_epochs=args.max_epochs, max_minutes=args.max_minutes,
                     minutes=args.minutes, only=args.only, overrides=overrides, workers=args.workers)
    print((out_dir / "comparison.md").read_text())
    print(f"comparison written to {out_dir}/comparison.csv, comparison.md, comparison.png")
    return 0
