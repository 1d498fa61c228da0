"""`cnnlab serve`: a local web app over cnnlab's Python API (FastAPI; see app.py).

    cnnlab serve --runs runs/            # http://127.0.0.1:8000
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
