"""Transfer learning's network work: freezing and head surgery on every kind of network, and fast feature
extraction (batch norms folded into convolutions, native padding, ONNX Runtime). The runs: test_transfer.py."""

import pytest
import torch

from cnnlab.errors import UserError
from cnnlab.models import create, surgery


# ------------------------------------------------------------------------------------------- surgery


def test_freezing_keeps_frozen_weights_and_batch_norm_statistics():
    torch.manual_seed(0)
    model = create("cnn4", num_classes=3, widths=[8, 16], fc_width=16, batchnorm=True)
    layers = surgery.set_trainable(model, "2")
    assert layers == ["classifier.bn5", "classifier.fc2"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 3, 32, 32)).sum().backward()
        opt.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.bn5.weight", "classifier.bn5.bias", "classifier.bn5.running_mean",
                       "classifier.bn5.running_var", "classifier.bn5.num_batches_tracked",
                       "classifier.fc2.weight", "classifier.fc2.bias"}
    assert surgery.set_trainable(model, "features.conv4") == [
        "features.conv4", "features.bn4", "classifier.fc1", "classifier.bn5", "classifier.fc2"]
    assert surgery.trainable_layers(model, "all") == surgery.parameterised_layers(model)
    with pytest.raises(UserError, match="neither a number, 'all', 'head' nor a block"):
        surgery.set_trainable(model, "features.conv9")


def test_heads_are_found_and_replaced_on_every_kind_of_network():
    for name, kwargs, head in (("cnn4", {}, "classifier.fc2"), ("fastnet", {"widths": [8, 8, 8]}, "classifier.fc"),
                               ("efficientnet_lite0", {"weights": "none"}, "_fc"),
                               ("resnet18", {"weights": "none"}, "fc")):
        model = create(name, **kwargs)
        assert surgery.head_name(model) == head
        new = surgery.replace_head(model, 6)
        assert surgery.head(model) is new and new.out_features == 6


# ------------------------------------------------------------------------------------------- fast extraction


@pytest.mark.parametrize("name, kwargs", [("efficientnet_lite0", {}), ("resnet18", {"weights": "none"})])
def test_folding_batch_norms_keeps_the_outputs(name, kwargs):
    torch.manual_seed(0)
    model = create(name, **kwargs).eval()
    for m in model.modules():  # non-trivial statistics, so a wrong fold cannot pass
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    folded = surgery.fold_batch_norms(model)
    kinds = {type(dict(folded.named_modules())[n.target]).__name__ for n in folded.graph.nodes
             if n.op == "call_module"}
    assert "BatchNorm2d" not in kinds  # every conv -> BN pair folded in these networks
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = model(x)
        error = (folded(x) - expected).abs().max() / expected.abs().max()
    assert error < 1e-3  # float rounding only: a wrong fold is off by the whole statistics' effect
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()), "the original is untouched"


def test_convolutions_pad_themselves_where_same_padding_is_symmetric():
    from efficientnet_lite_pytorch import EfficientNet

    from cnnlab.models.backbones import native_same_padding

    ours = create("efficientnet_lite0").eval()
    theirs = EfficientNet.from_name("efficientnet-lite0").eval()
    theirs.load_state_dict(ours.state_dict())
    assert native_same_padding(theirs) == native_same_padding(ours) + 12  # ours: done at creation already
    pristine = EfficientNet.from_name("efficientnet-lite0").eval()
    pristine.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), pristine(x), atol=1e-5)


def test_onnx_runtime_backend_gives_the_same_features_and_exports_once(tmp_path):
    from cnnlab.transfer.features import Extractor, extraction_backend

    model = create("efficientnet_lite0")
    images = torch.randint(0, 256, (5, 3, 96, 96), dtype=torch.uint8)
    pre = model.preprocess
    cpu = torch.device("cpu")
    assert extraction_backend("auto", cpu, "fp32") == "onnxruntime"  # installed with the dev extra
    assert extraction_backend("auto", cpu, "bf16") == "torch" == extraction_backend("torch", cpu, "fp32")
    onnx_file = tmp_path / "lite0.onnx"
    reference = Extractor(model, pre.mean, pre.std, cpu, "fp32", True)(images, batch_size=2)
    fast = Extractor(model, pre.mean, pre.std, cpu, "fp32", False, "onnxruntime", onnx_file, images)(images, 2)
    assert fast.shape == reference.shape == (5, 1280)
    assert torch.allclose(fast, reference, atol=1e-3, rtol=1e-3)
    stamp = onnx_file.stat().st_mtime_ns
    Extractor(model, pre.mean, pre.std, cpu, "fp32", False, "onnxruntime", onnx_file, images)
    assert onnx_file.stat().st_mtime_ns == stamp  # exported once, reused
