"""``POST /api/predict``: an uploaded photo's top-5 classes and a Grad-CAM heatmap of the top one, from a
registered ImageNet model or a classifier run under --runs (each model loaded once, used under its lock)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import torch
from fastapi import APIRouter, Form

from ...errors import UserError
from ..deps import ImageDep, ModelsDep, StateDep
from ..safety import child_run

router = APIRouter()


@router.post("/api/predict")
def predict(picture: ImageDep, models: ModelsDep, state: StateDep,
            model: Annotated[str | None, Form()] = None):
    from ...visualize import render

    settings = state.settings
    model = model or settings.default_model  # an empty field means the default, as a missing one does
    subject, lock = models.get(f"classifier:{model}", lambda: _load_subject(settings.runs, model, settings.device))
    with lock:
        predictions, heat, shown = _classify(subject, picture)
    name, path = state.new_result()
    with state.render_lock:
        render.heatmap(shown, heat, path, f"Grad-CAM: {predictions[0]['class_name']}")
    state.keep_recent()
    return {"predictions": predictions, "heatmap": f"/api/heatmaps/{name}", "model": model}


def _load_subject(runs_root: Path, model: str, device: str):
    """A registered ImageNet model by name, or a classifier run under --runs by its folder name."""
    from ...models.registry import list_models
    from ...visualize import load_subject

    if model in list_models(task="imagenet"):
        subject = load_subject(model=model)
    else:
        run = child_run(runs_root, model)
        if run is None or not (run / "best.safetensors").is_file():
            raise UserError(f"unknown model '{model}': name an ImageNet model ({', '.join(list_models('imagenet'))}) "
                            f"or a classifier run under --runs")
        subject = load_subject(run=str(run))
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
