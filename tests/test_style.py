"""Neural style transfer: the losses against hand-computed values, the loss network, optimization, the CLI.
Fast style networks and `stylize apply`: test_style_network.py."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from cnnlab import style
from cnnlab.data.images import read_image
from cnnlab.errors import UserError
from cnnlab.style import losses, lossnet
from cnnlab.style.optimize import OptimizeSettings, keep_content_colors, resize_longest, stylize
from conftest import SHARED_DATA
from test_bad_input import assert_one_line_error
from test_bad_input import run as run_cli

PHOTOS, STYLES = SHARED_DATA / "images" / "photos", SHARED_DATA / "images" / "styles"


@pytest.fixture(scope="module")
def lite0() -> lossnet.LossNetwork:
    return lossnet.build("efficientnet_lite0")


def test_gram_matrix_by_hand():
    f = torch.tensor([[[[1.0, 2.0], [0.0, 1.0]], [[3.0, 0.0], [1.0, -1.0]]]])  # [1, C=2, H=2, W=2]
    # rows of F: a = (1, 2, 0, 1), b = (3, 0, 1, -1); a·a = 6, a·b = 2, b·b = 11; divided by C·H·W = 8
    expected = torch.tensor([[[6.0, 2.0], [2.0, 11.0]]]) / 8
    assert torch.allclose(losses.gram_matrix(f), expected)


def test_total_variation_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])
    # vertical differences 2, 3 -> mean of squares 6.5; horizontal 1, 2 -> 2.5
    assert losses.total_variation_l2(x).item() == pytest.approx(9.0)
    assert losses.total_variation_l2(torch.ones(1, 3, 5, 5)).item() == 0.0


def test_softmax_smoothing_and_relative_terms():
    flat = torch.full((1, 3, 4, 4), 7.0)
    assert torch.allclose(losses.softmax_smoothing(flat), torch.ones_like(flat))
    peaky = torch.zeros(1, 1, 2, 2)
    peaky[0, 0, 0, 0] = 100.0
    smoothed = losses.softmax_smoothing(peaky)
    assert smoothed.sum().item() == pytest.approx(4.0) and smoothed[0, 0, 0, 0] > 3.9
    t = torch.randn(1, 4, 4)
    assert losses.relative_mse(t, t).item() == 0.0
    assert losses.relative_mse(torch.zeros_like(t), t).item() == pytest.approx(1.0)
    assert losses.relative_mse(3 * t, t).item() == pytest.approx(4.0)


def test_style_mix_is_the_weighted_mean_of_grams():
    a, b = {"l": torch.randn(1, 3, 4, 4)}, {"l": torch.randn(1, 3, 4, 4)}
    mixed = losses.style_targets([a, b], [3.0, 1.0], smooth=False)["l"]
    expected = 0.75 * losses.gram_matrix(a["l"]) + 0.25 * losses.gram_matrix(b["l"])
    assert torch.allclose(mixed, expected, atol=1e-6)


def test_vgg_layer_names_follow_the_papers():
    from torchvision.models import vgg16, vgg19

    names19 = lossnet.vgg_layer_names(vgg19(weights=None).features)
    assert names19["relu1_1"] == "features.1" and names19["relu4_2"] == "features.22"
    assert names19["relu5_1"] == "features.29" and names19["pool1"] == "features.4"
    names16 = lossnet.vgg_layer_names(vgg16(weights=None).features)
    assert names16["relu2_2"] == "features.8" and names16["relu4_3"] == "features.22"


def test_loss_network_captures_its_layers_and_stops_after_the_deepest(lite0):
    ran = []
    hook = lite0.model._conv_head.register_forward_hook(lambda *a: ran.append(True))
    try:
        features = lite0(torch.rand(1, 3, 64, 64))
    finally:
        hook.remove()
    assert set(features) == set(lite0.content_layers) | set(lite0.style_weights)
    assert not ran, "the layers after the deepest requested one must not run"
    assert features["_blocks.0"].shape[-1] == 32 and lite0.choice.relative and not lite0.choice.smooth
    with pytest.raises(UserError, match="has no layer 'nope'"):
        lossnet.build("efficientnet_lite0", content_layers=["nope"])


def test_default_loss_net_is_one_that_works_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch cache: no VGG weights at hand
    monkeypatch.delenv("CNNLAB_STYLE_LOSS_NET", raising=False)
    assert lossnet.default_loss_net() == "efficientnet_lite0"
    fake = tmp_path / "hub" / "checkpoints" / lossnet.VGG_WEIGHT_FILES["vgg19"]
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"")
    assert lossnet.default_loss_net() == "vgg19"


def _photo(size: int = 96) -> torch.Tensor:
    return resize_longest(read_image(PHOTOS / "chelsea.png"), size)[0]


def test_optimize_from_noise_lowers_content_and_style_loss(lite0):
    s = OptimizeSettings(size=64, iterations=25, init="noise", style_weight=10.0, tv_weight=0.0)
    result = stylize(lite0, _photo(), [read_image(STYLES / "starry_night.jpg")], s)
    assert result.final["content_loss"] < 0.7 * result.initial["content_loss"]
    assert result.final["style_loss"] < 0.7 * result.initial["style_loss"]
    assert len(result.history) == 25


def test_optimize_moves_away_from_the_content_unless_content_dominates(lite0):
    content = _photo(64)
    painting = [read_image(STYLES / "the_scream.jpg")]
    styled = stylize(lite0, content, painting, OptimizeSettings(size=64, iterations=20, style_weight=10.0))
    kept = stylize(lite0, content, painting, OptimizeSettings(size=64, iterations=20, style_weight=10.0,
                                                              content_weight=1e4))
    base = resize_longest(content, 64)
    moved, stayed = (styled.image - base).abs().mean().item(), (kept.image - base).abs().mean().item()
    assert moved > 0.02, "the stylized image must differ measurably from the photo"
    assert stayed < moved / 3 and stayed < 0.02, "a huge content weight keeps the photo"
    assert styled.final["style_loss"] < styled.initial["style_loss"]


def test_preserve_colors_keeps_the_photos_chrominance():
    from cnnlab.style.optimize import rgb_to_ycbcr

    content, stylized = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    out = keep_content_colors(stylized, content)
    y_out, y_styl, y_cont = rgb_to_ycbcr(out), rgb_to_ycbcr(stylized), rgb_to_ycbcr(content)
    inside = (out > 0.001).all(1) & (out < 0.999).all(1)  # pixels the [0, 1] clamp did not touch
    assert torch.allclose(y_out[:, 0][inside], y_styl[:, 0][inside], atol=1e-4)
    assert torch.allclose(y_out[:, 1:].permute(1, 0, 2, 3)[:, inside], y_cont[:, 1:].permute(1, 0, 2, 3)[:, inside],
                          atol=1e-4)


def test_style_weights_must_match_the_styles(lite0, tmp_path):
    s = OptimizeSettings(size=32, iterations=1, style_mix=[0.7, 0.3])
    with pytest.raises(UserError, match="2 values for 1 --style images"):
        style.optimize(PHOTOS / "chelsea.png", [STYLES / "starry_night.jpg"], tmp_path / "o", s,
                       loss_net="efficientnet_lite0", progress=False)
    assert not (tmp_path / "o").exists(), "nothing is written before the inputs are checked"


def test_size_beyond_memory_is_refused_with_the_maximum():
    limit = style.max_size("vgg19", torch.device("cpu"))
    with pytest.raises(UserError, match=f"maximum here is about {limit} px"):
        style.check_size(limit + 1, "vgg19", torch.device("cpu"))
    style.check_size(256, "vgg19", torch.device("cpu"))


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_cli_optimize_writes_the_image_and_the_summary_interface(tmp_path):
    out = tmp_path / "st"
    proc = _cli("stylize", "optimize", "--content", PHOTOS / "chelsea.png", "--style", STYLES / "great_wave.jpg",
                "--style", STYLES / "starry_night.jpg", "--style-weights", "0.7,0.3", "--size", 64,
                "--iterations", 8, "--loss-net", "efficientnet_lite0", "--snapshot-every", 4,
                "--content-weights", "0.5,50", "--no-progress", "--out", out)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in ("initial", "final"):
        assert set(summary[key]) >= {"content_loss", "style_loss", "total_loss"}
    assert summary["settings"]["style_mix"] == [0.7, 0.3] and len(summary["runs"]) == 2
    assert summary["loss_net"]["name"] == "efficientnet_lite0" and summary["loss_net"]["weights"] == "imagenet"
    image = read_image(out / "stylized.png")
    assert max(image.shape[1:]) == 64
    for name in ("evolution.png", "content-weights.png", "losses.csv"):
        assert (out / name).is_file(), name
    # the content weight does what it says: the high weight's image stays closer to the photo than the low one's
    photo = resize_longest(read_image(PHOTOS / "chelsea.png"), 64)[0]
    low, high = ((read_image(out / f"stylized-cw{w}.png") / 255 - photo).abs().mean().item() for w in ("0.5", "50"))
    assert torch.equal(read_image(out / "stylized-cw0.5.png"), image)  # stylized.png is the first weight's
    assert high < low / 2, (high, low)


def test_a_loss_network_without_weights_warns_and_the_summary_records_the_weights(tmp_path, capsys):
    s = OptimizeSettings(size=32, iterations=1)
    summary = style.optimize(PHOTOS / "chelsea.png", [STYLES / "the_scream.jpg"], tmp_path / "o", s,
                             loss_net="efficientnet_lite0", weights="none", progress=False)
    err = capsys.readouterr().err
    assert "warning: --weights none" in err and "random weights" in err, err
    assert summary["loss_net"]["weights"] == "none"
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["loss_net"]["weights"] == "none"


def test_pretrained_weights_that_cannot_be_downloaded_are_a_one_line_error(tmp_path, monkeypatch, capsys):
    """No network (the download itself fails) and nothing in torch's cache: a loss network with torchvision
    weights is refused in one line that says what to do, before anything is written."""
    import urllib.error

    from cnnlab import cli

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-cache"))
    monkeypatch.setattr(torch.hub, "urlopen", offline)
    capsys.readouterr()
    code = cli.main(["stylize", "optimize", "--content", str(PHOTOS / "chelsea.png"), "--style",
                     str(STYLES / "the_scream.jpg"), "--loss-net", "vgg16", "--size", "32", "--iterations", "1",
                     "--no-progress", "--out", str(tmp_path / "o")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert "could not download the ImageNet weights of vgg16 (URLError)" in lines[0] and "--weights FILE" in lines[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--style", "STYLES/nothing.jpg"], "does not exist"),
    (["--style", "PHOTOS/COPYRIGHT"], "is not an image file"),
    (["--style", "STYLES/the_scream.jpg", "--style-weights", "1,2"], "2 values for 1 --style images"),
    (["--style", "STYLES/the_scream.jpg", "--style-weights", "a,b"], "must be numbers"),
    (["--style", "STYLES/the_scream.jpg", "--loss-net", "cnn4"], "is not an ImageNet model"),
    (["--style", "STYLES/the_scream.jpg", "--optimizer", "adam", "--lr", "-1"], "--lr must be more than 0"),
    (["--style", "STYLES/the_scream.jpg", "--style-weight", "nan"], "--style-weight must be a finite number"),
])
def test_cli_optimize_bad_input_is_one_line(tmp_path, args, message, capsys):
    """The CLI in this process (cnnlab.cli.main): torch is imported once, not once per case."""
    args = [a.replace("STYLES", str(STYLES)).replace("PHOTOS", str(PHOTOS)) for a in args]
    code, _, err = run_cli(["stylize", "optimize", "--content", PHOTOS / "chelsea.png", *args, "--size", 32,
                            "--iterations", 1, "--out", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "o").exists()
