"""`cnnlab serve`: a local web app over cnnlab's Python API (FastAPI; see app.py).

    cnnlab serve --runs runs/            # http://127.0.0.1:8000
    cnnlab serve --host 0.0.0.0          # prints http://HOST:8000/?token=...: open that

    from cnnlab.serve import ServeSettings, create_app
    app = create_app(ServeSettings(runs="runs", max_upload_mb=5))

Importing this package needs no web libraries: create_app (FastAPI) is imported on first use, so the CLI can
build its `serve` flags from ServeSettings (serve.run.add_arguments) in every command.
"""

from __future__ import annotations

from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(f"module 'cnnlab.serve' has no attribute {name!r}")
