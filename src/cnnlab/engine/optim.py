"""Optimizers and learning-rate schedules by name.

All schedules are one per-step multiplier on each parameter group's base learning rate:

    lr(step) = base_lr * warmup(step) * shape(step) * keras_decay(step) * plateau_scale

`step` counts optimizer steps from 0; schedules with an end (linear, cosine, onecycle) reach their final
factor at the last planned step, total_steps - 1, whatever total_steps is: a time budget (engine/budget.py)
changes total_steps and the whole shape stretches with it. ``step`` decays by epochs, ``constant`` and
``plateau`` have no end; a time budget anneals them (:meth:`LrSchedule.anneal_to_end`: the recipe's lr,
times a decay to final_factor at the last step) unless the config keeps the recipe's schedule
(train.budget_schedule: recipe).

A budget run may also change its length while it trains (engine/pace.py): :meth:`LrSchedule.replan` keeps the
curve continuous (the progress reached so far stays) and lays the rest of it over the new remaining steps, so
it still ends at final_factor at the new last step. The knots of that piecewise progress are part of the
schedule's state, so a resumed run follows the same curve.

so any shape combines with warm-up, Keras-style decay (lr / (1 + decay * step), the course's RMSprop
``decay=1e-6``) and reduce-on-plateau without schedulers fighting over ``group['lr']``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.sgd import sgd

from ..config import OptimConfig, ScheduleConfig
from ..errors import UserError, unknown_name

OPTIMIZERS = ("sgd", "rmsprop", "adam", "adamw", "muon")
SCHEDULES = ("constant", "step", "cosine", "onecycle", "linear", "plateau")
ANNEAL_FORMS = ("linear", "cosine")


def parameter_groups(model: nn.Module, cfg: OptimConfig) -> list[dict[str, Any]]:
    """The model's own groups when it defines ``parameter_groups(cfg)`` (e.g. a higher lr for biases),
    else one group of all trainable parameters."""
    if hasattr(model, "parameter_groups"):
        return model.parameter_groups(cfg)
    return [{"params": [p for p in model.parameters() if p.requires_grad]}]


def check_names(optim: OptimConfig, schedule: ScheduleConfig) -> None:
    """UserError for an unknown optimizer or schedule name, naming the closest valid one."""
    if optim.name not in OPTIMIZERS:
        raise unknown_name("optimizer", optim.name, OPTIMIZERS)
    if schedule.name not in SCHEDULES:
        raise unknown_name("schedule", schedule.name, SCHEDULES)


def build_optimizer(model: nn.Module, cfg: OptimConfig, precision: str = "fp32",
                    groups: list[dict[str, Any]] | None = None) -> torch.optim.Optimizer:
    """torch.optim optimizer named by cfg.name over `groups` (default: the model's parameter groups).

    `precision` is the run's resolved precision: Muon orthogonalizes its updates in bf16 only where the
    hardware computes bf16 natively (the run is bf16), in fp32 elsewhere.
    """
    groups = groups if groups is not None else parameter_groups(model, cfg)
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
        if cfg.muon_lr is None:
            raise UserError("config field 'optim.muon_lr' must be set when optim.name is muon (the learning rate "
                            "of the orthogonalized conv/matrix updates, e.g. 0.24; optim.lr is the SGD part's)")
        return MuonWithAuxSGD(groups, cfg, ns_dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
    raise unknown_name("optimizer", cfg.name, OPTIMIZERS)


# Keller Jordan's quintic Newton-Schulz coefficients (the same as torch.optim.Muon's).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(update: torch.Tensor, steps: int, dtype: torch.dtype = torch.float32,
                  eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T of a matrix's SVD U S V^T: Newton-Schulz, as in torch.optim.Muon.

    Written out rather than taken from torch.optim.Muon because torch 2.14's version always computes in
    bf16: on a CPU without native bf16 that is emulated and took 28 % of a fastnet training step (profiled
    on a 2-core AVX2 CPU); here the dtype follows the run's precision.
    """
    a, b, c = NS_COEFFICIENTS
    x = update.to(dtype)
    transposed = x.size(0) > x.size(1)
    if transposed:
        x = x.T
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return (x.T if transposed else x).to(update.dtype)


def as_matrix(t: torch.Tensor) -> torch.Tensor:
    """[out, in, kh, kw] -> [out, in*kh*kw] in logical order, whatever the memory format (a copy if need be)."""
    return t if t.ndim == 2 else t.reshape(t.shape[0], -1)


class MuonWithAuxSGD(torch.optim.Optimizer):
    """Muon for matrix-shaped weights, Nesterov SGD (cfg.momentum, cfg.nesterov) for everything else.

    One torch optimizer whose groups carry ``muon: True/False``, so ``param_groups``, ``state_dict`` and
    ``load_state_dict`` are torch's own: a schedule that writes ``group['lr']`` keeps working after a resume.
    Muon orthogonalizes each weight's momentum-averaged gradient; a conv filter bank [out, in, kh, kw] is
    handed to it as the [out, in*kh*kw] matrix of its gradient, and the update is reshaped back. Biases,
    norms and groups marked ``{"muon": False}`` (e.g. a classifier head) take SGD steps through
    ``torch.optim.sgd.sgd``. Groups without their own lr start at ``cfg.muon_lr`` (Muon) or ``cfg.lr`` (SGD).
    """

    def __init__(self, groups: list[dict[str, Any]], cfg: OptimConfig, ns_dtype: torch.dtype = torch.float32):
        split: list[dict[str, Any]] = []
        for g in groups:
            use_muon = g.get("muon", True)
            extra = {k: v for k, v in g.items() if k not in ("params", "muon")}
            matrix = [p for p in g["params"] if use_muon and p.ndim >= 2]
            other = [p for p in g["params"] if not (use_muon and p.ndim >= 2)]
            if matrix:
                split.append({"lr": cfg.muon_lr, **extra, "params": matrix, "muon": True})
            if other:
                split.append({"lr": cfg.lr, **extra, "params": other, "muon": False})
        defaults = {"lr": cfg.lr, "momentum": cfg.momentum, "nesterov": cfg.nesterov and cfg.momentum > 0,
                    "weight_decay": cfg.weight_decay, "muon_momentum": cfg.muon_momentum,
                    "ns_steps": cfg.muon_ns_steps, "normalize": cfg.muon_normalize}
        super().__init__(split, defaults)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if group["muon"]:
                self._muon_step(group, params)
            else:
                self._sgd_step(group, params)

    def _muon_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        lr, beta = group["lr"], group["muon_momentum"]
        for p in params:
            if group["normalize"]:  # weight norm sqrt(out) before the step: for layers followed by BN
                p.mul_(p.shape[0] ** 0.5 / p.norm().clamp(min=1e-12))
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = torch.zeros_like(p)
            buf.lerp_(p.grad, 1 - beta)
            update = p.grad.lerp(buf, beta)  # Nesterov, as torch.optim.Muon
            matrix = orthogonalize(as_matrix(update), group["ns_steps"], self.ns_dtype)
            rows, cols = matrix.shape
            if not group["normalize"] and group["weight_decay"]:
                p.mul_(1 - lr * group["weight_decay"])
            p.add_(matrix.reshape(p.shape), alpha=-lr * max(1.0, rows / cols) ** 0.5)

    def _sgd_step(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        buffers = [self.state[p].get("momentum_buffer") for p in params]
        sgd(params, [p.grad for p in params], buffers, weight_decay=group["weight_decay"],
            momentum=group["momentum"], lr=group["lr"], dampening=0.0, nesterov=group["nesterov"], maximize=False)
        if group["momentum"]:
            for p, buf in zip(params, buffers):
                self.state[p]["momentum_buffer"] = buf


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
        self.anneal: str | None = None  # constant/plateau under a time budget: 'linear' or 'cosine' decay
        # (step, progress) knots of the piecewise-linear progress after the warm-up; replan() adds them.
        self.knots: list[tuple[int, float]] = [(self.warmup_steps, 0.0)]
        for group in optimizer.param_groups:
            group.setdefault("base_lr", group["lr"])
        self._apply()

    def anneal_to_end(self, form: str | None) -> None:
        """Give a schedule without an end (constant, plateau) one: its factor times a `form` ('linear' or
        'cosine') decay from 1 after the warm-up to cfg.final_factor at the last step (plateau still reduces
        on validation). The others keep their own shape (they end already, or decay by epochs: step)."""
        if form is not None and form not in ANNEAL_FORMS:
            raise unknown_name("annealing form", form, ANNEAL_FORMS)
        self.anneal = form if self.cfg.name in ("constant", "plateau") else None
        self._apply()

    def progress(self, step: int) -> float:
        """0 at the end of the warm-up, 1 at the last planned step (index total_steps - 1)."""
        knots = self.knots + [(max(self.total_steps - 1, self.knots[-1][0] + 1), 1.0)]
        for (a, pa), (b, pb) in zip(knots, knots[1:]):
            if step < b:
                return min(1.0, max(0.0, pa + (pb - pa) * (step - a) / (b - a)))
        return 1.0

    def replan(self, at_step: int, total_steps: int) -> None:
        """The run now has `total_steps` steps: the curve keeps its value at `at_step` and ends at the new end."""
        if at_step > self.warmup_steps:
            self.knots.append((at_step, self.progress(at_step)))
        self.total_steps = max(1, total_steps)
        self._apply()

    def _decay(self, form: str, progress: float) -> float:
        final = self.cfg.final_factor
        if form == "linear":
            return 1 - (1 - final) * progress
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))  # half-cosine

    def shape(self, step: int) -> float:
        """The schedule's multiplier at `step`, warm-up included, Keras decay and plateau excluded."""
        c = self.cfg
        if step < self.warmup_steps:
            return c.start_factor + (1 - c.start_factor) * step / self.warmup_steps
        if c.name in ("constant", "plateau"):
            return self._decay(self.anneal, self.progress(step)) if self.anneal else 1.0
        if c.name == "step":
            return c.gamma ** math.floor(step / (c.step_epochs * self.steps_per_epoch))
        # The last planned step (index total_steps - 1) trains at exactly the final factor; cosine and
        # onecycle: half-cosine from 1 down to final_factor after the warm-up.
        return self._decay("linear" if c.name == "linear" else "cosine", self.progress(step))

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
                "bad_epochs": self.bad_epochs, "total_steps": self.total_steps,
                "knots": [list(k) for k in self.knots]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = state["step_count"]
        self.plateau_scale = state["plateau_scale"]
        self.best = state["best"]
        self.bad_epochs = state["bad_epochs"]
        self.total_steps = state.get("total_steps", self.total_steps)  # checkpoints before re-planning lack them
        self.knots = [(int(a), float(p)) for a, p in state.get("knots", self.knots)]
        self._apply()
