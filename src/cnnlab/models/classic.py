"""The course's networks: the 2-FC baseline and the 4-conv CNN, with switchable batch norm and dropout."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from .registry import register

DROPOUT_PRESETS = {"course": [0.25, 0.25, 0.5], "aggressive": [0.25, 0.5, 0.75], "none": [0.0, 0.0, 0.0]}


class Classifier(nn.Module):
    """``features`` (convolutional trunk, may be empty) followed by ``classifier`` (the head).

    The split is what transfer learning and visualization rely on: cut or replace the head, hook a layer
    of the trunk by its name.
    """

    def __init__(self, features: nn.Module, classifier: nn.Module):
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x):
        return self.classifier(self.features(x))


@register("mlp", head="classifier.fc2", description="the course's 2-FC baseline: flatten, dense, ReLU, dense")
def mlp(num_classes: int = 10, image_size: int = 32, in_channels: int = 3, hidden: int = 512,
        dropout: float = 0.0) -> Classifier:
    """Flatten -> Linear(hidden) -> ReLU -> [Dropout] -> Linear(num_classes)."""
    if hidden <= 0:
        raise ValueError(f"hidden must be positive, got {hidden}")
    layers = OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(in_channels * image_size * image_size, hidden),
                         relu1=nn.ReLU(inplace=True))
    if dropout:
        layers["drop1"] = nn.Dropout(dropout)
    layers["fc2"] = nn.Linear(hidden, num_classes)
    return Classifier(nn.Identity(), nn.Sequential(layers))


def _dropout_rates(dropout: Sequence[float] | str | float | None) -> list[float]:
    if dropout is None:
        return DROPOUT_PRESETS["none"]
    if isinstance(dropout, str):
        if dropout not in DROPOUT_PRESETS:
            raise ValueError(f"dropout preset must be one of {', '.join(DROPOUT_PRESETS)}, got '{dropout}'")
        return DROPOUT_PRESETS[dropout]
    if isinstance(dropout, (int, float)):
        return [float(dropout)] * 3
    rates = [float(r) for r in dropout]
    if len(rates) != 3 or not all(0 <= r < 1 for r in rates):
        raise ValueError(f"dropout must be 3 rates in [0, 1) (after each pool and after fc1), got {rates}")
    return rates


def _conv_block(layers: OrderedDict, index: int, cin: int, cout: int, padding: int, batchnorm: bool) -> None:
    layers[f"conv{index}"] = nn.Conv2d(cin, cout, 3, padding=padding, bias=not batchnorm)
    if batchnorm:
        layers[f"bn{index}"] = nn.BatchNorm2d(cout)
    layers[f"relu{index}"] = nn.ReLU(inplace=True)


@register("cnn4", head="classifier.fc2",
          description="the course's 4-Conv2D+FC network, optional batch norm and dropout")
def cnn4(num_classes: int = 10, image_size: int = 32, in_channels: int = 3, widths: Sequence[int] = (32, 64),
         fc_width: int = 512, batchnorm: bool = False,
         dropout: Sequence[float] | str | float | None = (0.25, 0.25, 0.5)) -> Classifier:
    """conv(w1, same) -> conv(w1, valid) -> pool -> drop -> conv(w2, same) -> conv(w2, valid) -> pool -> drop
    -> fc(fc_width) -> drop -> fc(num_classes); batch norm (when on) sits between each conv/fc and its ReLU
    and replaces that layer's bias."""
    w1, w2 = (int(w) for w in widths)
    rates = _dropout_rates(dropout)
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    _conv_block(layers, 1, in_channels, w1, 1, batchnorm)
    _conv_block(layers, 2, w1, w1, 0, batchnorm)
    layers["pool1"] = nn.MaxPool2d(2)
    layers["drop1"] = nn.Dropout(rates[0])
    _conv_block(layers, 3, w1, w2, 1, batchnorm)
    _conv_block(layers, 4, w2, w2, 0, batchnorm)
    layers["pool2"] = nn.MaxPool2d(2)
    layers["drop2"] = nn.Dropout(rates[1])
    side = ((image_size - 2) // 2 - 2) // 2
    if side < 1:
        raise ValueError(f"image_size {image_size} is too small for cnn4 (needs at least 10)")
    head: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten(),
                                                    fc1=nn.Linear(w2 * side * side, fc_width, bias=not batchnorm))
    if batchnorm:
        head["bn5"] = nn.BatchNorm1d(fc_width)
    head["relu5"] = nn.ReLU(inplace=True)
    head["drop3"] = nn.Dropout(rates[2])
    head["fc2"] = nn.Linear(fc_width, num_classes)
    return Classifier(nn.Sequential(layers), nn.Sequential(head))
