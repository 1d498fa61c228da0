"""`cnnlab serve`: a local web app over cnnlab's Python API (FastAPI; see app.py).

    cnnlab serve --runs runs/            # http://127.0.0.1:8000

    from cnnlab.serve import ServeSettings, create_app
    app = create_app(ServeSettings(runs="runs", max_upload_mb=5))
"""

from __future__ import annotations

from .app import create_app
from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
