"""Parameter counts and output shapes of the registered networks."""

import pytest
import torch

from cnnlab import models
from cnnlab.errors import UserError


def count(m):
    return sum(p.numel() for p in m.parameters())


def test_cnn4_matches_the_course_network():
    m = models.create("cnn4")
    # Keras cifar10_cnn: 896 + 9,248 + 18,496 + 36,928 + 1,180,160 + 5,130
    assert count(m) == 1_250_858
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert [n for n, _ in m.features.named_children() if n.startswith("conv")] == ["conv1", "conv2", "conv3", "conv4"]


def test_cnn4_batchnorm_replaces_biases():
    m = models.create("cnn4", batchnorm=True)
    bns = [mod for mod in m.modules() if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d))]
    assert len(bns) == 5
    # biases of conv1-4 and fc1 (32+32+64+64+512) become BN scale+shift (2 x that)
    assert count(m) == 1_250_858 - 704 + 2 * 704
    assert m(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_cnn4_dropout_presets_and_widths():
    m = models.create("cnn4", dropout="aggressive", widths=[16, 32], fc_width=64, num_classes=13)
    rates = [mod.p for mod in m.modules() if isinstance(mod, torch.nn.Dropout)]
    assert rates == [0.25, 0.5, 0.75]
    assert m(torch.zeros(1, 3, 32, 32)).shape == (1, 13)


def test_mlp_baseline():
    m = models.create("mlp", hidden=512)
    assert count(m) == 3072 * 512 + 512 + 512 * 10 + 10
    assert m(torch.zeros(4, 3, 32, 32)).shape == (4, 10)


def test_unknown_model_lists_valid_names():
    with pytest.raises(UserError, match=r"unknown model 'cnn5' \(did you mean 'cnn4'\?\); valid models: .*cnn4.*mlp"):
        models.create("cnn5")


def test_unknown_argument_suggests_nearest():
    with pytest.raises(UserError, match=r"'model.batchnrom'.*did you mean 'batchnorm'"):
        models.create("cnn4", batchnrom=True)


def test_bad_dropout_is_a_user_error():
    with pytest.raises(UserError, match="dropout"):
        models.create("cnn4", dropout=[0.5, 0.5])


# ------------------------------------------------------------------------------------------- the model contract


def _build(name, **kwargs):
    """A registered network without weights or memory (meta tensors): the contract is about its structure."""
    if models.registry.entry(name).task == "imagenet":
        kwargs.setdefault("weights", "none")
    with torch.device("meta"):
        return models.create(name, **kwargs)


@pytest.mark.parametrize("name", models.list_models())
def test_every_registered_network_declares_its_classifier_and_it_can_be_reset(name):
    from cnnlab.models import contract, surgery

    declared = models.registry.entry(name).head
    assert declared, f"{name} declares no head"
    model = _build(name)
    head = models.get_classifier(model)
    assert isinstance(head, torch.nn.Linear) and model.get_submodule(declared) is head
    assert surgery.head_name(model) == declared and surgery.head(model) is head
    new = models.reset_classifier(model, 7)
    assert new is not head and new.out_features == 7 and new.in_features == head.in_features
    assert (new.bias is None) == (head.bias is None)
    assert models.get_classifier(model) is new and contract.classifier_name(model) == declared
    side = 32 if models.registry.entry(name).task == "classifier" else 224
    assert model.eval()(torch.zeros(2, 3, side, side, device="meta")).shape == (2, 7)
    assert not any(k.startswith("cnnlab") for k in model.state_dict())


@pytest.mark.parametrize("name", models.list_models())
def test_every_registered_network_declares_its_preprocessing(name):
    from cnnlab.models.backbones import preprocess_for

    pre = models.preprocessing(name)
    if models.registry.entry(name).task == "imagenet":
        assert isinstance(pre, models.Preprocess) and pre.crop == 224 and len(pre.mean) == 3
        assert _build(name).preprocess == pre  # what the built network carries is what the entry declares
    else:
        assert pre is None  # trained here: normalized by the data's own statistics
    assert preprocess_for(name) == pre


def test_preprocessing_by_name_and_its_alias():
    from cnnlab.models.backbones import preprocess_for

    assert models.preprocessing("efficientnet_lite0").mean == (0.5, 0.5, 0.5)
    assert models.preprocessing("resnet50").resize == 232  # torchvision's weights API: no download
    assert preprocess_for("not-a-model") is None
    with pytest.raises(UserError, match="unknown model"):
        models.preprocessing("not-a-model")


def test_only_unregistered_torchvision_networks_are_searched_for_their_classifier():
    from torchvision.models import mobilenet_v3_small

    from cnnlab.models import contract

    with torch.device("meta"):
        tv = mobilenet_v3_small()
    assert contract.classifier_name(tv) == "classifier.3"

    class Mine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.nn.Linear(4, 2)

    with pytest.raises(UserError, match="declares no classifier"):
        contract.get_classifier(Mine())
    mine = contract.declare_classifier(Mine(), "out")
    assert contract.reset_classifier(mine, 5).out_features == 5
    with pytest.raises(ValueError, match="no nn.Linear is there"):
        contract.declare_classifier(Mine(), "missing")


def test_optional_hooks_are_called_through_the_contract():
    from cnnlab.models.fast import FreezeAfter

    cnn4 = models.create("cnn4", widths=[8, 8], fc_width=8)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    assert models.fit_to_data(cnn4, images, mean, std) is False
    assert models.training_callbacks(cnn4, None) == []
    fast = models.create("fastnet", widths=[8, 8, 8])
    assert not fast.whitened
    assert models.fit_to_data(fast, images, mean, std) is True and fast.whitened
    callbacks = models.training_callbacks(fast, None)
    assert len(callbacks) == 1 and isinstance(callbacks[0], FreezeAfter)
    assert models.training_callbacks(models.create("fastnet", widths=[8, 8, 8], whiten=False), None) == []
