"""The training engine: one loop (loop.py), optimizers and schedules (optim.py), metrics, devices."""

from .loop import Callback, EvalResult, FitState, Trainer, TrainingDiverged, predict

__all__ = ["Callback", "EvalResult", "FitState", "Trainer", "TrainingDiverged", "predict"]
