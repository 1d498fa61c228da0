"""The fast attribution path (visualize/attribution.py): the same maps as the grad-cam package and the
textbook saliency, with back-propagation only where a map needs it, and the caller's model left alone.

Speed itself is measured by benchmarks/visualize.py, not here (timings on a shared CPU are not a test)."""

import numpy as np
import pytest
import torch
from torch import nn

from cnnlab import models, visualize
from cnnlab.data.images import read_image
from cnnlab.visualize.attribution import Attributor, _cam_class
from cnnlab.visualize.subject import default_cam_layer
from conftest import SHARED_DATA

PHOTOS = SHARED_DATA / "images" / "photos"
GRADIENT_CAMS = ["gradcam", "gradcam++", "xgradcam", "layercam"]


def package_maps(model, layer, method, x, targets):
    """The grad-cam package used the plain way: a new CAM object per image, one image at a time."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    maps = []
    for image, t in zip(x, targets):
        with _cam_class(method)(model=model, target_layers=[layer]) as cam:
            maps.append(cam(input_tensor=image.unsqueeze(0), targets=[ClassifierOutputTarget(int(t))])[0])
    model.zero_grad(set_to_none=True)
    return np.stack(maps)


def textbook_saliency(model, x, targets):
    """One image at a time, the input requires grad, backward() from the target logit: every weight gradient
    is computed too."""
    maps = []
    for image, t in zip(x, targets):
        image = image.unsqueeze(0).clone().requires_grad_(True)
        model(image)[0, int(t)].backward()
        g = image.grad.abs().amax(1)[0]
        maps.append((g - g.min()) / (g.max() - g.min()).clamp(min=1e-12))
    model.zero_grad(set_to_none=True)
    return torch.stack(maps)


def subject(name):
    """(model, images): the three models of the benchmark (lite0 on real photos, the others random)."""
    torch.manual_seed(0)
    if name == "efficientnet_lite0":
        lite0 = visualize.load_subject(model=name)
        return lite0.model, torch.stack([lite0.preprocess(read_image(PHOTOS / p), crop=True)
                                         for p in ("chelsea.png", "coffee.png")])
    if name == "resnet50":
        return models.create("resnet50", weights="none").eval(), torch.randn(2, 3, 224, 224)
    return models.create("cnn4", batchnorm=True).eval(), torch.randn(4, 3, 32, 32)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "resnet50", "cnn4"])
def test_maps_equal_the_package_and_the_textbook_saliency(name):
    model, x = subject(name)
    layer_name = default_cam_layer(visualize.Subject(name, model, None, []), x[:1])
    assert layer_name == {"efficientnet_lite0": "_conv_head", "resnet50": "layer4.2.conv3",
                          "cnn4": "features.conv4"}[name]
    layer = dict(model.named_modules())[layer_name]
    with torch.no_grad():
        targets = model(x).argmax(1)
    methods = ["saliency", *GRADIENT_CAMS, "eigencam"] + (["scorecam"] if name == "cnn4" else [])
    with Attributor(model, layer, methods) as attributor:
        maps = attributor(x, targets)
    for m in methods:
        expected = textbook_saliency(model, x, targets) if m == "saliency" else \
            torch.from_numpy(package_maps(model, layer, m, x, targets))
        assert maps[m].shape == (len(x), *x.shape[-2:])
        assert (maps[m] - expected).abs().max().item() <= 1e-4, (name, m)
        assert maps[m].max().item() > 0.99  # a real map, not zeros equal to zeros


def test_the_callers_model_is_left_as_it_was():
    torch.manual_seed(0)
    model = models.create("cnn4", batchnorm=True).train()
    model.features.conv1.weight.requires_grad_(False)  # frozen by the caller
    model.features.conv2.weight.grad = torch.ones_like(model.features.conv2.weight)  # a gradient of its own
    model.features.bn2.eval()  # a mixed train/eval state
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, targets = torch.randn(3, 3, 32, 32), torch.tensor([1, 5, 9])
    with Attributor(model, model.features.conv4, list(visualize.METHODS)) as attributor:
        assert not model.training  # eval while it works
        attributor(x, targets)
        attributor(x, targets)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert list(grads) == ["features.conv2.weight"] and (grads["features.conv2.weight"] == 1).all()
    assert not any(m._forward_hooks or m._backward_hooks or m._forward_pre_hooks for m in model.modules())
    assert torch.is_grad_enabled()


def test_a_cam_runs_no_graph_below_its_layer_and_saliency_no_weight_gradients():
    torch.manual_seed(0)
    model = models.create("cnn4", batchnorm=True).eval()
    x, targets = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    grad_mode = {}
    modules = dict(model.named_modules())
    for name in ("features.conv1", "features.conv4", "classifier.fc1"):
        modules[name].register_forward_hook(
            lambda _m, _i, _o, name=name: grad_mode.__setitem__(name, torch.is_grad_enabled()))
    with Attributor(model, model.features.conv4, ["gradcam"]) as attributor:
        attributor(x, targets)
    # the trunk up to the target layer: no graph, nothing saved; the head above it: a graph to back-propagate
    assert grad_mode == {"features.conv1": False, "features.conv4": False, "classifier.fc1": True}
    touched = []
    for name, p in model.named_parameters():
        p.register_hook(lambda g, name=name: touched.append(name))
    with Attributor(model, None, ["saliency", "smoothgrad"]) as attributor:
        attributor(x, targets)
    assert touched == []  # no weight gradient was asked for


def test_a_layer_that_runs_twice_is_left_to_the_package():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.shared = nn.Conv2d(8, 8, 3, padding=1)
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            x = self.shared(torch.relu(self.shared(torch.relu(self.stem(x)))))
            return self.head(x.mean((2, 3)))

    torch.manual_seed(0)
    model = Twice().eval()
    x, targets = torch.randn(2, 3, 16, 16), torch.tensor([0, 3])
    with Attributor(model, model.shared, ["gradcam"]) as attributor:
        maps = attributor(x, targets)["gradcam"]
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with _cam_class("gradcam")(model=model, target_layers=[model.shared]) as cam:
        expected = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in targets])
    assert np.abs(maps.numpy() - expected).max() <= 1e-6
    model.zero_grad(set_to_none=True)
    with Attributor(model, model.shared, ["gradcam"]) as attributor:
        attributor(x, targets)
    assert all(p.grad is None for p in model.parameters())  # the package's backward pass left no .grad behind
