"""cnnlab models, doctor: what cnnlab can train, and what this machine is."""

from __future__ import annotations

import argparse

from ..errors import UserError
from ._common import add_run_flags


def add_models(sub) -> None:
    sub.add_parser("models", help="list the registered networks").set_defaults(handler=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import registry

    for name in registry.list_models():
        print(f"{name:20s} {registry.entry(name).description}")
    return 0


def add_doctor(sub) -> None:
    d = sub.add_parser("doctor", help="this machine's CPU/GPU, the precision auto picks, a throughput probe",
                       description="What to paste into a bug report: CPU capability, native bf16, cores, the "
                                   "precision and memory format that auto picks, a short throughput probe of "
                                   "cnn4 and fastnet in fp32 and bf16, library versions.")
    d.add_argument("--seconds", type=float, default=10.0, help="length of the throughput probe (0: skip it)")
    d.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_run_flags(d, data_root=False)
    d.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    import json

    from ..doctor import doctor, format_report

    if args.seconds < 0:
        raise UserError(f"--seconds must be 0 (no probe) or more, got {args.seconds:g}")
    facts = doctor(args.seconds, args.threads, args.device or "auto")
    print(json.dumps(facts, indent=2) if args.json else format_report(facts))
    return 0
