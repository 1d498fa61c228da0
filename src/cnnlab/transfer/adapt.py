"""Preparing a network to adapt to new data: what trains (frozen layers, the head first when there are two
stages) and at which learning rate (the head at the run's rate, the backbone at a fraction of it). The cuts
and freezing themselves are models/surgery.py's."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..config import Config
from ..engine import Callback
from ..models import surgery


def parameter_groups(model: nn.Module, cfg: Config, lr: float) -> list[dict[str, Any]]:
    """Optimizer groups: the head at lr, the backbone layers that may train (now or in stage two) at
    lr x transfer.backbone_lr_factor. Layers frozen for the whole run are left out."""
    head = surgery.head_name(model)
    layers = set(surgery.trainable_layers(model, cfg.transfer.trainable)) - {head}
    modules = dict(model.named_modules())
    backbone = [p for name in surgery.parameterised_layers(model) if name in layers
                for p in modules[name].parameters(recurse=False)]
    groups = [{"params": list(modules[head].parameters(recurse=False)), "lr": lr}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * cfg.transfer.backbone_lr_factor})
    return groups


class StageTwo(Callback):
    """After `epochs` epochs of the head alone, the layers of `spec` join (at that step, mid-epoch if need be)."""

    def __init__(self, model: nn.Module, spec: str, epochs: float, keep_bn_statistics: bool = False):
        self.model, self.spec, self.epochs, self.keep_bn_statistics = model, spec, epochs, keep_bn_statistics
        self.started = False

    def _check(self, trainer) -> None:
        if not self.started and trainer.schedule.step_count >= round(self.epochs * trainer.schedule.steps_per_epoch):
            surgery.set_trainable(self.model, self.spec, self.keep_bn_statistics)
            self.started = True
            trainer.trainable_parameters_changed()  # under torchrun: DDP built again

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self._check(trainer)

    def on_step_end(self, trainer) -> None:
        self._check(trainer)


def prepare(model: nn.Module, cfg: Config) -> list[Callback]:
    """Freeze per the config (the head alone first when there are two stages); the stage callback if any."""
    x = cfg.transfer
    keep = x.bn_statistics == "frozen"
    if x.head_epochs:
        surgery.set_trainable(model, "head", keep)
        return [StageTwo(model, x.trainable, x.head_epochs, keep)]
    surgery.set_trainable(model, x.trainable, keep)
    return []
