"""`cnnlab serve` from the command line: its flags, made from ServeSettings' fields (settings.py holds each
option's default and help, once), and running the app under uvicorn.

The CLI needs only these two:

    from cnnlab.serve.run import add_arguments, main
    add_arguments(subparsers.add_parser("serve", help=...))
    ...
    return main(args)

Stopping (Ctrl-C, ``kill PID``) takes seconds even with a page open: progress streams end and page-started
runs are interrupted as soon as the signal arrives, and uvicorn waits at most a few seconds for connections
(``timeout_graceful_shutdown``) before the app's scratch folder is removed.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os

from ..errors import UserError
from .settings import ServeSettings

TOKEN_ENV = "CNNLAB_SERVE_TOKEN"


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Every ServeSettings field that has a flag, with its default and help (settings.py)."""
    for f in dataclasses.fields(ServeSettings):
        if "flag" not in f.metadata:
            continue
        options = {k: v for k, v in f.metadata.items() if k != "flag"}
        if options.get("action") != "store_true":
            options.setdefault("default", None if f.name == "extra_hosts" else f.default)
        parser.add_argument(f.metadata["flag"], dest=f.name, **options)
    return parser


def settings_from(args: argparse.Namespace) -> ServeSettings:
    """ServeSettings from parsed flags (and $CNNLAB_SERVE_TOKEN when --token is not given)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(ServeSettings)
              if "flag" in f.metadata and hasattr(args, f.name)}
    values["extra_hosts"] = tuple(values.get("extra_hosts") or ())
    if values.get("token") is None and os.environ.get(TOKEN_ENV):
        values["token"] = os.environ[TOKEN_ENV]
    return ServeSettings(**values)


def main(args: argparse.Namespace) -> int:
    """Build the settings, print the address to open (with the token when one is needed), serve until a signal."""
    from ..engine.device import configure_threads

    settings = settings_from(args)
    try:
        import uvicorn

        from .app import create_app

        app = create_app(settings)
    except (ImportError, RuntimeError) as exc:  # python-multipart missing is a RuntimeError at app creation
        raise UserError(f"cnnlab serve needs the web extra ({exc}): pip install 'cnnlab[serve]'") from None
    configure_threads(settings.threads)
    print(f"cnnlab serve: {settings.url()} (runs: {settings.runs})", flush=True)
    if settings.token:
        local = f"http://127.0.0.1:{settings.port}/?token={settings.token}"
        if not settings.loopback and local != settings.url():
            print(f"  or, on this machine: {local}", flush=True)
        print("  (API clients: add ?token=... to the URL or send 'Authorization: Bearer <token>')", flush=True)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # before uvicorn waits for connections: streams end, runs stop
            state = getattr(app.state, "serve", None)
            if state is not None:
                state.begin_shutdown()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, host=settings.host, port=settings.port, proxy_headers=False,
                            log_level="info" if settings.access_log else "warning", access_log=settings.access_log,
                            timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_seconds) - 1))
    Server(config).run()
    return 0
