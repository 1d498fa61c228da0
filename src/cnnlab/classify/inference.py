"""A finished classifier run used: its test evaluation, evaluation on other data, predictions for photos.

The network is rebuilt by models/trained.py (config.yaml + best.safetensors + RunMeta); nothing here trains.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data as data_mod
from .. import runs
from ..config import Config
from ..engine import predict
from ..engine.device import autocast, configure_threads, memory_format, resolve_execution, select_device
from ..engine.metrics import confusion_matrix, per_class_accuracy
from ..errors import UserError
from ..models.trained import load_trained
from ..report import plots
from .building import is_features, make_batches


def write_evaluation(run: runs.RunDir, result, classes: Sequence[str], name: str = "evaluation.json",
                     source: str = "") -> dict[str, Any]:
    """evaluation.json (or `name`), confusion_matrix.csv/.png for a test-set prediction."""
    cm = confusion_matrix(result.predictions, result.labels, len(classes))
    per_class = per_class_accuracy(cm)
    evaluation = {"test_accuracy": result.accuracy, "test_loss": result.loss, "test_images": len(result.labels),
                  "per_class_accuracy": dict(zip(classes, per_class)), "confusion_matrix": cm.tolist(),
                  "classes": list(classes), "data": source}
    run.write_json(name, evaluation)
    stem = "confusion_matrix" if name == "evaluation.json" else Path(name).stem.replace("evaluation", "confusion_matrix")
    run.write_csv(f"{stem}.csv", [{"true": c, **{p: int(v) for p, v in zip(classes, row)}}
                                  for c, row in zip(classes, cm.tolist())])
    plots.confusion_matrix(cm, classes, run / f"{stem}.png", title=f"test accuracy {100 * result.accuracy:.2f}%")
    return evaluation


def load_run_model(run_dir: str | Path, weights: str = "best") -> tuple[nn.Module, Config, runs.RunDir]:
    """(model with the run's weights, its config, the run directory): models.trained.load_trained without
    the RunMeta, as earlier versions returned it."""
    model, cfg, run, _ = load_trained(run_dir, weights)
    return model, cfg, run


def match_classes(run_classes: Sequence[str], data: data_mod.ClassificationData, path: str) -> torch.Tensor:
    """Map the data's label indices onto the run's by class name; a class either side lacks is an error."""
    extra = [c for c in data.classes if c not in run_classes]
    missing = [c for c in run_classes if c not in data.classes]
    if extra:
        raise UserError(f"dataset {path} has class '{extra[0]}' that the run does not know (its classes: "
                        f"{', '.join(run_classes)})")
    if missing:
        raise UserError(f"dataset {path} lacks class '{missing[0]}' of the run; evaluate on data with all its "
                        f"classes ({', '.join(run_classes)})")
    return torch.tensor([list(run_classes).index(c) for c in data.classes], dtype=torch.long)


def _other_data(cfg: Config, meta: runs.RunMeta, data_path: str, layout: str) -> data_mod.ClassificationData:
    """Another labelled dataset (any layout of data/folders.py): its test split when it has one, else all its
    images, labelled with the run's class indices."""
    other = dataclasses.replace(cfg.data, dataset="folder", path=str(data_path), layout=layout,
                                val_fraction=0.0, test_fraction=0.0, image_size=0)
    data = data_mod.load(other, meta.view())
    mapping = match_classes(meta.classes, data, str(data_path))
    images = data.test_images if len(data.test_labels) else torch.cat([data.train_images, data.val_images])
    labels = data.test_labels if len(data.test_labels) else torch.cat([data.train_labels, data.val_labels])
    return dataclasses.replace(data, test_images=images, test_labels=mapping[labels], classes=list(meta.classes))


def evaluate(run_dir: str | Path, *, weights: str = "best", data_root: str | None = None,
             threads: int | None = None, device: str = "auto", data_path: str | None = None,
             layout: str = "auto", out: str | Path | None = None) -> dict[str, Any]:
    """Test-set top-1, per-class accuracy and confusion matrix of a finished (or interrupted) run.

    `data_path`: evaluate on another labelled dataset instead (see _other_data), classes matched by name.
    `out`: write the evaluation into that folder, with a summary.json of kind `evaluate` (its `accuracy`),
    instead of into the run (evaluation.json; evaluation-other.json for `data_path`), so that evaluations
    on several datasets each keep their own folder.
    """
    started = time.perf_counter()
    model, cfg, run, meta = load_trained(run_dir, weights)
    if data_root:
        cfg.data.root = data_root
    used = configure_threads(threads)
    dev = select_device(device)
    execution = resolve_execution(dev, cfg.train.precision, cfg.train.channels_last)
    print(execution.describe(), flush=True)
    tta = "none" if is_features(cfg) else cfg.train.tta
    # the whole model (backbone + trained head) evaluates images, whatever the run trained on
    cfg = dataclasses.replace(cfg, transfer=dataclasses.replace(cfg.transfer, features=False))
    if data_path is not None:
        data = _other_data(cfg, meta, data_path, layout)
    else:
        data = data_mod.load(cfg.data, meta.view() if cfg.data.dataset == "folder" else None)
    model.to(dev, memory_format=memory_format(execution.channels_last))
    _, _, test_batches = make_batches(cfg, data, dev, execution.channels_last)
    result = predict(model, test_batches, dev, execution.precision, tta)
    source = str(data_path or data.source)
    if out is None:
        name = "evaluation.json" if data_path is None else "evaluation-other.json"
        return write_evaluation(run, result, list(meta.classes), name=name, source=source)
    target = runs.RunDir(out).create()
    if target.finished:
        raise UserError(f"--out {target} already holds a run or an evaluation; choose a new folder")
    evaluation = write_evaluation(target, result, list(meta.classes), source=source)
    summary = runs.EvaluateSummary(
        kind="evaluate", name=f"evaluate {run.path.name}", run=str(run.path.resolve()), data=source, weights=weights,
        accuracy=evaluation["test_accuracy"], loss=evaluation["test_loss"], images=evaluation["test_images"],
        classes=list(meta.classes), per_class_accuracy=evaluation["per_class_accuracy"],
        git_commit=runs.git_commit(), torch_version=torch.__version__, device=str(dev), threads=used,
        precision=execution.precision, cpu_class=execution.cpu_class,
        total_seconds=time.perf_counter() - started)
    runs.write_summary(target, summary)
    return evaluation


def predict_images(run_dir: str | Path, images: Sequence[str | Path], *, top_k: int = 5,
                   threads: int | None = None, device: str = "auto",
                   precision: str = "fp32") -> list[dict[str, Any]]:
    """Top-k class names and probabilities for each image file (folders expanded), with the run's model.

    `run_dir` may also be a file written by `cnnlab export` (.onnx, run by ONNX Runtime; .pt, by torch.jit):
    its metadata gives the classes and the preprocessing, and the photos go through the same photo_batch.
    A run's model computes in fp32 by default (`precision`: fp32, bf16, or auto, the hardware's rule): a
    handful of photos gains nothing from bf16, and in fp32 the run, its exported file (always fp32) and the
    web app agree up to float rounding, so their top-1 classes do not flip on a near-tie."""
    from ..data.images import expand_image_paths
    from ..engine.metrics import topk
    from ..export import is_exported_file, load_exported

    configure_threads(threads)
    dev = select_device(device)
    if is_exported_file(run_dir):
        exported = load_exported(run_dir, dev)
        meta = exported.meta.run_meta()
        paths = expand_image_paths(images)
        logits = exported(photo_batch(paths, meta))
    else:
        model, cfg, run, meta = load_trained(run_dir)
        execution = resolve_execution(dev, precision, cfg.train.channels_last)
        fmt = memory_format(execution.channels_last)
        paths = expand_image_paths(images)
        x = photo_batch(paths, meta).to(dev, memory_format=fmt)
        model.to(dev, memory_format=fmt)
        with torch.no_grad(), autocast(dev, execution.precision):
            logits = model(x).float()
    probs, index = topk(logits, top_k)
    return [{"image": str(p), "predictions": [{"class_index": int(i), "class_name": meta.classes[int(i)],
                                               "probability": float(q)} for q, i in zip(pr, ix)]}
            for p, pr, ix in zip(paths, probs.cpu(), index.cpu())]


def photo_batch(paths: Sequence[Path], meta: runs.RunMeta) -> torch.Tensor:
    """The normalized float batch [N, 3, side, side] a classifier gets for image files: decoded as the run's
    photos were (data/folders.decode: the shorter side resized, a center crop), scaled to [0, 1] and
    normalized, by the run's RunMeta.view()."""
    from ..data.folders import decode

    view = meta.view()
    batch = torch.stack([decode(p, view.resize, view.crop) for p in paths]).float() / 255
    return (batch - torch.tensor(view.mean).view(1, -1, 1, 1)) / torch.tensor(view.std).view(1, -1, 1, 1)
