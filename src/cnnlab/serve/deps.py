"""The routes' dependencies as ``Annotated`` aliases (FastAPI's "Bigger Applications" shape): a route names
what it needs (``settings: SettingsDep``, ``models: ModelsDep``) and FastAPI hands it over, from the one
ServeState of the app that answers the request. ``own_page`` is the check every state-changing router gets
in app.py (serve/access.py), and ``decoded``/``in_model_slot`` run blocking work in the app's own bounded
worker slots rather than in the thread pool the pages and /healthz are answered from."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import anyio
import torch
from fastapi import Depends, Request, UploadFile

from .access import check_own_page
from .jobs import TrainingJobs
from .safety import decode_upload
from .settings import ServeSettings
from .state import Models, ServeState


async def get_state(request: Request) -> ServeState:
    state = getattr(request.app.state, "serve", None)
    if state is None:  # a 500 with this in the server's log, not an AttributeError deep in a route
        raise RuntimeError("the cnnlab app was not started: run it with its lifespan (uvicorn, `with TestClient`)")
    return state


StateDep = Annotated[ServeState, Depends(get_state)]


async def own_page(request: Request) -> None:
    """403 unless the request comes from the app's own page or a program (access.check_own_page). Async: it
    takes no thread, so refusing a flood of cross-site requests costs the pages nothing."""
    check_own_page(request)


async def get_settings(state: StateDep) -> ServeSettings:
    return state.settings


async def get_models(state: StateDep) -> Models:
    return state.models


async def get_runs_root(state: StateDep) -> Path:
    return state.settings.runs


async def get_jobs(state: StateDep) -> TrainingJobs:
    return state.jobs


async def decoded(state: ServeState, image: UploadFile) -> torch.Tensor:
    """The form's ``image`` decoded by its content within the settings' pixel budget (413 too large, 415 no
    image), at most `decode_slots` at once."""
    settings = state.settings
    data = await image.read()
    work = functools.partial(decode_upload, data, image.filename or "the upload", settings.max_pixels,
                             settings.max_stylize_side)
    return await anyio.to_thread.run_sync(work, limiter=state.decode_slots)


async def in_model_slot(state: ServeState, work, *args):
    """`work(*args)` in a worker thread, at most `model_slots` at once (a model's own lock still serializes
    its use); waiting requests hold no thread."""
    return await anyio.to_thread.run_sync(functools.partial(work, *args), limiter=state.model_slots)


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
ModelsDep = Annotated[Models, Depends(get_models)]
RunsDep = Annotated[Path, Depends(get_runs_root)]
JobsDep = Annotated[TrainingJobs, Depends(get_jobs)]
