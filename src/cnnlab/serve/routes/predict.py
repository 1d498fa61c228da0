"""``POST /api/predict``: an uploaded photo's top-5 classes and a Grad-CAM heatmap of the top one, from a
registered ImageNet model or a classifier run under --runs.

The model's name is checked first, against the registry and the runs folder (400 naming the valid ones),
before the upload is decoded and before anything is loaded or cached: a name that is not a model costs
nothing and leaves nothing behind. Decoding and the model's work run in the app's bounded worker slots
(deps.decoded, deps.in_model_slot); each model is loaded once, kept while recently used, used under its lock.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import anyio
import torch
from fastapi import APIRouter, File, Form, UploadFile

from ...errors import UserError
from ..deps import StateDep, decoded, in_model_slot
from ..safety import child_run
from ..state import ServeState

router = APIRouter()
SHOWN_RUNS = 12  # classifier runs named in an unknown-model message, at most


@router.post("/api/predict")
async def predict(image: Annotated[UploadFile, File()], state: StateDep,
                  model: Annotated[str | None, Form()] = None):
    settings = state.settings
    model = model or settings.default_model  # an empty field means the default, as a missing one does
    source = await anyio.to_thread.run_sync(model_source, state, model)  # a few stats: the usual pool
    picture = await decoded(state, image)
    return await in_model_slot(state, _answer, state, model, source, picture)


def model_source(state: ServeState, model: str) -> str | Path:
    """The registered ImageNet model's name, or the classifier run's folder; UserError (400) naming the valid
    models otherwise. Reads only names: nothing is loaded here."""
    from ...models.registry import list_models

    imagenet = list_models(task="imagenet")
    if model in imagenet:
        return model
    run = child_run(state.settings.runs, model)
    if run is not None and (run / "best.safetensors").is_file():
        return run
    root = state.settings.runs
    runs = [r["name"] for r in state.runs_index.rows() if (root / r["name"] / "best.safetensors").is_file()]
    listed = ", ".join(runs[:SHOWN_RUNS]) + (f" (and {len(runs) - SHOWN_RUNS} more)" if len(runs) > SHOWN_RUNS else "")
    shown = model if len(model) <= 60 else model[:60] + "…"
    raise UserError(f"unknown model '{shown}': name an ImageNet model ({', '.join(imagenet)})"
                    + (f" or a classifier run under --runs ({listed})" if runs else
                       " or a classifier run under --runs (none there yet)"))


def _answer(state: ServeState, model: str, source: str | Path, picture: torch.Tensor) -> dict:
    """Load (or reuse) the model, classify, draw the heatmap: blocking work, in a model slot."""
    from ...visualize import render

    device = state.settings.device
    subject, lock = state.models.get(f"classifier:{model}", lambda: _load_subject(source, device))
    with lock:
        predictions, heat, shown = _classify(subject, picture)
    name, path = state.new_result()
    with state.render_lock:
        render.heatmap(shown, heat, path, f"Grad-CAM: {predictions[0]['class_name']}")
    state.keep_recent()
    return {"predictions": predictions, "heatmap": f"/api/heatmaps/{name}", "model": model}


def _load_subject(source: str | Path, device: str):
    """A registered ImageNet model by name, or a classifier run by its folder (model_source checked it)."""
    from ...visualize import load_subject

    subject = load_subject(run=str(source)) if isinstance(source, Path) else load_subject(model=source)
    subject.model.to(device).eval()
    return subject


def _classify(subject, picture: torch.Tensor):
    """Top-5 and a Grad-CAM map of the top class for one image."""
    from ...engine.metrics import topk
    from ...visualize.attribution import Attributor
    from ...visualize.subject import default_cam_layer

    x = subject.preprocess(picture).unsqueeze(0)
    with torch.no_grad():
        logits = subject.model(x)
    probs, top = topk(logits, min(5, logits.shape[1]))
    layer = default_cam_layer(subject, x)
    with Attributor(subject.model, subject.module(layer), ["gradcam"]) as attributor:
        heat = attributor(x, top[:, 0])["gradcam"][0]
    predictions = [{"class_index": int(c), "class_name": subject.class_names[int(c)], "probability": float(p)}
                   for p, c in zip(probs[0], top[0])]
    return predictions, heat, subject.preprocess.denormalize(x[0])
