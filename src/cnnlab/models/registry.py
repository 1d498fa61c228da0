"""One registry of networks by name, like timm's ``create_model``.

    @register("cnn4", description="the course's 4-conv CNN", head="classifier.fc2")
    def cnn4(num_classes: int = 10, batchnorm: bool = False, ...) -> nn.Module: ...

    model = cnnlab.models.create("cnn4", batchnorm=True)

Arguments are checked against the builder's signature, so a typo in a config file is reported with the
closest valid argument instead of a TypeError deep inside a constructor. Each entry declares what the rest
of cnnlab relies on (models/contract.py): where its classifier is, and how it wants its input.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

from torch import nn

from ..errors import UserError, did_you_mean, unknown_name
from .contract import Preprocess, declare_classifier

PreprocessSpec = Union[Preprocess, Callable[[], Preprocess], None]
"""A Preprocess, or a function that makes it (read when first asked for: e.g. from torchvision's weights
API, which is slow to import), or None."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    task: str  # "classifier" (trained here: images -> logits) or "imagenet" (pretrained ImageNet networks)
    epoch_args: tuple[str, ...] = ()
    """Arguments counted in epochs (e.g. when a frozen part unfreezes): a time budget stretches them with
    the rest of the recipe (engine/budget.py)."""
    head: str | None = None
    """Dotted name of the classifier layer (an nn.Linear) in the built network (models/contract.py)."""
    preprocess: PreprocessSpec = None
    """How the network wants its input (ImageNet networks); None: the data's own statistics."""


_REGISTRY: dict[str, ModelEntry] = {}


_PREPROCESS: dict[str, Preprocess | None] = {}  # each entry's preprocessing, once made


def register(name: str, *, description: str = "", task: str = "classifier", epoch_args: tuple[str, ...] = (),
             head: str | None = None, preprocess: PreprocessSpec = None):
    """Decorator that adds a builder function to the registry under `name`, with its classifier's dotted
    name (`head`) and its input preprocessing (see models/contract.py)."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        _REGISTRY[name] = ModelEntry(name, builder, doc, task, tuple(epoch_args), head, preprocess)
        return builder

    return decorate


def is_registered(name: str) -> bool:
    return name in _REGISTRY


def preprocessing(name: str) -> Preprocess | None:
    """How registered model `name` wants its input, without building it (None: the data's statistics)."""
    if name not in _PREPROCESS:
        spec = entry(name).preprocess
        _PREPROCESS[name] = spec() if spec is not None and not isinstance(spec, Preprocess) else spec
    return _PREPROCESS[name]


def list_models(task: str | None = None) -> list[str]:
    return sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)


def entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise unknown_name("model", name, _REGISTRY) from None


def arguments(name: str) -> dict[str, Any]:
    """The builder's keyword arguments and their defaults."""
    sig = inspect.signature(entry(name).builder)
    return {p.name: p.default for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def check_arguments(name: str, kwargs: dict[str, Any]) -> None:
    """UserError for an unknown model or argument, naming the closest valid one."""
    valid = arguments(name)
    for key in kwargs:
        if key not in valid:
            raise UserError(f"unknown argument 'model.{key}' for model '{name}'"
                            f"{did_you_mean(key, [*valid, 'name'])}; valid: name, {', '.join(sorted(valid))}")


def epoch_arguments(name: str, kwargs: dict[str, Any]) -> dict[str, float]:
    """{argument: value in epochs} of a model's epoch-counted arguments (the given value, else the default)."""
    defaults = arguments(name)
    return {a: float(kwargs.get(a, defaults[a])) for a in entry(name).epoch_args}


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build registered model `name` with keyword arguments (checked against its signature)."""
    check_arguments(name, kwargs)
    e = entry(name)
    try:
        model = e.builder(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model '{name}' cannot be built with {kwargs}: {exc}") from None
    if e.head is not None:
        declare_classifier(model, e.head)
    if e.preprocess is not None:
        model.preprocess = preprocessing(name)
    return model


def create_for(name: str, args: dict[str, Any], num_classes: int | None = None,
               image_shape: tuple[int, ...] | None = None) -> nn.Module:
    """Build `name` for data of `num_classes` classes and images of `image_shape` [C, H, W]: the builder's
    num_classes / in_channels / image_size come from the data unless `args` sets them."""
    accepted = arguments(name)
    implied: dict[str, Any] = {"num_classes": num_classes}
    if image_shape is not None:
        implied.update(in_channels=image_shape[0], image_size=image_shape[-1])
    kwargs = {k: v for k, v in implied.items() if k in accepted and v is not None}
    kwargs.update(args)
    return create(name, **kwargs)
