"""Datasets as in-memory uint8 tensors with a seeded validation split.

``load(cfg.data, seed)`` returns a :class:`ClassificationData`; datasets register a loader in
``DATASETS`` by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import DataConfig
from ..errors import UserError, unknown_name
from . import cifar10

DEFAULT_ROOT = "~/.cache/cnnlab"


@dataclass
class ClassificationData:
    """Train/val/test splits as uint8 image tensors [N, C, H, W] and int64 labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    checksum: str = ""
    source: str = ""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])  # type: ignore[return-value]


def data_root(explicit: str | None = None) -> Path:
    """--data-root / config value, else $CNNLAB_DATA, else ~/.cache/cnnlab."""
    root = explicit or os.environ.get("CNNLAB_DATA") or DEFAULT_ROOT
    return Path(root).expanduser()


def _load_cifar10(cfg: DataConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    train_x, train_y, test_x, test_y, folder = cifar10.load(data_root(cfg.root), cfg.download)
    meta = dict(classes=list(cifar10.CLASSES), mean=cifar10.MEAN, std=cifar10.STD,
                checksum=cifar10.fingerprint(folder), source=str(folder))
    return train_x, train_y, test_x, test_y, meta


DATASETS: dict[str, Callable[[DataConfig], tuple]] = {"cifar10": _load_cifar10}


def check_dataset(cfg: DataConfig) -> None:
    """UserError for an unknown dataset name, naming the valid ones."""
    if cfg.dataset not in DATASETS:
        raise unknown_name("dataset", cfg.dataset, DATASETS)


def load(cfg: DataConfig) -> ClassificationData:
    """Load the configured dataset, carve the validation split, apply limit_train."""
    from .splits import stratified_split

    train_x, train_y, test_x, test_y, meta = DATASETS[cfg.dataset](cfg)
    if cfg.val_size >= len(train_y):
        raise UserError(f"config field 'data.val_size' ({cfg.val_size}) must be smaller than the "
                        f"{len(train_y)} training images")
    train_idx, val_idx = stratified_split(train_y, cfg.val_size, cfg.split_seed)
    if cfg.limit_train is not None:
        train_idx = train_idx[: cfg.limit_train]
    return ClassificationData(train_x[train_idx], train_y[train_idx], train_x[val_idx], train_y[val_idx],
                              test_x, test_y, **meta)
