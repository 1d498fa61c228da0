"""The routes' dependencies as ``Annotated`` aliases (FastAPI's "Bigger Applications" shape): a route names
what it needs (``settings: SettingsDep``, ``models: ModelsDep``, ``picture: ImageDep``) and FastAPI hands it
over, from the one ServeState of the app that answers the request. A check that every state-changing route
needs (an Origin or token check) is one more function here, added to those routers in app.py."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from fastapi import Depends, File, Request, UploadFile

from .jobs import TrainingJobs
from .safety import decode_upload
from .settings import ServeSettings
from .state import Models, ServeState


def get_state(request: Request) -> ServeState:
    state = getattr(request.app.state, "serve", None)
    if state is None:  # a 500 with this in the server's log, not an AttributeError deep in a route
        raise RuntimeError("the cnnlab app was not started: run it with its lifespan (uvicorn, `with TestClient`)")
    return state


StateDep = Annotated[ServeState, Depends(get_state)]


def get_settings(state: StateDep) -> ServeSettings:
    return state.settings


def get_models(state: StateDep) -> Models:
    return state.models


def get_runs_root(state: StateDep) -> Path:
    return state.settings.runs


def get_jobs(state: StateDep) -> TrainingJobs:
    return state.jobs


def uploaded_image(image: Annotated[UploadFile, File()]) -> torch.Tensor:
    """The form's ``image`` decoded by its content (415 when it is no image)."""
    return decode_upload(image)


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
ModelsDep = Annotated[Models, Depends(get_models)]
RunsDep = Annotated[Path, Depends(get_runs_root)]
JobsDep = Annotated[TrainingJobs, Depends(get_jobs)]
ImageDep = Annotated[torch.Tensor, Depends(uploaded_image)]
