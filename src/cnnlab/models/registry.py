"""One registry of networks by name, like timm's ``create_model``.

    @register("cnn4", description="the course's 4-conv CNN")
    def cnn4(num_classes: int = 10, batchnorm: bool = False, ...) -> nn.Module: ...

    model = cnnlab.models.create("cnn4", batchnorm=True)

Arguments are checked against the builder's signature, so a typo in a config file is reported with the
closest valid argument instead of a TypeError deep inside a constructor.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import UserError, did_you_mean, unknown_name


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    description: str
    task: str  # "classifier" (images -> logits); later issues add backbones and style networks
    epoch_args: tuple[str, ...] = ()
    """Arguments counted in epochs (e.g. when a frozen part unfreezes): a time budget stretches them with
    the rest of the recipe (engine/budget.py)."""


_REGISTRY: dict[str, ModelEntry] = {}


def register(name: str, *, description: str = "", task: str = "classifier", epoch_args: tuple[str, ...] = ()):
    """Decorator that adds a builder function to the registry under `name`."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        _REGISTRY[name] = ModelEntry(name, builder, doc, task, tuple(epoch_args))
        return builder

    return decorate


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
    try:
        return entry(name).builder(**kwargs)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model '{name}' cannot be built with {kwargs}: {exc}") from None


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
