"""``POST /api/stylize``: an uploaded photo through a style network trained under --runs. The photo is first
scaled down to the settings' max_stylize_side: memory grows with its pixels, not with the upload's bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from fastapi import APIRouter, Form

from ..deps import ImageDep, ModelsDep, StateDep
from ..safety import safe_run_dir

router = APIRouter()


@router.post("/api/stylize")
def stylize(picture: ImageDep, network: Annotated[str, Form()], models: ModelsDep, state: StateDep):
    from ...data.images import save_png, to_uint8
    from ...style.optimize import resize_longest

    settings = state.settings
    if max(picture.shape[1:]) > settings.max_stylize_side:
        picture = to_uint8(resize_longest(picture, settings.max_stylize_side))
    run = safe_run_dir(settings.runs, network)
    stylizer, lock = models.get(f"style:{network}", lambda: _load_stylizer(run, settings.device))
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
