"""The fast recipe's mechanics on small data: whitening, frozen parts, lookahead, Muon, the configs."""

from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab import config, models, train
from cnnlab.config import LookaheadConfig, OptimConfig, ScheduleConfig
from cnnlab.engine import Trainer
from cnnlab.engine.averaging import Lookahead
from cnnlab.engine.optim import LrSchedule, MuonWithAuxSGD, build_optimizer, orthogonalize
from cnnlab.models.fast import whitening_filters

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def correlated_images(n=400, seed=0):
    """uint8 images with strongly correlated neighbouring pixels and colour channels."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 8, 8, generator=g)
    x = torch.nn.functional.interpolate(base, size=32, mode="bilinear", align_corners=False)
    x = torch.cat([x, 0.8 * x + 0.2 * torch.rand(n, 1, 32, 32, generator=g), x.flip(-1)], 1)
    return (x * 255).to(torch.uint8)


def test_whitening_is_computed_from_data_and_decorrelates_patches():
    images = correlated_images()
    x = images.float() / 255
    mean, std = x.mean((0, 2, 3)).tolist(), x.std((0, 2, 3)).tolist()
    model = models.create("fastnet", widths=[8, 16, 16])
    before = model.whiten.weight.clone()
    model.fit_to_data(images, mean, std)
    assert not torch.equal(before, model.whiten.weight) and bool(model.whitened)
    assert not model.whiten.weight.requires_grad  # frozen
    # the first 12 filters map 2x2 patches to coordinates with identity covariance
    xn = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    out = torch.nn.functional.conv2d(xn, model.whiten.weight[:12])
    flat = out.permute(1, 0, 2, 3).reshape(12, -1)
    cov = flat @ flat.T / flat.shape[1]
    off_diagonal = cov - torch.diag(cov.diag())
    assert off_diagonal.abs().max() < 1e-3  # decorrelated
    # unit variance, except where an eigenvalue is comparable to eps (5e-4), which damps the noisiest directions
    assert ((cov.diag() > 0.8) & (cov.diag() < 1.01)).all(), cov.diag()
    assert (cov.diag()[:6] > 0.99).all()
    # and the last 12 are their negatives (both signs survive the GELU)
    assert torch.equal(model.whiten.weight[12:], -model.whiten.weight[:12])


def test_whitening_filters_of_white_noise_are_near_identity_scale():
    noise = torch.randn(200, 3, 16, 16)
    f = whitening_filters(noise, 2, eps=0.0)
    assert f.shape == (24, 3, 2, 2)
    # for white noise every eigenvalue is ~1, so every filter has unit norm
    assert torch.allclose(f[:12].flatten(1).norm(dim=1), torch.ones(12), atol=0.1)


def test_fastnet_shapes_groups_and_frozen_bn_scale():
    model = models.create("fastnet", widths=[16, 32, 32], num_classes=7)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 6 and not any(b.weight.requires_grad for b in bns)
    groups = model.parameter_groups(OptimConfig(lr=0.5, weight_decay=1e-3))
    assert groups[0]["lr"] == 32.0 and groups[0]["weight_decay"] == pytest.approx(1e-3 / 64)
    grouped = {id(p) for g in groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert grouped == trainable  # every trainable parameter in exactly one group
    # dirac init: the first conv of each group starts as an identity on its input channels
    conv = model.features.group2.conv1.weight
    assert torch.equal(conv[:16, :, 1, 1], torch.eye(16))


def make(model, lr=0.1, steps=10, **cfg):
    opt = build_optimizer(model, OptimConfig(lr=lr, momentum=0.9, nesterov=True, **cfg))
    sched = LrSchedule(opt, ScheduleConfig(), steps_per_epoch=steps, total_steps=100)
    return Trainer(model, opt, sched, device=torch.device("cpu"))


def test_lookahead_pulls_weights_into_their_average():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    trainer = make(model)
    la = Lookahead(LookaheadConfig(every=2, start_epochs=0, decay_base=0.9, decay_pow=0), steps_per_epoch=10)
    trainer.schedule.step_count = 2
    la.on_step_end(trainer)  # first trigger: the average starts at the weights
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight += 1.0  # pretend the optimizer moved the weights
    trainer.schedule.step_count = 4
    la.on_step_end(trainer)
    rho = 0.9 ** 2
    expected = start * rho + (start + 1.0) * (1 - rho)
    assert torch.allclose(model.weight, expected)  # weights replaced by the updated average
    assert torch.allclose(la.average[0], expected)
    trainer.schedule.step_count = 5  # not a multiple of `every`: nothing happens
    with torch.no_grad():
        model.weight += 5.0
    la.on_step_end(trainer)
    assert torch.allclose(model.weight, expected + 5.0)
    la.on_train_epoch_end(trainer)  # epoch end: weights := average
    assert torch.allclose(model.weight, expected)


@pytest.mark.parametrize("channels_last", [False, True])
def test_muon_steps_each_conv_filter_by_the_orthogonalized_gradient_matrix(channels_last):
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, bias=True)
    if channels_last:
        conv = conv.to(memory_format=torch.channels_last)
    opt = build_optimizer(conv, OptimConfig(name="muon", lr=0.1, muon_lr=0.05, momentum=0.0, muon_momentum=0.0,
                                            muon_ns_steps=5))
    assert isinstance(opt, MuonWithAuxSGD) and [g["muon"] for g in opt.param_groups] == [True, False]
    before_w, before_b = conv.weight.detach().clone(), conv.bias.detach().clone()
    conv(torch.randn(4, 8, 10, 10)).square().mean().backward()
    grad_w, grad_b = conv.weight.grad.clone(), conv.bias.grad.clone()
    opt.step()
    # Element by element (not only its singular values, which a permutation of columns would keep): the
    # step is lr x NS(gradient as [out, in*kh*kw] in the logical order), reshaped back to the filter bank.
    expected = 0.05 * orthogonalize(grad_w.contiguous().reshape(16, -1), 5).reshape(16, 8, 3, 3)
    assert torch.allclose(before_w - conv.weight.detach(), expected, atol=1e-6)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last  # layout kept
    assert torch.allclose(before_b - conv.bias.detach(), 0.1 * grad_b)  # the bias: a plain SGD step
    # Newton-Schulz flattens the spectrum: singular values of similar size, unlike the gradient's
    singular = torch.linalg.svdvals(expected.reshape(16, -1) / 0.05)
    assert singular.max() < 1.6 and singular.min() > 0.3, singular
    opt.zero_grad()
    assert conv.weight.grad is None


def test_muon_orthogonalizes_in_the_runs_precision():
    conv = nn.Conv2d(4, 8, 3)
    cfg = OptimConfig(name="muon", lr=0.1, muon_lr=0.05)
    assert build_optimizer(conv, cfg, precision="fp32").ns_dtype == torch.float32
    assert build_optimizer(conv, cfg, precision="bf16").ns_dtype == torch.bfloat16
    g = torch.randn(8, 36)
    assert torch.allclose(orthogonalize(g, 5, torch.bfloat16), orthogonalize(g, 5), atol=0.05)


def test_a_schedule_keeps_driving_muon_after_a_resume():
    """The bug of the first Muon wrapper: after load_state_dict the schedule wrote into dicts no optimizer
    read, so a resumed fast run kept its checkpointed learning rate."""
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8 * 6 * 6, 2))
        opt = build_optimizer(model, OptimConfig(name="muon", lr=0.1, muon_lr=0.05, momentum=0.9))
        sched = LrSchedule(opt, ScheduleConfig(name="linear", final_factor=0.0), steps_per_epoch=10,
                           total_steps=11)
        return model, opt, sched

    model, opt, sched = make()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 0, 1])
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    model2, opt2, sched2 = make()
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    for _ in range(5):
        sched2.step()
    assert sched2.factor(sched2.step_count) == pytest.approx(0.2)
    lrs = sorted({g["lr"] for g in opt2.param_groups})
    assert lrs == pytest.approx([0.05 * 0.2, 0.1 * 0.2])  # both kinds of group follow the schedule
    assert all("momentum_buffer" in opt2.state[p] for p in model2.parameters())  # state restored too


@pytest.mark.parametrize("recipe", ["fast94-sgd", "fast94"])
def test_fast_recipe_trains_end_to_end(recipe, fake_cifar_root, tmp_path):
    """The recipes on the small fake data with a small width: every mechanism runs together
    (SGD + lookahead; Muon + progressive resizing)."""
    cfg = config.resolve(CONFIGS / f"{recipe}.yaml", {
        "data.root": str(fake_cifar_root), "data.download": False, "model.widths": [8, 16, 16],
        "train.epochs": 12, "train.batch_size": 50, "train.lookahead.start_epochs": 3,
        "model.whiten_bias_epochs": 2, "train.progress": False, "out": str(tmp_path / "fast")})
    result = train(cfg)
    assert result.summary["test_accuracy"] > 0.5 and result.summary["val_images"] == 0
    assert result.summary["tta"] == "flip_translate"
    assert result.summary["precision"] in ("fp32", "bf16") and result.summary["cpu_capability"]


def test_fast_configs_resolve_and_leave_precision_to_the_hardware():
    for name in ("fast89", "fast93", "fast94", "fast94-sgd", "fast94-muon"):
        cfg = config.resolve(CONFIGS / f"{name}.yaml")
        assert cfg.model.name == "fastnet" and cfg.data.val_size == 0
        assert cfg.train.precision == "auto" and cfg.train.channels_last == "auto"
