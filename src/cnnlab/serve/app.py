"""The web app: browse runs and their reports, classify an uploaded photo (top-5 + Grad-CAM), stylize one,
start a short training run and watch it.

Endpoints (one router per feature under serve/routes/):
- ``GET /`` the page; ``GET /healthz`` 200 when up (routes/pages.py);
- ``GET /api/runs`` the run directories under --runs (name, kind, key figure);
- ``GET /runs/{name}/report/{file}`` a run's HTML report (written on first request, then cached);
- ``POST /api/predict`` multipart ``image`` (+ optional ``model``: a registered ImageNet model, default
  efficientnet_lite0, or a classifier run's name) -> ``{"predictions": [{"class_index", "class_name",
  "probability"}, ... top-5], "heatmap": URL of a Grad-CAM PNG}`` (routes/predict.py);
- ``POST /api/stylize`` multipart ``image`` + ``network`` (a style-network run's name) -> ``{"image": URL}``
  (routes/stylize.py);
- ``POST /api/train`` form ``preset``, ``minutes``, ``train_images`` -> 202 ``{"job", "run", "events": URL}``
  (409 while another run goes, 429 sooner than --train-interval); ``GET /api/train/{job}/events`` its
  progress as Server-Sent Events (routes/train.py, serve.jobs);
- ``GET /api/status`` the models in memory and whether a run is going.

Who may ask (serve/access.py, as Jupyter Server does it): every request must name this machine in its Host
(against DNS rebinding, on every bind); a non-loopback bind needs the token printed at start on every request
but /healthz; every state-changing request (the CHANGE routers) must come from the app's own page (Origin,
Sec-Fetch-Site and the page's X-Requested-With header) or from a program, never from another site's page.

Safety, by design rather than by hope (serve/safety.py): it binds to 127.0.0.1 unless told otherwise; uploads
over --max-upload-mb are refused with 413 before they are read into memory (the request body is counted as it
arrives, with or without a Content-Length); images are accepted by decoding their content (anything else: 415
with the reason), never by their extension, within a pixel budget (--max-megapixels, reduced decoding, two at
a time); run and file names are resolved and must stay inside --runs (``..``, encoded ``%2e%2e``, absolute
paths and symlinks pointing outside give 404); a model's name is checked before anything is loaded; errors
are JSON messages, never tracebacks or server paths. A few models are kept (least recently used first out);
one lock per model and two model slots keep concurrent requests from oversubscribing the CPU (they queue in
the event loop and are all answered) and leave the threads that answer the pages free.

Importing this module starts nothing: create_app builds the app from a ServeSettings, and the app's state
(serve/state.py) is made when it starts serving and removed when it stops.
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from . import routes
from .access import CheckHost, RequireToken
from .deps import own_page
from .safety import LimitUploadSize, install_error_handlers
from .settings import ServeSettings
from .state import ServeState


@asynccontextmanager
async def _lifespan(app: FastAPI):
    state = ServeState(app.state.settings)
    app.state.serve = state
    try:
        yield
    finally:
        state.close()  # page-started runs stop; heatmaps and reports live only as long as the server


def create_app(settings: ServeSettings | str | os.PathLike | None = None, *args, **fields) -> FastAPI:
    """The FastAPI application (see the module docstring), from a ServeSettings.

    The keyword form of earlier versions works too, the same fields in the same order:
    ``create_app(runs, max_upload_mb, allowed_hosts=[...], data_root=...)`` builds the ServeSettings itself.
    """
    if not isinstance(settings, ServeSettings):
        settings = ServeSettings(*(() if settings is None else (settings,)), *args, **fields)
    elif args or fields:
        raise TypeError("create_app: pass a ServeSettings or its fields, not both")
    app = FastAPI(title="cnnlab", docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan)
    app.state.settings = settings
    # Added innermost first: a request meets the Host check, then the token, then the upload limit.
    app.add_middleware(LimitUploadSize, limit=settings.max_upload_bytes)
    app.add_middleware(RequireToken, settings=settings)
    app.add_middleware(CheckHost, settings=settings)
    install_error_handlers(app)
    for router in routes.READ:
        app.include_router(router)
    for router in routes.CHANGE:  # uploads and started runs: only from the app's own page (or a program)
        app.include_router(router, dependencies=[Depends(own_page)])
    return app
