"""cnnlab serve: the local web app. Its flags are made from ServeSettings' fields by serve/run.py (each default
and help written once, in serve/settings.py); importing them needs no web library."""

from __future__ import annotations

import argparse


def add_serve(sub) -> None:
    from ..serve.run import add_arguments

    w = sub.add_parser("serve", help="a local web app: runs and reports, classify and stylize uploads")
    add_arguments(w)
    w.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from ..serve.run import main

    return main(args)
