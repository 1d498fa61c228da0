"""Image classification runs, the API behind `cnnlab train / features / finetune / transfer / evaluate / predict`.

- building.py: a run's parts from its config (data, model, batches, optimizer, trainer);
- training.py: `train(cfg)`, through the run session (engine/run.py) and the one Trainer;
- inference.py: `evaluate(run_dir)`, `predict_images(run_dir, images)` on finished runs.
"""

from ..engine.run import Interrupted
from .building import build_model, build_trainer, check_names, effective_optim, make_batches, prepared_model
from .inference import evaluate, load_run_model, match_classes, predict_images, write_evaluation
from .training import RunResult, plan_budget, train

__all__ = ["Interrupted", "RunResult", "build_model", "build_trainer", "check_names", "effective_optim", "evaluate",
           "load_run_model", "make_batches", "match_classes", "plan_budget", "predict_images", "prepared_model",
           "train", "write_evaluation"]
