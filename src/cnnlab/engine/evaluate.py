"""Evaluation: logits of a model over batches, with test-time augmentation (the views averaged).

Used by the Trainer (validation), the final test of a run, inference on photos and the time budget's
calibration. (It lived in loop.py; loop re-exports it.)
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .device import autocast


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    logits: torch.Tensor  # float32 on cpu, [N, classes]
    labels: torch.Tensor

    @property
    def predictions(self) -> torch.Tensor:
        return self.logits.argmax(1)


def tta_views(x: torch.Tensor, mode: str) -> list[tuple[torch.Tensor, float]]:
    """(view, weight) pairs whose weighted logits are averaged: none | flip | flip_translate.

    flip_translate adds the flipped pair shifted one pixel up-left and one down-right (reflect padding),
    the views airbench found worth their cost.
    """
    if mode == "none":
        return [(x, 1.0)]
    fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() \
        else torch.contiguous_format

    def same_layout(v: torch.Tensor) -> torch.Tensor:  # a strided view would fall off the fast conv path
        return v.contiguous(memory_format=fmt)

    views = [(x, 0.5), (same_layout(x.flip(-1)), 0.5)]
    if mode == "flip_translate":
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        h, w = x.shape[-2:]
        up_left, down_right = padded[..., :h, :w], padded[..., 2:, 2:]
        views = [(v, 0.25) for v, _ in views] + [(same_layout(v), 0.125) for v in
                                                 (up_left, up_left.flip(-1), down_right, down_right.flip(-1))]
    return views


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
            precision: str = "fp32", tta: str = "none") -> EvalResult:
    """Logits (averaged over test-time views) and loss over `batches`, in eval mode."""
    was_training = model.training
    model.eval()
    logits_all, labels_all = [], []
    for x, y in batches:
        with autocast(device, precision):
            logits = sum(w * model(v).float() for v, w in tta_views(x, tta))
        logits_all.append(logits.float().cpu())
        labels_all.append(y.cpu())
    model.train(was_training)
    if not logits_all:
        return EvalResult(float("nan"), float("nan"), torch.empty(0, 0), torch.empty(0, dtype=torch.long))
    logits, labels = torch.cat(logits_all), torch.cat(labels_all)
    loss = F.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return EvalResult(loss, accuracy, logits, labels)
