"""Datasets as in-memory uint8 tensors with seeded splits: CIFAR-10, and folders of your own photos.

``load(cfg.data, view)`` returns a :class:`ClassificationData`; datasets register a loader in
``DATASETS`` by name (``cifar10``, ``folder``: see folders.py).
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
from .preprocess import Preprocess

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
    layout: str = "cifar10"
    decoded_images: int = 0
    """Images decoded by this load (0 when they came from the cache)."""
    resize: int | None = None
    """The shorter side photos were resized to before their center crop (folder datasets; None: CIFAR-10)."""
    test_split: str = ""
    """Where the test images come from (a dataset's own split, or carved from train before any choice)."""

    @property
    def has_validation(self) -> bool:
        """Whether there is a validation split to select the best epoch on (else the last epoch is kept)."""
        return len(self.val_labels) > 0

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


def _load_folder(cfg: DataConfig, view: Preprocess | None = None) -> ClassificationData:
    """A dataset of your own photos (data/folders.py), decoded at the model's input size."""
    from . import folders

    index = folders.index_dataset(cfg)
    view = view or Preprocess()
    crop = cfg.image_size or view.crop or 224
    resize = view.resize if (view.resize and not cfg.image_size) else crop
    decoded = folders.load_images(index, cfg, resize, crop)
    images, labels = decoded.images, decoded.labels
    train = images["train"]
    if view.mean is None:  # a model without its own normalization (trained from scratch): the data's statistics
        x = train.float() / 255
        mean, std = tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).clamp(min=1e-3).tolist())
    else:
        mean, std = tuple(view.mean), tuple(view.std)
    return ClassificationData(train, labels["train"], images["val"], labels["val"], images["test"], labels["test"],
                              classes=index.classes, mean=mean, std=std, checksum=decoded.key,
                              source=str(index.root), layout=index.layout, decoded_images=decoded.decoded,
                              resize=resize, test_split=index.split_source("test"))


DATASETS: dict[str, Callable[..., object]] = {"cifar10": _load_cifar10, "folder": _load_folder}


def check_dataset(cfg: DataConfig) -> None:
    """UserError for an unknown dataset name, naming the valid ones."""
    if cfg.dataset not in DATASETS:
        raise unknown_name("dataset", cfg.dataset, DATASETS)


def load(cfg: DataConfig, view: Preprocess | None = None) -> ClassificationData:
    """Load the configured dataset; `view` is how the model wants its images (folder datasets)."""
    if cfg.dataset == "folder":
        return _load_folder(cfg, view)
    return load_cifar10(cfg)


def load_cifar10(cfg: DataConfig) -> ClassificationData:
    """CIFAR-10 with its validation split carved and limit_train applied."""
    from .splits import stratified_split

    train_x, train_y, test_x, test_y, meta = _load_cifar10(cfg)
    if cfg.val_size >= len(train_y):
        raise UserError(f"config field 'data.val_size' ({cfg.val_size}) must be smaller than the "
                        f"{len(train_y)} training images")
    train_idx, val_idx = stratified_split(train_y, cfg.val_size, cfg.split_seed)
    if cfg.limit_train is not None:
        train_idx = train_idx[: cfg.limit_train]
    return ClassificationData(train_x[train_idx], train_y[train_idx], train_x[val_idx], train_y[val_idx],
                              test_x, test_y, **meta, test_split="the official test batch (10,000 images)")
