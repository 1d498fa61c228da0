"""``POST /api/stylize``: an uploaded photo through a style network trained under --runs. The network's name
is checked before the upload is decoded; the photo is decoded at reduced size and scaled to the settings'
max_stylize_side: memory grows with its pixels, not with the upload's bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from fastapi import APIRouter, File, Form, UploadFile

from ..deps import StateDep, decoded, in_model_slot
from ..safety import safe_run_dir
from ..state import ServeState

router = APIRouter()


@router.post("/api/stylize")
async def stylize(image: Annotated[UploadFile, File()], network: Annotated[str, Form()], state: StateDep):
    run = safe_run_dir(state.settings.runs, network)  # 404 before any decoding
    picture = await decoded(state, image)
    return await in_model_slot(state, _answer, state, network, run, picture)


def _answer(state: ServeState, network: str, run: Path, picture: torch.Tensor) -> dict:
    from ...data.images import save_png, to_uint8
    from ...style.optimize import resize_longest

    settings = state.settings
    if max(picture.shape[1:]) > settings.max_stylize_side:
        picture = to_uint8(resize_longest(picture, settings.max_stylize_side))
    stylizer, lock = state.models.get(f"style:{network}", lambda: _load_stylizer(run, settings.device))
    with lock:
        styled = stylizer(picture.unsqueeze(0))[0]
    name, path = state.new_result()
    save_png(styled, path)
    state.keep_recent()
    return {"image": f"/api/heatmaps/{name}", "network": network, "size": list(styled.shape[1:])}


def _load_stylizer(run: Path, device: str):
    from ...engine.device import resolve_execution
    from ...style.apply import Stylizer
    from ...style.train import load_network

    model, _ = load_network(run, device)
    execution = resolve_execution(torch.device(device))
    return Stylizer(model, torch.device(device), execution.precision, execution.channels_last)
