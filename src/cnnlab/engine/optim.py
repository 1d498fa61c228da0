"""Optimizers and learning-rate schedules by name.

All schedules are one per-step multiplier on each parameter group's base learning rate:

    lr(step) = base_lr * warmup(step) * shape(step) * keras_decay(step) * plateau_scale

so any shape combines with warm-up, Keras-style decay (lr / (1 + decay * step), the course's RMSprop
``decay=1e-6``) and reduce-on-plateau without schedulers fighting over ``group['lr']``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..config import OptimConfig, ScheduleConfig

OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw", "muon")
SCHEDULES = ("constant", "step", "cosine", "onecycle", "linear", "plateau")


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """The model's own groups when it defines ``parameter_groups(cfg)`` (e.g. a higher lr for biases),
    else one group of all trainable parameters."""
    if hasattr(model, "parameter_groups"):
        return model.parameter_groups(cfg)
    return [{"params": [p for p in model.parameters() if p.requires_grad]}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """torch.optim optimizer named by cfg.name over the model's parameter groups."""
    groups = parameter_groups(model, cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
    if cfg.name in ("adam", "adamw"):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "muon":
        return MuonWithAuxSGD(groups, cfg)
    raise ValueError(f"unknown optimizer {cfg.name}")  # config validation rejects this earlier


class MuonWithAuxSGD(torch.optim.Optimizer):
    """torch.optim.Muon for matrix-shaped weights, SGD (cfg.momentum, cfg.nesterov) for everything else.

    Muon orthogonalizes each 2-D update. A conv filter bank [out, in, kh, kw] is handed to it as an
    [out, in*kh*kw] *view* (in channels_last layout, [out, kh*kw*in]: a column permutation, which commutes
    with orthogonalization), so its in-place steps land in the conv weight itself. Biases, norms and
    groups marked ``{"muon": False}`` (e.g. a classifier head) go to SGD.
    """

    def __init__(self, groups: list[dict[str, Any]], cfg: OptimConfig):
        muon_groups, sgd_groups = [], []
        for g in groups:
            use_muon = g.get("muon", True)
            extra = {k: v for k, v in g.items() if k not in ("params", "muon")}
            matrix = [p for p in g["params"] if use_muon and p.ndim >= 2]
            other = [p for p in g["params"] if not (use_muon and p.ndim >= 2)]
            if matrix:
                muon_groups.append({**extra, "params": matrix})
            if other:
                sgd_groups.append({**extra, "params": other})
        self.normalize = cfg.muon_normalize
        self._views: list[tuple[torch.Tensor, nn.Parameter]] = []
        muon_lr = cfg.muon_lr or cfg.lr
        self.muon = torch.optim.Muon(
            [{**g, "params": [self._matrix_view(p) for p in g["params"]]} for g in muon_groups], lr=muon_lr,
            momentum=cfg.muon_momentum, nesterov=True, ns_steps=cfg.muon_ns_steps,
            weight_decay=0.0 if cfg.muon_normalize else cfg.weight_decay) if muon_groups else None
        self.sgd = torch.optim.SGD(sgd_groups, lr=cfg.lr, momentum=cfg.momentum,
                                   nesterov=cfg.nesterov and cfg.momentum > 0,
                                   weight_decay=cfg.weight_decay) if sgd_groups else None
        self.optimizers = [o for o in (self.muon, self.sgd) if o is not None]
        # The schedule and checkpoints see the union of both optimizers' groups.
        self.param_groups = [g for o in self.optimizers for g in o.param_groups]
        self.defaults = {"lr": cfg.lr}
        self.state = {}  # type: ignore[assignment]

    @staticmethod
    def _as_matrix(t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 2:
            return t
        if not t.is_contiguous() and t.ndim == 4 and t.is_contiguous(memory_format=torch.channels_last):
            return t.permute(0, 2, 3, 1).reshape(t.shape[0], -1)
        return t.reshape(t.shape[0], -1)

    def _matrix_view(self, p: nn.Parameter) -> torch.Tensor:
        if p.ndim == 2:
            return p
        view = self._as_matrix(p.data)
        if view.data_ptr() != p.data.data_ptr() or view._base is None:
            raise ValueError(f"cannot view a parameter of shape {tuple(p.shape)} as a matrix in place")
        view.requires_grad_(True)
        self._views.append((view, p))
        return view

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for view, p in self._views:
            view.grad = None if p.grad is None else self._as_matrix(p.grad)
        if self.muon is not None and self.normalize:
            for group in self.muon.param_groups:
                for w in group["params"]:
                    w.mul_(w.shape[0] ** 0.5 / w.norm().clamp(min=1e-12))
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True):  # type: ignore[override]
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)
        for view, p in self._views:  # the conv weights' own gradients, which the views only mirror
            view.grad = None
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    def state_dict(self):  # type: ignore[override]
        return {"muon": self.muon.state_dict() if self.muon else None,
                "sgd": self.sgd.state_dict() if self.sgd else None}

    def load_state_dict(self, state):  # type: ignore[override]
        if self.muon:
            self.muon.load_state_dict(state["muon"])
        if self.sgd:
            self.sgd.load_state_dict(state["sgd"])


class LrSchedule:
    """Per-step learning-rate multiplier (see module docstring); ``step()`` after every optimizer step,
    ``epoch_end(metrics)`` after each validation (drives reduce-on-plateau)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, *, steps_per_epoch: int,
                 total_steps: int, keras_decay: float = 0.0):
        self.optimizer, self.cfg = optimizer, cfg
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = max(1, total_steps)
        self.keras_decay = keras_decay
        warmup = cfg.warmup_epochs
        if cfg.name == "onecycle" and warmup == 0:
            warmup = 0.3 * self.total_steps / self.steps_per_epoch  # torch's OneCycleLR default pct_start
        self.warmup_steps = max(int(round(warmup * self.steps_per_epoch)),
                                int(round(cfg.warmup_fraction * self.total_steps)))
        self.step_count = 0
        self.plateau_scale = 1.0
        self.best: float | None = None
        self.bad_epochs = 0
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self._apply()

    def shape(self, step: int) -> float:
        """The schedule's multiplier at `step`, warm-up included, Keras decay and plateau excluded."""
        c = self.cfg
        if step < self.warmup_steps:
            return c.start_factor + (1 - c.start_factor) * step / self.warmup_steps
        if c.name in ("constant", "plateau"):
            return 1.0
        if c.name == "step":
            return c.gamma ** math.floor(step / (c.step_epochs * self.steps_per_epoch))
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        if c.name == "linear":
            return 1 - (1 - c.final_factor) * progress
        # cosine and onecycle: half-cosine from 1 down to final_factor after the warm-up
        return c.final_factor + (1 - c.final_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    def factor(self, step: int) -> float:
        return self.shape(step) / (1 + self.keras_decay * step) * self.plateau_scale

    def _apply(self) -> None:
        f = self.factor(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = max(group["base_lr"] * f, self.cfg.min_lr if self.cfg.name == "plateau" else 0.0)

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    def epoch_end(self, metrics: dict[str, float]) -> bool:
        """Reduce-on-plateau bookkeeping; True when the learning rate was just reduced."""
        if self.cfg.name != "plateau" or self.cfg.monitor not in metrics:
            return False
        value = metrics[self.cfg.monitor]
        if value is None or math.isnan(value):
            return False
        sign = -1.0 if self.cfg.monitor == "val_loss" else 1.0
        if self.best is None or sign * value > sign * self.best + 1e-4 * abs(self.best):
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs > self.cfg.patience:
            self.plateau_scale *= self.cfg.factor
            self.bad_epochs = 0
            self._apply()
            return True
        return False

    @property
    def lr(self) -> float:
        """The configured optim.lr at this step (groups may scale it, e.g. biases x 64)."""
        return self.optimizer.defaults["lr"] * self.factor(self.step_count)

    def state_dict(self) -> dict[str, Any]:
        return {"step_count": self.step_count, "plateau_scale": self.plateau_scale, "best": self.best,
                "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = state["step_count"]
        self.plateau_scale = state["plateau_scale"]
        self.best = state["best"]
        self.bad_epochs = state["bad_epochs"]
        self._apply()
