"""Transfer learning on a small dataset of your own, the course's three ways, through the one engine:

1. ``cnnlab transfer --from RUN_DIR --data PATH``: a trained cnnlab (CIFAR) model keeps every layer but its
   classifier, gets a new one for the dataset's classes, and trains it with the rest frozen (``--unfreeze``
   trains everything) on the photos resized to the model's input size.
2. ``cnnlab features --backbone NAME --data PATH``: an ImageNet backbone's pooled features are extracted once
   (cached), and a softmax classifier trains on them in seconds (features.py).
3. ``cnnlab finetune --backbone NAME --data PATH --trainable-layers N``: the last N parameterised layers of a
   pretrained backbone train with a new head, at a low learning rate, optionally with discriminative rates
   (the backbone at lr x factor), reduce-on-plateau, early stopping and augmentation, in one or two stages
   (head first, then the chosen layers).

Each is an ordinary cnnlab run (classify.train with a ``transfer`` config section): same run directory,
same training loop (engine/loop.py), same resume and time budgets. This module prepares the model and its
optimizer groups; models/surgery.py cuts and freezes; data/folders.py reads the photos.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from torch import nn

from ..config import Config
from ..engine import Callback
from ..errors import UserError
from ..models import surgery


def is_transfer(cfg: Config) -> bool:
    """Whether the run adapts a trained network (rather than training one from its initialization)."""
    x = cfg.transfer
    return bool(x.from_run or x.features or x.trainable != "all" or x.head_epochs or x.backbone_lr_factor != 1.0
                or x.bn_statistics != "update" or x.head_from)


def adapts_network(cfg: Config) -> bool:
    """Whether the run trains a cut or partly frozen network (transfer from a run, fine-tuning), as opposed to
    a classifier on cached features or a network trained whole from its initialization."""
    return is_transfer(cfg) and not cfg.transfer.features


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


# ----------------------------------------------------------------------------------------------- way 1: a cnnlab run


def _source(run_dir: str):
    from .. import config as config_mod
    from .. import runs

    run = runs.RunDir(run_dir)
    if not run.exists(runs.CONFIG) or not run.exists(runs.BEST):
        raise UserError(f"--from {run_dir} is not a trained cnnlab run directory (it needs {runs.CONFIG} and "
                        f"{runs.BEST}); pass the --out folder of a finished cnnlab train run")
    return run, config_mod.resolve(run / runs.CONFIG), run.weights_metadata(runs.BEST)


def source_metadata(run_dir: str) -> dict[str, str]:
    """The source run's weights metadata: classes, image shape, normalization."""
    return _source(run_dir)[2]


def adopt_source_model(cfg: Config) -> Config:
    """A transfer from a run trains the source's network: the config's model becomes the source's."""
    if not cfg.transfer.from_run:
        return cfg
    _, source, _ = _source(cfg.transfer.from_run)
    if source.transfer.features:
        raise UserError(f"--from {cfg.transfer.from_run} is a features run (a classifier on feature vectors); "
                        f"transfer from a run that trained a whole network")
    out = copy.deepcopy(cfg)
    out.model = copy.deepcopy(source.model)
    return out


def cut_source_run(run_dir: str, num_classes: int, load_weights: bool = True) -> nn.Module:
    """The source run's network with its best weights and a fresh classifier for `num_classes` classes."""
    from .. import models, runs

    run, source, meta = _source(run_dir)
    model = models.create_for(source.model.name, source.model.args, len(json.loads(meta["classes"])),
                              tuple(json.loads(meta["image_shape"])))
    if load_weights:
        model.load_state_dict(run.load_weights(runs.BEST))
    surgery.replace_head(model, num_classes)
    return model


def load_head(model: nn.Module, cfg: Config, classes: list[str]) -> None:
    """Initialize the classifier from the features run cfg.transfer.head_from: same backbone, same classes in
    the same order, so its softmax classifier fits the backbone's pooled features as they are."""
    from .. import config as config_mod
    from .. import runs

    run_dir = cfg.transfer.head_from
    run = runs.RunDir(run_dir)
    if not run.exists(runs.CONFIG) or not run.exists(runs.BEST):
        raise UserError(f"--head-from {run_dir} is not a finished cnnlab features run (it needs {runs.CONFIG} and "
                        f"{runs.BEST}); pass the --out folder of a cnnlab features run")
    source = config_mod.resolve(run / runs.CONFIG)
    if not source.transfer.features:
        raise UserError(f"--head-from {run_dir} is not a features run; train one with cnnlab features first")
    if source.model.name != cfg.model.name:
        raise UserError(f"--head-from {run_dir} used backbone {source.model.name}, this run {cfg.model.name}; "
                        f"use a features run of the same backbone")
    run_classes = json.loads(run.weights_metadata(runs.BEST)["classes"])
    if run_classes != list(classes):
        raise UserError(f"--head-from {run_dir} was trained on classes {', '.join(run_classes)}, this data has "
                        f"{', '.join(classes)}; use a features run of the same dataset")
    surgery.head(model).load_state_dict(run.load_weights(runs.BEST))


def kind(cfg: Config) -> str:
    """transfer | features | finetune | train: which of the ways a run is (for reports and comparisons)."""
    x = cfg.transfer
    if x.features:
        return "features"
    if x.from_run:
        return "transfer"
    if is_transfer(cfg):
        return "finetune"
    return "train"
