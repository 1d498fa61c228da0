"""Weight averaging that feeds back into training: lookahead (airbench's variant).

(A plain exponential moving average that is only *evaluated* is the Trainer's ``ema`` option, built on
torch.optim.swa_utils.AveragedModel.)
"""

from __future__ import annotations

import torch

from ..config import LookaheadConfig
from .loop import Callback


class Lookahead(Callback):
    """Every `every` steps after `start_epochs`: average <- lerp(average, weights, 1 - rho); weights <- average.

    rho = decay_base**every * progress**decay_pow rises from 0 to decay_base**every over training: the
    weights move freely early on and are averaged strongly at the end. Buffers (BN statistics) are averaged
    too. At each epoch end the weights are set to the average, so validation and checkpoints see it.
    """

    def __init__(self, cfg: LookaheadConfig, steps_per_epoch: int):
        self.cfg = cfg
        self.start_step = int(cfg.start_epochs * steps_per_epoch)
        self.average: list[torch.Tensor] | None = None

    def _tensors(self, trainer) -> list[torch.Tensor]:
        return [t for t in trainer.model.state_dict().values() if t.is_floating_point()]

    @torch.no_grad()
    def on_step_end(self, trainer) -> None:
        step = trainer.schedule.step_count
        if step < self.start_step or step % self.cfg.every:
            return
        current = self._tensors(trainer)
        if self.average is None:
            self.average = [t.detach().clone() for t in current]
            return
        progress = step / trainer.schedule.total_steps
        rho = self.cfg.decay_base ** self.cfg.every * progress ** self.cfg.decay_pow
        for avg, cur in zip(self.average, current):
            avg.lerp_(cur, 1 - rho)
            cur.copy_(avg)

    def on_fit_start(self, trainer) -> None:
        """On resume at an epoch boundary the weights equal the average: restart it from them."""
        first = -(-self.start_step // self.cfg.every) * self.cfg.every
        step = trainer.schedule.step_count
        if self.average is None and step >= max(first, 1):
            self.average = [t.detach().clone() for t in self._tensors(trainer)]

    @torch.no_grad()
    def on_train_epoch_end(self, trainer) -> None:
        if self.average is not None:
            for avg, cur in zip(self.average, self._tensors(trainer)):
                cur.copy_(avg)
