"""The style network's slim options (depthwise-separable residual blocks, smaller first/last kernels, a third
stride-2 stage): saved networks rebuild from their metadata, older files rebuild as the paper's network, any
size comes back at its own size, bad values are one-line errors, and apply's bf16 path stays close to fp32."""

from __future__ import annotations

import json

import pytest
import torch

from cnnlab import style
from cnnlab.errors import UserError
from cnnlab.runs import RunDir
from cnnlab.style.train import WEIGHTS_KIND
from cnnlab.style.transformer import MIN_SIDE, TransformNet
from conftest import SHARED_DATA
from test_bad_input import assert_one_line_error
from test_bad_input import run as run_cli

PHOTOS, STYLES, SCENES = SHARED_DATA / "images" / "photos", SHARED_DATA / "images" / "styles", SHARED_DATA / "scenes6"
SLIM = [{"separable": True}, {"edge_kernel": 5}, {"edge_kernel": 3}, {"downsamples": 3},
        {"separable": True, "edge_kernel": 3, "downsamples": 3}]


def _random(**arguments) -> TransformNet:
    """A network whose instance norms' scale and shift are away from 1 and 0 (so every weight matters)."""
    torch.manual_seed(0)
    net = TransformNet(**arguments).eval()
    for module in net.modules():
        if isinstance(module, torch.nn.InstanceNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    return net


def _save(folder, state: dict, arguments: dict):
    """A weights file as `stylize train` writes it."""
    run = RunDir(folder).create()
    run.save_weights(state, metadata={"kind": WEIGHTS_KIND, "arguments": json.dumps(arguments), "style": "x.jpg",
                                      "loss_net": "efficientnet_lite0", "image_size": "64"})
    return run.path


@pytest.mark.parametrize("options", SLIM, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_each_slim_option_round_trips_through_load_network(options, tmp_path):
    net = _random(width=4, residual_blocks=2, **options)
    assert net.arguments() == {"width": 4, "residual_blocks": 2, "output": "sigmoid", **options}
    path = _save(tmp_path / "net", net.state_dict(), net.arguments())
    loaded, _ = style.load_network(path)
    assert loaded.arguments() == net.arguments()
    x = torch.rand(1, 3, 37, 50)
    with torch.no_grad():
        assert torch.equal(loaded(x), net(x))


def test_the_options_change_the_layers():
    paper = dict(_random(width=4, residual_blocks=1).named_parameters())
    separable = dict(_random(width=4, residual_blocks=1, separable=True).named_parameters())
    assert separable["res.0.body.0.1.weight"].shape == (16, 1, 3, 3)  # depthwise 3x3
    assert separable["res.0.body.0.2.weight"].shape == (16, 16, 1, 1)  # pointwise 1x1
    assert paper["res.0.body.0.1.weight"].shape == (16, 16, 3, 3)
    small = dict(_random(width=4, residual_blocks=1, edge_kernel=3).named_parameters())
    assert small["down.0.1.weight"].shape == (4, 3, 3, 3) and small["up.6.1.weight"].shape == (3, 4, 3, 3)
    deep = _random(width=4, residual_blocks=1, downsamples=3)
    strides = [m.stride[0] for m in deep.down.modules() if isinstance(m, torch.nn.Conv2d)]
    assert strides == [1, 2, 2, 2]
    assert sum(p.numel() for p in separable.values()) < sum(p.numel() for p in paper.values())


def test_old_metadata_without_the_new_keys_loads_the_papers_network(tmp_path):
    """A file written before the options: its metadata names width and residual blocks only."""
    w = 4
    old_shapes = {"down.0.1.weight": (w, 3, 9, 9), "down.3.1.weight": (2 * w, w, 3, 3),
                  "down.6.1.weight": (4 * w, 2 * w, 3, 3), "res.0.body.0.1.weight": (4 * w, 4 * w, 3, 3),
                  "up.0.conv.1.weight": (2 * w, 4 * w, 3, 3), "up.6.1.weight": (3, w, 9, 9)}
    state = _random(width=w, residual_blocks=1).state_dict()
    assert len(state) == 30 and all(tuple(state[k].shape) == shape for k, shape in old_shapes.items())
    path = _save(tmp_path / "old", state, {"width": w, "residual_blocks": 1})
    loaded, _ = style.load_network(path)  # loads strictly: every weight of the old layout fits
    assert loaded.arguments() == {"width": w, "residual_blocks": 1, "output": "linear"}  # as it was built
    assert (loaded.separable, loaded.edge_kernel, loaded.downsamples) == (False, 9, 2)


@pytest.mark.parametrize("size", [(16, 16), (17, 33), (23, 16), (37, 50), (61, 45)])
def test_odd_sizes_come_back_at_their_size_with_the_third_stride_stage(size):
    net = _random(width=4, residual_blocks=1, separable=True, edge_kernel=5, downsamples=3)
    with torch.no_grad():
        assert net(torch.rand(2, 3, *size)).shape == (2, 3, *size)
    with pytest.raises(UserError, match=str(MIN_SIDE)):
        net(torch.rand(1, 3, MIN_SIDE - 1, 40))


@pytest.mark.parametrize("flag, value", [("--edge-kernel", "4"), ("--downsamples", "4")])
def test_bad_slim_values_are_one_line_errors(flag, value, tmp_path, capsys):
    code, _, err = run_cli(["stylize", "train", "--style", STYLES / "starry_night.jpg", "--content-dir",
                            SCENES / "train", flag, value, "--out", tmp_path / "run"], capsys)
    assert_one_line_error(code, err, flag, value)
    assert not (tmp_path / "run" / "style.json").exists()


def test_the_flags_reach_the_trained_network(tmp_path, capsys):
    code, _, err = run_cli(["stylize", "train", "--style", STYLES / "starry_night.jpg", "--content-dir",
                            SCENES / "train", "--image-size", "32", "--style-size", "32", "--batch-size", "2",
                            "--iterations", "2", "--width", "4", "--residual-blocks", "1", "--limit-images", "4",
                            "--loss-net", "efficientnet_lite0", "--separable", "--edge-kernel", "3",
                            "--downsamples", "3", "--out", tmp_path / "run", "--no-progress"], capsys)
    assert code == 0, err
    model, meta = style.load_network(tmp_path / "run")
    expected = {"width": 4, "residual_blocks": 1, "output": "sigmoid", "separable": True, "edge_kernel": 3,
                "downsamples": 3}
    assert model.arguments() == expected and json.loads(meta["arguments"]) == expected
    assert json.loads((tmp_path / "run" / "style.json").read_text())["edge_kernel"] == 3


def test_apply_in_bf16_stays_close_to_fp32():
    """bf16 runs as bf16 weights (not autocast): the network really computes in bf16, within bf16's rounding."""
    from cnnlab.data.images import read_image
    from cnnlab.style.apply import Stylizer

    photo = read_image(PHOTOS / "coffee.png")[None]
    fp32 = Stylizer(_random(width=8, residual_blocks=1), torch.device("cpu"), "fp32")(photo)
    bf16_stylizer = Stylizer(_random(width=8, residual_blocks=1), torch.device("cpu"), "bf16")
    bf16 = bf16_stylizer(photo)
    assert next(bf16_stylizer.model.parameters()).dtype == torch.bfloat16
    assert bf16.dtype == torch.uint8 and bf16.shape == photo.shape
    diff = (bf16.float() - fp32.float()).abs()
    assert 0 < diff.mean() < 2 and (fp32.float() - photo.float()).abs().mean() > 10
