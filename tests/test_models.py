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
