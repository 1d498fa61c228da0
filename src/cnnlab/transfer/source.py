"""Way 1, transfer from a cnnlab run: the source run's network with a new classifier; and a fine-tuning run's
head initialized from a features run (--head-from). Both read finished run directories, checked first."""

from __future__ import annotations

import copy

from torch import nn

from ..config import Config
from ..errors import UserError
from ..models import surgery


def _source(run_dir: str):
    from .. import config as config_mod
    from .. import runs

    run = runs.RunDir(run_dir)
    if not run.exists(runs.CONFIG) or not run.exists(runs.BEST):
        raise UserError(f"--from {run_dir} is not a trained cnnlab run directory (it needs {runs.CONFIG} and "
                        f"{runs.BEST}); pass the --out folder of a finished cnnlab train run")
    return run, config_mod.resolve(run / runs.CONFIG), runs.RunMeta.of_run(run)


def source_metadata(run_dir: str):
    """The source run's RunMeta: classes, image shape, normalization."""
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
    model = models.create_for(source.model.name, source.model.args, len(meta.classes), meta.image_shape)
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
    run_classes = list(runs.RunMeta.of_run(run).classes)
    if run_classes != list(classes):
        raise UserError(f"--head-from {run_dir} was trained on classes {', '.join(run_classes)}, this data has "
                        f"{', '.join(classes)}; use a features run of the same dataset")
    surgery.head(model).load_state_dict(run.load_weights(runs.BEST))
