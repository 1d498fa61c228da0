"""The `cnnlab` command: argument parsing only; every command calls the Python API.

Each command group is a module holding its parser beside its handler (train.py: train, evaluate, predict;
transfer.py; export.py; report.py: report, compare; serve.py; course.py; stylize.py; visualize.py; tools.py:
models, doctor; ablate.py); _common.py and _run.py hold what they share. A parser names its handler with
``set_defaults(handler=...)``. User errors (``UserError``) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..errors import EXIT_USER_ERROR, UserError
from ._common import Parser


def build_parser() -> argparse.ArgumentParser:
    from . import ablate, course, export, report, serve, stylize, tools, train, transfer, visualize

    parser = Parser(prog="cnnlab", description="Train, compare and explain convolutional networks.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    train.add_train(sub)
    transfer.add_transfer_commands(sub)
    train.add_evaluate(sub)
    train.add_predict(sub)
    export.add_export(sub)
    report.add_report(sub)
    serve.add_serve(sub)
    course.add_course(sub)
    report.add_compare(sub)
    ablate.add_ablate(sub)
    visualize.add_visualize(sub)
    stylize.add_stylize(sub)
    tools.add_models(sub)
    tools.add_doctor(sub)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse, letting KEY=VALUE overrides sit anywhere among the flags."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides) + extra
    return args


def main(argv: list[str] | None = None) -> int:
    """The `cnnlab` command (argv None: this process's arguments); returns the exit code."""
    try:
        code = _command(argv)
    finally:
        if argv is None:
            _ignore_late_interrupts()
    if argv is None:
        _leave_torchrun_worker(code)
    return code


def _leave_torchrun_worker(code: int) -> None:
    """A torchrun worker whose command has ended (every file written, the process group destroyed) exits at
    once: torch's C++ threads sometimes abort the interpreter's own shutdown ("terminate called without an
    active exception", SIGABRT, about one run in ten on 2 cores), which turned a finished run into a failed
    launch. Only for the `cnnlab` command started by torchrun; streams are flushed first."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return
    from .. import _run_as_command

    if _run_as_command():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code if isinstance(code, int) else 1)


def _ignore_late_interrupts() -> None:
    """The command has ended and said how: a Ctrl-C during the interpreter's shutdown (torch's and the threads'
    clean-up take a moment) would otherwise kill the process by the signal, without the one line and the exit
    code it already chose. Only for the `cnnlab` command itself, never for a caller that imported main()."""
    import signal

    from .. import _run_as_command

    if _run_as_command():
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass


def _command(argv: list[str] | None) -> int:
    try:
        args = parse_args(argv)
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    try:
        return args.handler(args)
    except UserError as exc:
        kind = "error" if exc.exit_code == EXIT_USER_ERROR else "stopped"
        print(f"cnnlab {args.command}: {kind}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # the disk or the file system said no: the file and what to do, no traceback
        print(f"cnnlab {args.command}: error: {os_error_message(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR


def os_error_message(exc: OSError) -> str:
    """One line for a failed read or write: what failed, on which file, and what to do."""
    import errno

    where = f" ({exc.filename})" if exc.filename else ""
    advice = {errno.ENOSPC: "the disk is full; free some space (earlier results are intact) and resume",
              errno.EDQUOT: "the disk quota is used up; free some space and resume",
              errno.EROFS: "the file system is read-only; choose another --out",
              errno.EACCES: "permission denied; choose a folder you can write to",
              errno.EPERM: "operation not permitted; choose a folder you can write to"}.get(
        exc.errno, "check the path and the disk")
    return f"{exc.strerror or exc}{where}: {advice}"
