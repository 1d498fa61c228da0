"""What cnnlab expects of a model, in one place.

Declared with every registered network (``@register(..., head=..., preprocess=...)``, models/registry.py):

- **head**: the dotted name of its classifier, the ``nn.Linear`` that maps features to class logits (cnn4's
  ``classifier.fc2``, fastnet's ``classifier.fc``, EfficientNet-Lite0's ``_fc``, ResNet's ``fc``, VGG's
  ``classifier.6``). ``models.create`` records it on the model it builds, so that transfer learning,
  feature extraction and parameter groups find the classifier by name, never by guessing:
  :func:`classifier_name`, :func:`get_classifier`, :func:`reset_classifier` (timm's names). Only a
  torchvision model that cnnlab did not build is searched (its last ``nn.Linear``, which is the classifier
  of every torchvision classification network); any other model without a declared head is an error.
- **preprocess**: how an ImageNet network wants its input (:class:`Preprocess`; ``models.preprocessing(name)``
  reads it without building the network). None for the networks cnnlab trains from scratch: they take the
  data's own statistics.

Optional hooks a model class may define (:class:`ModelHooks`); the training code calls them through the
functions here, which do nothing for a model without the hook:

- ``fit_to_data(images, mean, std)``: a data-dependent initialization before training (fastnet's frozen
  patch-whitening filters), called once by :func:`fit_to_data`;
- ``training_callbacks(cfg)``: engine callbacks the model brings to its run (fastnet's whitening bias that
  trains for the first epochs only), collected by :func:`training_callbacks`;
- ``parameter_groups(cfg)``: its own optimizer groups (fastnet's bias learning rates), read by
  engine/optim.py's ``parameter_groups``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn

from ..data.preprocess import Preprocess  # noqa: F401  (declared with each registry entry)
from ..errors import UserError

if TYPE_CHECKING:
    from ..engine.loop import Callback

HEAD_ATTRIBUTE = "cnnlab_head"
"""The attribute models.create sets on every model it builds: the registry entry's head."""


# ----------------------------------------------------------------------------------------------- preprocessing


# ----------------------------------------------------------------------------------------------- the classifier


def swap_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put `new` where the submodule with dotted `name` is (a Sequential's index too); returns the old one."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = model.get_submodule(name)
    if isinstance(parent, nn.Sequential) and child.isdigit():
        parent[int(child)] = new
    else:
        setattr(parent, child, new)
    return old


def declare_classifier(model: nn.Module, name: str) -> nn.Module:
    """Record `name` as `model`'s classifier (checked: an nn.Linear is there); returns the model."""
    try:
        found = model.get_submodule(name)
    except AttributeError:
        found = None
    if not isinstance(found, nn.Linear):
        raise ValueError(f"{type(model).__name__} declares its classifier at '{name}', but no nn.Linear is there")
    setattr(model, HEAD_ATTRIBUTE, name)  # a plain string attribute: not in the state dict
    return model


def _is_torchvision(model: nn.Module) -> bool:
    return type(model).__module__.startswith("torchvision.models")


def classifier_name(model: nn.Module) -> str:
    """The dotted name of `model`'s classifier: declared (see the module docstring), or, for a torchvision
    classification network cnnlab did not build, its last nn.Linear."""
    declared = getattr(model, HEAD_ATTRIBUTE, None)
    if declared:
        return declared
    if _is_torchvision(model):
        linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        if linears:
            return linears[-1]
    raise UserError(f"{type(model).__name__} declares no classifier layer: build it with cnnlab.models.create "
                    f"(each registered network declares its head), or register it with @register(..., head=NAME)")


def get_classifier(model: nn.Module) -> nn.Linear:
    """The model's classifier layer."""
    return model.get_submodule(classifier_name(model))  # type: ignore[return-value]


def reset_classifier(model: nn.Module, num_classes: int) -> nn.Linear:
    """A fresh nn.Linear(in_features, num_classes) (a bias where the old one had one, on its device, in its
    dtype) in place of the classifier, under the same name; returns it."""
    name = classifier_name(model)
    old = model.get_submodule(name)
    new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None, device=old.weight.device,
                    dtype=old.weight.dtype)
    swap_module(model, name, new)
    return new


# ----------------------------------------------------------------------------------------------- optional hooks


class ModelHooks(Protocol):
    """The optional methods a cnnlab model may define (each one alone; see the module docstring)."""

    def fit_to_data(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> None:
        """Initialize from the training images (uint8 [N, C, H, W]) and their normalization, once, before
        training; the result must be in the state dict (a loaded model is not fitted again)."""

    def training_callbacks(self, cfg: Any) -> list[Callback]:
        """Engine callbacks for a run of this model under the resolved config `cfg`."""

    def parameter_groups(self, cfg: Any) -> list[dict]:
        """Optimizer parameter groups under the optimizer config `cfg` (engine/optim.py)."""


def fit_to_data(model: nn.Module, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> bool:
    """Call the model's ``fit_to_data`` hook when it has one; returns whether it did."""
    hook = getattr(model, "fit_to_data", None)
    if hook is None:
        return False
    hook(images, mean, std)
    return True


def training_callbacks(model: nn.Module, cfg: Any) -> list[Callback]:
    """The callbacks the model's ``training_callbacks`` hook brings (none without the hook)."""
    hook = getattr(model, "training_callbacks", None)
    return list(hook(cfg)) if hook is not None else []
