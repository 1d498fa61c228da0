"""Building a classifier run's parts from its config: names checked, data, model, batches, optimizer, trainer.

Training (training.py) and the time budget's calibration (training.plan_budget) build the same parts here,
so a calibrated step is the step the run will take. A features run trains a linear classifier on a
backbone's cached features: `is_features(cfg)` is the one question the other parts ask about it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .. import data as data_mod
from .. import models, runs, transfer
from ..config import Config
from ..data.augment import BatchAugment
from ..data.loader import TensorBatches
from ..engine import Callback, Trainer, distributed
from ..engine.device import Execution, memory_format
from ..engine.optim import LrSchedule, build_optimizer
from ..engine.optim import check_names as check_optim_names
from ..data.preprocess import Preprocess
from ..transfer import features as transfer_features


def is_features(cfg: Config) -> bool:
    """A features run: its tensors are a backbone's feature vectors, not images (no normalization,
    augmentation, image layout or test-time augmentation)."""
    return bool(cfg.transfer.features)


def check_names(cfg: Config) -> None:
    """Every name in the config is known to its registry (dataset, model and its arguments, optimizer,
    schedule); each registry checks its own names, with the closest valid one in the error."""
    data_mod.check_dataset(cfg.data)
    models.check_arguments(cfg.model.name, cfg.model.args)
    check_optim_names(cfg.optim, cfg.schedule)


def build_model(cfg: Config, data: data_mod.ClassificationData | None = None, num_classes: int | None = None,
                image_shape: tuple[int, int, int] | None = None) -> nn.Module:
    """The configured model; class count and input shape come from the data unless the config sets them."""
    if data is not None:
        num_classes, image_shape = len(data.classes), data.image_shape
    return models.create_for(cfg.model.name, cfg.model.args, num_classes, image_shape)


def make_batches(cfg: Config, data: data_mod.ClassificationData, device: torch.device,
                 channels_last: bool) -> tuple[TensorBatches, ...]:
    """(train, val, test) batch iterables on the device; train.batch_size is the global batch (torchrun).

    For a features run the tensors are feature vectors: no normalization, augmentation or image layout."""
    t = cfg.train
    images = not is_features(cfg)
    common = dict(mean=data.mean, std=data.std, device=device, channels_last=channels_last and images,
                  normalize=images)
    augment = BatchAugment(cfg.data.augment, data.image_shape[-1], seed=t.seed) if images else None
    train = TensorBatches(data.train_images, data.train_labels, t.batch_size, shuffle=True, seed=t.seed,
                          augment=augment,
                          rank=distributed.rank(), world_size=distributed.world_size(),
                          low_res=(cfg.data.low_res_size, cfg.data.low_res_epochs), **common)
    val = TensorBatches(data.val_images, data.val_labels, t.eval_batch_size, **common)
    test = TensorBatches(data.test_images, data.test_labels, t.eval_batch_size, **common)
    return train, val, test


def effective_optim(cfg: Config):
    """The optimizer settings with lr scaled to the batch size when the recipe gives lr per lr_batch_size.

    train.batch_size is the global batch (all torchrun processes together), so the lr does not change
    with the number of processes."""
    o = cfg.optim
    if o.lr_batch_size is None:
        return o
    return dataclasses.replace(o, lr=o.lr * cfg.train.batch_size / o.lr_batch_size)


def build_trainer(cfg: Config, model: nn.Module, train_batches: TensorBatches, execution: Execution,
                  device: torch.device, total_steps: int, **extra: Any) -> Trainer:
    """Optimizer, schedule and Trainer for `model` (used by training and by the budget's calibration)."""
    t = cfg.train
    optim = effective_optim(cfg)
    groups = transfer.parameter_groups(model, cfg, optim.lr) if transfer.adapts_network(cfg) else None
    optimizer = build_optimizer(model, optim, execution.precision, groups)
    schedule = LrSchedule(optimizer, cfg.schedule, steps_per_epoch=len(train_batches), total_steps=total_steps,
                          keras_decay=cfg.optim.decay)
    return Trainer(model, optimizer, schedule, device=device, precision=execution.precision,
                   channels_last=execution.channels_last, label_smoothing=t.label_smoothing, grad_clip=t.grad_clip,
                   ema_decay=t.ema.decay, ema_every=t.ema.every,
                   ema_start_step=int(t.ema.warmup_epochs * len(train_batches)), tta=t.tta, validate=t.validate,
                   early_stopping=cfg.transfer.early_stopping, **extra)


def image_view(cfg: Config) -> Preprocess | None:
    """How the model wants its photos (folder datasets): a backbone's preprocessing, a source run's
    input size and normalization, or the data's own statistics for a network trained from scratch."""
    if cfg.data.dataset != "folder":
        return None
    if cfg.transfer.from_run:
        return transfer.source_metadata(cfg.transfer.from_run).view()
    return models.preprocessing(cfg.model.name) or Preprocess()  # the name was checked by check_names


def prepared_model(cfg: Config, data: data_mod.ClassificationData, device: torch.device, execution: Execution,
                   load_source: bool = True) -> tuple[nn.Module, list[Callback]]:
    """The seeded model on the device, in the chosen layout, ready to train, and the callbacks it brings:
    fitted to the data where it asks to be; for transfer, cut from its source run (``load_source``: with
    the source's weights; the budget's calibration only needs the shapes) and frozen per the config."""
    torch.manual_seed(cfg.train.seed)
    callbacks: list[Callback] = []
    if is_features(cfg):
        model = nn.Linear(data.train_images.shape[1], len(data.classes))
    elif cfg.transfer.from_run:
        model = transfer.cut_source_run(cfg.transfer.from_run, len(data.classes), load_weights=load_source)
    else:
        model = build_model(cfg, data)
        if cfg.transfer.head_from and load_source:
            transfer.load_head(model, cfg, list(data.classes))
    models.fit_to_data(model, data.train_images, data.mean, data.std)  # e.g. the fast recipe's frozen whitening
    if transfer.adapts_network(cfg):
        callbacks += transfer.prepare(model, cfg)
    model.to(device, memory_format=memory_format(execution.channels_last and not is_features(cfg)))
    torch.manual_seed(cfg.train.seed + distributed.rank())  # dropout differs per rank, weights do not
    return model, callbacks


def load_data(cfg: Config, device: torch.device, execution: Execution
              ) -> tuple[data_mod.ClassificationData, runs.RunMeta, dict[str, Any]]:
    """(the data the model trains on, the RunMeta its weights carry, notes for the summary): images; for a
    features run, the backbone's features of them (extracted once, cached)."""
    data = data_mod.load(cfg.data, image_view(cfg))
    meta, notes = run_meta(data), {"decoded_images": data.decoded_images}
    if is_features(cfg):
        torch.manual_seed(cfg.train.seed)
        backbone = build_model(cfg, data)
        data, info = transfer_features.feature_data(data, backbone, cfg.model.name, cfg.data, device,
                                                    execution.precision, execution.channels_last,
                                                    cfg.transfer.extract_backend)
        notes.update({"feature_cache": info["cache"], "feature_dimensions": info["dimensions"],
                      "feature_backend": info["backend"]})
        if distributed.is_main():
            print(f"features of {cfg.model.name}: {info['dimensions']} per image ({info['cache']} of the feature "
                  f"cache)", flush=True)
    return data, meta, notes


def run_meta(data: data_mod.ClassificationData) -> runs.RunMeta:
    """What the weights file needs to rebuild its model and name its outputs (classes, shape, normalization)."""
    return runs.RunMeta(tuple(data.classes), tuple(data.image_shape), tuple(data.mean), tuple(data.std),
                        resize=data.resize)
