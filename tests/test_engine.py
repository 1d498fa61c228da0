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
    assert opt.param_groups[0]["lr"] == pytest.approx(1 / (1 + 1e-2 * 50))  # the lr the optimizer reads
    # schedules with an end reach their final factor at the last planned step (index total_steps - 1)
    cos = LrSchedule(torch.optim.SGD([p], lr=2.0), ScheduleConfig(name="cosine", final_factor=0.1),
                     steps_per_epoch=10, total_steps=101)
    assert cos.factor(0) == pytest.approx(1.0) and cos.factor(100) == pytest.approx(0.1)
    assert cos.factor(50) == pytest.approx(0.55) and cos.factor(99) > 0.1
    step = LrSchedule(torch.optim.SGD([p], lr=1.0), ScheduleConfig(name="step", step_epochs=3, gamma=0.5),
                      steps_per_epoch=10, total_steps=100)
    assert [step.factor(i) for i in (0, 29, 30, 60)] == [1.0, 1.0, 0.5, 0.25]
    lin = LrSchedule(torch.optim.SGD([p], lr=1.0), ScheduleConfig(name="linear", warmup_epochs=2, start_factor=0.2),
                     steps_per_epoch=10, total_steps=101)
    assert lin.factor(20) == pytest.approx(1.0) and lin.factor(60) == pytest.approx(0.5)
    assert lin.factor(100) == pytest.approx(0.0) and lin.factor(99) == pytest.approx(1 / 80)
    one = LrSchedule(torch.optim.SGD([p], lr=1.0), ScheduleConfig(name="onecycle"), steps_per_epoch=10,
                     total_steps=100)
    assert one.warmup_steps == 30 and one.factor(30) == pytest.approx(1.0) and one.factor(0) == 0.0
    assert one.factor(99) == pytest.approx(0.0) and one.factor(98) > 0


def test_warmup_ramps_linearly_from_start_factor():
    p = nn.Parameter(torch.zeros(1))
    for cfg in (ScheduleConfig(name="linear", warmup_epochs=1.5, start_factor=0.1, final_factor=0.5),
                ScheduleConfig(name="cosine", warmup_fraction=0.15, start_factor=0.1, final_factor=0.5)):
        s = LrSchedule(torch.optim.SGD([p], lr=3.0), cfg, steps_per_epoch=10, total_steps=100)
        assert s.warmup_steps == 15
        assert [s.factor(i) for i in (0, 5, 10, 15)] == pytest.approx([0.1, 0.4, 0.7, 1.0])
        assert s.factor(99) == pytest.approx(0.5)
        lrs = []
        for _ in range(16):
            lrs.append(s.optimizer.param_groups[0]["lr"])
            s.step()
        assert lrs[0] == pytest.approx(0.3) and lrs[15] == pytest.approx(3.0) and lrs == sorted(lrs)


def test_lr_batch_size_scales_every_group_with_the_batch():
    from cnnlab import config as config_mod
    from cnnlab import models
    from cnnlab.classify import effective_optim

    cfg = config_mod.resolve(None, {"model.name": "fastnet", "model.widths": [8, 16, 16], "optim.name": "sgd",
                                    "optim.lr": 106, "optim.lr_batch_size": 2000, "train.batch_size": 500,
                                    "model.bias_lr_scale": 4, "optim.weight_decay": 0.01})
    o = effective_optim(cfg)
    assert o.lr == pytest.approx(26.5) and cfg.optim.lr == 106  # the config itself is untouched
    model = models.create("fastnet", widths=[8, 16, 16], bias_lr_scale=4)
    opt = build_optimizer(model, o)
    assert opt.param_groups[0]["lr"] == pytest.approx(106.0)  # BN biases: 26.5 x 4
    assert opt.param_groups[2]["lr"] == pytest.approx(26.5)
    cfg.train.batch_size = 1000
    assert effective_optim(cfg).lr == pytest.approx(53.0)


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


def position_sensitive_model():
    """Logits that change when the image is mirrored or shifted (unlike a global average)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))


def test_trainer_predict_applies_the_configured_test_time_views():
    model = position_sensitive_model()
    x = torch.randn(5, 3, 8, 8)
    y = torch.zeros(5, dtype=torch.long)
    batches = [(x, y)]
    opt = build_optimizer(model, OptimConfig(name="sgd", lr=0.1))
    sched = LrSchedule(opt, ScheduleConfig(), steps_per_epoch=1, total_steps=1)
    plain = Trainer(model, opt, sched, device=torch.device("cpu")).predict(batches)
    with torch.no_grad():
        assert torch.allclose(plain.logits, model(x))
        flip = Trainer(model, opt, sched, device=torch.device("cpu"), tta="flip").predict(batches)
        assert torch.allclose(flip.logits, 0.5 * (model(x) + model(x.flip(-1))), atol=1e-6)
        assert not torch.allclose(flip.logits, plain.logits, atol=1e-3)
        full = Trainer(model, opt, sched, device=torch.device("cpu"), tta="flip_translate").predict(batches)
        expected = sum(w * model(v) for v, w in tta_views(x, "flip_translate"))
        assert torch.allclose(full.logits, expected, atol=1e-6)
        assert not torch.allclose(full.logits, flip.logits, atol=1e-3)
