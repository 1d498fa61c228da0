"""The training engine: learning, schedules, weight averaging, test-time views."""

import math

import pytest
import torch
from torch import nn

from cnnlab.config import OptimConfig, ScheduleConfig
from cnnlab.engine import Trainer
from cnnlab.engine.loop import tta_views
from cnnlab.engine.optim import LrSchedule, build_optimizer


class Batches:
    """Minimal stand-in for TensorBatches over fixed tensors."""

    def __init__(self, x, y, bs):
        self.x, self.y, self.bs = x, y, bs
        self.labels = y

    def __len__(self):
        return math.ceil(len(self.y) / self.bs)

    def epoch(self, e=0, max_batches=None):
        g = torch.Generator().manual_seed(e)
        order = torch.randperm(len(self.y), generator=g)
        for b in range(len(self) if max_batches is None else max_batches):
            i = order[b * self.bs:(b + 1) * self.bs]
            yield self.x[i], self.y[i]

    def __iter__(self):
        return self.epoch(0)


def make_trainer(model, opt="sgd", lr=0.1, epochs=5, steps=4, **kw):
    optim = build_optimizer(model, OptimConfig(name=opt, lr=lr, momentum=0.9))
    sched = LrSchedule(optim, ScheduleConfig(name="constant"), steps_per_epoch=steps, total_steps=steps * epochs)
    return Trainer(model, optim, sched, device=torch.device("cpu"), **kw)


def blobs(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centers = torch.tensor([[2.0, 0], [-2, 0], [0, 2.5]])
    x = centers[y] + 0.5 * torch.randn(n, 2, generator=g)
    return x, y


@pytest.mark.parametrize("opt", ["sgd", "rmsprop", "adam", "adamw"])
def test_engine_lowers_loss_on_a_tiny_problem(opt):
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 3))
    trainer = make_trainer(model, opt=opt, lr=0.05 if opt == "sgd" else 0.01)
    batches = Batches(x, y, 50)
    before = trainer.predict(batches).loss
    state = trainer.fit(batches, batches, [4] * 5)
    after = trainer.predict(batches)
    assert after.loss < 0.5 * before
    assert after.accuracy > 0.9
    assert len(state.history) == 5 and state.best_epoch >= 1


def test_keras_decay_and_schedule_shapes():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    s = LrSchedule(opt, ScheduleConfig(name="constant"), steps_per_epoch=10, total_steps=100, keras_decay=1e-2)
    for _ in range(50):
        s.step()
    assert s.lr == pytest.approx(1 / (1 + 1e-2 * 50))
    cos = LrSchedule(torch.optim.SGD([p], lr=2.0), ScheduleConfig(name="cosine", final_factor=0.1),
                     steps_per_epoch=10, total_steps=100)
    assert cos.factor(0) == pytest.approx(1.0) and cos.factor(100) == pytest.approx(0.1)
    assert cos.factor(50) == pytest.approx(0.55)
    step = LrSchedule(torch.optim.SGD([p], lr=1.0), ScheduleConfig(name="step", step_epochs=3, gamma=0.5),
                      steps_per_epoch=10, total_steps=100)
    assert [step.factor(i) for i in (0, 29, 30, 60)] == [1.0, 1.0, 0.5, 0.25]
    lin = LrSchedule(torch.optim.SGD([p], lr=1.0), ScheduleConfig(name="linear", warmup_epochs=2, start_factor=0.2),
                     steps_per_epoch=10, total_steps=100)
    assert lin.factor(0) == pytest.approx(0.2) and lin.factor(20) == pytest.approx(1.0)
    assert lin.factor(60) == pytest.approx(0.5) and lin.factor(100) == pytest.approx(0.0)
    one = LrSchedule(torch.optim.SGD([p], lr=1.0), ScheduleConfig(name="onecycle"), steps_per_epoch=10,
                     total_steps=100)
    assert one.warmup_steps == 30 and one.factor(30) == pytest.approx(1.0) and one.factor(0) == 0.0


def test_plateau_reduces_after_patience():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    s = LrSchedule(opt, ScheduleConfig(name="plateau", patience=2, factor=0.5, monitor="val_loss"),
                   steps_per_epoch=1, total_steps=10)
    reduced = [s.epoch_end({"val_loss": v}) for v in (1.0, 0.9, 0.95, 0.92, 0.91, 0.5)]
    assert reduced == [False, False, False, False, True, False]
    assert s.lr == 0.5


def test_ema_tracks_the_weights():
    torch.manual_seed(0)
    x, y = blobs()
    model = nn.Sequential(nn.Linear(2, 3))
    trainer = make_trainer(model, ema_decay=0.9)
    trainer.fit(Batches(x, y, 50), None, [4] * 3)
    w, avg = model[0].weight, trainer.eval_model[0].weight
    assert not torch.equal(w, avg)  # an average, not a copy
    assert (w - avg).abs().max() < 0.5 * w.abs().max()  # but close to the weights


def test_tta_views_average_flips_and_shifts():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float).view(2, 3, 4, 4)
    views = tta_views(x, "flip")
    assert len(views) == 2 and torch.equal(views[1][0], x.flip(-1)) and sum(w for _, w in views) == 1
    views = tta_views(x, "flip_translate")
    assert len(views) == 6 and sum(w for _, w in views) == pytest.approx(1)
    assert torch.equal(views[2][0][..., 1:, 1:], x[..., :-1, :-1])  # up-left view: pixels moved down-right
    # a model that is flip-invariant gives the same logits with and without TTA
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    from cnnlab.engine.loop import predict
    plain = predict(model, [(x, torch.zeros(2, dtype=torch.long))], torch.device("cpu"), tta="none")
    flip = predict(model, [(x, torch.zeros(2, dtype=torch.long))], torch.device("cpu"), tta="flip")
    assert torch.allclose(plain.logits, flip.logits)
