"""The commands of ``cnnlab visualize`` as functions: each writes its pictures and data into `out` (a run
directory, every file written atomically) and returns a summary dict; the computing is maximize.py's and
attribution.py's, the drawing render.py's."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data.images import expand_image_paths, read_image
from ..engine.metrics import topk
from ..errors import UserError
from .. import runs
from ..runs import RunDir, atomic_write_bytes
from . import render
from .attribution import DEFAULT_METHODS, Attributor, check_methods
from .maximize import MaximizeSettings, first_layer_weights, maximize
from .subject import Subject, default_cam_layer, layer_output_shape


def _out(out: str | Path) -> RunDir:
    return RunDir(out).create()


def _write_summary(out: RunDir, method: str, subject: Subject, *, layer: str | None = None,
                   targets: Sequence = (), outputs: Sequence[str] = (), details: str | None = None,
                   precision: str | None = None) -> None:
    """summary.json of kind `visualize`: what was looked at and which files show it (the per-image record
    stays in the method's own JSON, `details`)."""
    runs.write_summary(out, runs.VisualizeSummary(
        kind="visualize", name=out.path.name, method=method, model=subject.name,
        source_run=subject.name.rsplit("(", 1)[1].rstrip(")") if subject.name.endswith(")") else None,
        layer=layer, targets=list(targets), outputs=[str(o) for o in outputs], details=details,
        git_commit=runs.git_commit(), torch_version=torch.__version__, precision=precision))


def _save_maximized(out: RunDir, stem: str, result, labels: list[str], title: str, subject: Subject,
                    method: str) -> dict:
    grid = render.tile_grid(result.images, labels, out / f"{stem}.png", title=title)
    buffer = io.BytesIO()  # written whole or not at all, like every file of a run directory
    np.save(buffer, result.images.numpy().astype(np.float32))
    atomic_write_bytes(out.path / f"{stem}.npy", buffer.getvalue())
    info = {"grid": str(grid), "arrays": str(out / f"{stem}.npy"), "labels": labels, "targets": result.targets,
            "initial_activation": result.initial_activation, "final_activation": result.final_activation,
            **result.meta}
    out.write_json(f"{stem}.json", info)
    _write_summary(out, method, subject, layer=result.meta.get("layer"), targets=list(result.targets),
                   outputs=[grid], details=str(out / f"{stem}.json"))
    return info


def filters(subject: Subject, layer: str, indices: Sequence[int] | None, out: str | Path,
            settings: MaximizeSettings | None = None) -> dict:
    """Synthesized inputs that maximize each filter's mean activation in `layer`, as one labelled grid."""
    module = subject.module(layer)
    channels = getattr(module, "out_channels", None) or getattr(module, "out_features", None) \
        or getattr(module, "num_features", None)
    if indices is None:
        indices = list(range(min(channels or 64, 64)))
    indices = list(indices)
    if channels is not None:
        bad = [i for i in indices if not 0 <= i < channels]
        if bad:
            raise UserError(f"filter {bad[0]} is out of range: layer '{layer}' has {channels} filters "
                            f"(0-{channels - 1})")
    result = maximize(subject, layer, indices, settings)
    stem = f"filters_{layer.replace('.', '_')}"
    return _save_maximized(_out(out), stem, result, [str(i) for i in indices],
                           f"{subject.name}: {layer}, filters maximized", subject, "filters")


def classes(subject: Subject, targets: Sequence[str | int] | None, out: str | Path,
            settings: MaximizeSettings | None = None) -> dict:
    """Synthesized inputs that maximize each class logit (pre-softmax)."""
    if targets is None:
        if len(subject.class_names) > 20:
            raise UserError(f"{subject.name} has {len(subject.class_names)} classes; choose some with --classes")
        targets = list(range(len(subject.class_names)))
    indices = [subject.class_index(t) for t in targets]
    result = maximize(subject, None, indices, settings)
    labels = [f"{i} {subject.class_names[i]}" for i in indices]
    return _save_maximized(_out(out), "classes", result, labels, f"{subject.name}: class logits maximized", subject,
                           "classes")


def show_weights(subject: Subject, out: str | Path) -> dict:
    """First-layer kernels drawn directly as RGB tiles."""
    name, tiles = first_layer_weights(subject.model)
    target = _out(out)
    path = render.tile_grid(tiles, [str(i) for i in range(len(tiles))], target / "first_layer_weights.png",
                            title=f"{subject.name}: {name} kernels")
    _write_summary(target, "weights", subject, layer=name, outputs=[path])
    return {"layer": name, "grid": str(path), "kernels": len(tiles)}


def attribution(subject: Subject, images: Sequence[str | Path], out: str | Path, *,
                methods: Sequence[str] = DEFAULT_METHODS, target: str | int | None = None,
                layer: str | None = None, batch_size: int = 8, crop: bool = False, precision: str = "auto") -> dict:
    """Heatmaps of each method for each image (and a panel of all), plus predictions.json (top-5).

    precision: auto (bf16 where the hardware computes it natively, else fp32; engine/device.py), fp32, bf16.
    """
    from ..engine.device import resolve_execution

    device = next(subject.model.parameters()).device
    execution = resolve_execution(device, precision)
    if execution.warning:
        print(f"warning: {execution.warning}", file=sys.stderr, flush=True)
    precision = execution.precision
    methods = check_methods(methods)
    paths = expand_image_paths(images)
    pictures = [read_image(p) for p in paths]  # every file is checked before any work starts
    inputs = [subject.preprocess(img, crop=crop) for img in pictures]
    target_index = None if target is None else subject.class_index(target)
    needs_cam = any(m not in ("saliency", "smoothgrad") for m in methods)
    cam_module = None
    if needs_cam:
        layer = layer or default_cam_layer(subject, inputs[0].unsqueeze(0))
        cam_module = subject.module(layer)
        shape = layer_output_shape(subject.model, cam_module, inputs[0].unsqueeze(0))
        if len(shape) != 4 or shape[-1] < 2 or shape[-2] < 2:
            raise UserError(f"layer '{layer}' of {subject.name} has no spatial output ({list(shape)}), so class "
                            f"activation maps cannot be computed there; choose a conv layer with --layer")
    target_dir = _out(out)
    predictions, records = [], []
    # Images of the same size share a batch.
    groups: dict[tuple, list[int]] = {}
    for i, x in enumerate(inputs):
        groups.setdefault(tuple(x.shape), []).append(i)
    results: dict[int, tuple] = {}
    with Attributor(subject.model, cam_module, methods, precision) as attributor:
        for indices in groups.values():
            for start in range(0, len(indices), batch_size):
                chunk = indices[start:start + batch_size]
                x = torch.stack([inputs[i] for i in chunk])
                with torch.no_grad():
                    logits = subject.model(x)
                probs, top = topk(logits, 5)
                chosen = top[:, 0] if target_index is None else torch.full((len(chunk),), target_index)
                maps = attributor(x, chosen)
                for j, i in enumerate(chunk):
                    results[i] = (probs[j], top[j], int(chosen[j]), {m: maps[m][j] for m in methods}, x[j])
    for i, path in enumerate(paths):
        probs, top, chosen, heats, x = results[i]
        predictions.append([{"class_index": int(c), "class_name": subject.class_names[int(c)],
                             "probability": float(p)} for p, c in zip(probs, top)])
        shown = subject.preprocess.denormalize(x)
        stem = f"{i:03d}_{path.stem}"
        label = f"{path.name}: {subject.class_names[chosen]}"
        files = [str(render.heatmap(shown, heats[m], target_dir / f"{stem}_{m}.png", f"{label} ({m})"))
                 for m in methods]
        files.append(str(render.panel(shown, heats, target_dir / f"{stem}_panel.png", label)))
        records.append({"image": str(path), "target_index": chosen, "target_name": subject.class_names[chosen],
                        "files": files})
    target_dir.write_json("predictions.json", predictions)  # type: ignore[arg-type]
    summary = {"model": subject.name, "layer": layer if needs_cam else None, "methods": methods, "images": records,
               "precision": precision, "precision_reason": execution.reason}
    target_dir.write_json("attribution.json", summary)
    _write_summary(target_dir, "attribution", subject, layer=summary["layer"],
                   targets=[r["target_name"] for r in records], outputs=[f for r in records for f in r["files"]],
                   details=str(target_dir / "attribution.json"), precision=execution.precision)
    return summary
