"""The picture-quality measures of benchmarks/style_quality.py (cnnlab.style.quality)."""

import torch

from cnnlab.style.quality import outlier_colour_share


def _photo(seed: int = 0) -> torch.Tensor:
    """A smooth gradient photo (colours from dark blue to light orange) with some noise, uint8 [3, 64, 96]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.linspace(0, 1, 64).view(1, 64, 1)
    x = torch.linspace(0, 1, 96).view(1, 1, 96)
    base = torch.cat([0.2 + 0.7 * x * y.new_ones(1, 64, 1), 0.2 + 0.5 * y * x.new_ones(1, 1, 96),
                      0.6 - 0.4 * x * y.new_ones(1, 64, 1)])
    return ((base + 0.02 * torch.randn(base.shape, generator=g)).clamp(0, 1) * 255).round().to(torch.uint8)


def test_a_picture_made_of_the_references_colours_has_no_outliers():
    photo = _photo()
    painting = _photo(1).flip(-1)
    assert outlier_colour_share(photo, [painting, photo]) == 0.0
    assert outlier_colour_share(painting.float() / 255, [painting, photo]) == 0.0


def test_a_saturated_blob_counts_exactly_its_pixels():
    photo = _photo()
    blob = photo.clone()
    blob[:, 10:20, 30:45] = torch.tensor([255, 0, 255], dtype=torch.uint8).view(3, 1, 1)  # magenta: in neither
    share = outlier_colour_share(blob, [photo])
    assert share == (10 * 15) / (64 * 96)


def test_the_distance_threshold_is_50_on_the_0_255_scale():
    photo = torch.full((3, 8, 8), 100, dtype=torch.uint8)
    near = photo.clone()
    near[0] += 40  # 40 away: a shade of the same colour
    far = photo.clone()
    far[0] += 60  # 60 away: a colour of its own
    assert outlier_colour_share(near, [photo]) == 0.0
    assert outlier_colour_share(far, [photo]) == 1.0
    assert outlier_colour_share(far, [photo], distance=70) == 0.0


def test_a_style_networks_output_is_the_picture_it_shows():
    """The sigmoid output stays in [0, 1] whatever the weights, so the loss sees the colours apply shows; a linear
    network with the same weights leaves the range (what apply clamped into colour blobs)."""
    from cnnlab.style.transformer import TransformNet

    torch.manual_seed(0)
    sigmoid, linear = TransformNet(width=4, residual_blocks=1), TransformNet(width=4, residual_blocks=1, output="linear")
    with torch.no_grad():
        sigmoid.up[-1][1].bias.fill_(8.0)  # a last layer pushed far out of range
    linear.load_state_dict(sigmoid.state_dict())
    x = torch.rand(1, 3, 24, 24)
    y = sigmoid(x)
    assert y.min() >= 0 and y.max() <= 1
    assert linear(x).max() > 1.5
    assert torch.allclose(y, torch.sigmoid(linear(x)))


def test_a_network_saved_before_the_output_choice_loads_as_linear(tmp_path):
    import json

    from cnnlab import runs
    from cnnlab.style.train import WEIGHTS_KIND, load_network
    from cnnlab.style.transformer import TransformNet

    old = TransformNet(width=4, residual_blocks=1, output="linear")
    meta = {"kind": WEIGHTS_KIND, "arguments": json.dumps({"width": 4, "residual_blocks": 1})}  # no "output"
    runs.RunDir(tmp_path).save_weights(old.state_dict(), "old.safetensors", metadata=meta)
    loaded, _ = load_network(tmp_path / "old.safetensors")
    assert loaded.output == "linear"
    x = torch.rand(1, 3, 20, 20)
    assert torch.equal(loaded(x), old(x))
    new = TransformNet(width=4, residual_blocks=1)
    runs.RunDir(tmp_path).save_weights(new.state_dict(), "new.safetensors",
                                       metadata={"kind": WEIGHTS_KIND, "arguments": json.dumps(new.arguments())})
    assert load_network(tmp_path / "new.safetensors")[0].output == "sigmoid"


def test_the_stylizer_leaves_the_callers_network_as_it_was():
    """apply's bf16 path converts its own copy: a network handed to it stays fp32 and computes as before."""
    from cnnlab.style.apply import Stylizer
    from cnnlab.style.transformer import TransformNet

    net = TransformNet(width=4, residual_blocks=1)
    x = torch.rand(1, 3, 20, 20)
    before = net(x)
    Stylizer(net, torch.device("cpu"), "bf16")(torch.zeros(1, 3, 20, 20, dtype=torch.uint8))
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert torch.equal(net(x), before)
