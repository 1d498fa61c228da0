"""A finished run's network, rebuilt from its folder: config.yaml says what it is, best.safetensors holds its
weights and RunMeta (classes, input shape, normalization).

It lives with the models, below every capability, so that inference, visualization and the web app load
runs the same way without reaching up into the training code.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from .. import config as config_mod
from .. import runs
from ..config import Config
from ..errors import UserError
from . import surgery
from .registry import create_for


def load_trained(run_dir: str | Path, weights: str = "best") -> tuple[nn.Module, Config, runs.RunDir, runs.RunMeta]:
    """(model with the run's weights in eval mode, its config, the run directory, its RunMeta).

    weights: 'best' (best validation epoch) or 'last' (last finished epoch, from the checkpoint). A features
    run comes back whole: the backbone with the trained classifier as its head, so it takes images.
    """
    run = runs.RunDir(run_dir)
    if not run.path.is_dir():
        raise UserError(f"run directory {run} does not exist; pass the --out folder of a cnnlab train run")
    if not run.exists(runs.CONFIG):
        raise UserError(f"{run} has no {runs.CONFIG}; pass the --out folder of a cnnlab train run")
    cfg = config_mod.resolve(run / runs.CONFIG)
    meta = runs.RunMeta.of_run(run)
    state = run.load_checkpoint()["model"] if weights == "last" else run.load_weights(runs.BEST)
    model = create_for(cfg.model.name, cfg.model.args, len(meta.classes), meta.image_shape)
    target = surgery.head(model) if cfg.transfer.features else model
    try:
        target.load_state_dict(state)
    except RuntimeError:
        raise UserError(f"the weights in {run} do not fit the model its config describes; the run directory "
                        f"is damaged or was edited") from None
    return model.eval(), cfg, run, meta
