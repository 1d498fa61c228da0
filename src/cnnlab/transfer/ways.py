"""Which of the course's ways a run is, read from its config's ``transfer`` section (see transfer/__init__.py):
the one place that decides, so that training, reports and comparisons agree."""

from __future__ import annotations

from ..config import Config


def is_transfer(cfg: Config) -> bool:
    """Whether the run adapts a trained network (rather than training one from its initialization)."""
    x = cfg.transfer
    return bool(x.from_run or x.features or x.trainable != "all" or x.head_epochs or x.backbone_lr_factor != 1.0
                or x.bn_statistics != "update" or x.head_from)


def adapts_network(cfg: Config) -> bool:
    """Whether the run trains a cut or partly frozen network (transfer from a run, fine-tuning), as opposed to
    a classifier on cached features or a network trained whole from its initialization."""
    return is_transfer(cfg) and not cfg.transfer.features


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
