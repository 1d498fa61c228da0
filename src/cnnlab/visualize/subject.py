"""The network being visualized: a cnnlab run or a registered ImageNet model, with its preprocessing,
class names and layers (by name, as in ``model.named_modules()``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError, did_you_mean
from ..models import backbones, registry
from ..data.preprocess import Preprocess


@dataclass
class Subject:
    name: str
    model: nn.Module
    preprocess: Preprocess
    class_names: list[str]

    @property
    def input_size(self) -> int:
        return self.preprocess.crop

    def example_input(self) -> torch.Tensor:
        """A blank input batch of one, at the model's input size (for shape probing)."""
        return torch.zeros(1, 3, self.input_size, self.input_size)

    def module(self, layer: str) -> nn.Module:
        """The module called `layer`; an unknown name lists the valid conv layers."""
        modules = dict(self.model.named_modules())
        if layer not in modules or layer == "":
            convs = conv_layer_names(self.model)
            hint = did_you_mean(layer, convs)
            shown = ", ".join(convs if len(convs) <= 12 else convs[:6] + ["..."] + convs[-5:])
            raise UserError(f"unknown layer '{layer}' in {self.name}{hint}; conv layers: {shown}")
        return modules[layer]

    def class_index(self, target: str | int) -> int:
        """A class given by index or by name (case-insensitive); out of range or unknown is an error."""
        n = len(self.class_names)
        if isinstance(target, int) or str(target).lstrip("-").isdigit():
            index = int(target)
            if not 0 <= index < n:
                raise UserError(f"class index {index} is out of range for {self.name}: it has {n} classes (0-{n - 1})")
            return index
        lowered = [c.lower() for c in self.class_names]
        if str(target).lower() in lowered:
            return lowered.index(str(target).lower())
        raise UserError(f"unknown class '{target}' for {self.name}{did_you_mean(str(target), self.class_names)}; "
                        f"give a class name or an index 0-{n - 1}")


def conv_layer_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def load_subject(run: str | Path | None = None, model: str | None = None, weights: str | None = None) -> Subject:
    """A cnnlab run directory (`run`) or a registered ImageNet model by name (`model`, optional `weights`)."""
    if (run is None) == (model is None):
        raise UserError("give either --run RUN_DIR (a cnnlab training run) or --model NAME (an ImageNet model)")
    if run is not None:
        from ..models.trained import load_trained

        net, cfg, run_dir, meta = load_trained(run)
        return Subject(f"{cfg.model.name} ({run_dir})", net.eval(), meta.view(), list(meta.classes))
    entry = registry.entry(model)
    if entry.task != "imagenet":
        raise UserError(f"model '{model}' has no pretrained weights to visualize; train it and pass --run RUN_DIR, "
                        f"or choose an ImageNet model: {', '.join(registry.list_models('imagenet'))}")
    kwargs = {} if weights is None else {"weights": weights}
    net = registry.create(model, **kwargs)
    return Subject(model, net.eval(), backbones.model_preprocess(net), backbones.class_names(net))


def spatial_conv_layers(model: nn.Module, example: torch.Tensor) -> list[tuple[str, tuple[int, ...]]]:
    """(name, output shape) of every Conv2d in execution order whose output has H, W > 1."""
    names = {m: n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    seen: list[tuple[str, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out: seen.append((names[mod], tuple(out.shape))))
             for m in names]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return [(n, s) for n, s in seen if len(s) == 4 and s[-1] > 1 and s[-2] > 1]


def layer_output_shape(model: nn.Module, module: nn.Module, example: torch.Tensor) -> tuple[int, ...]:
    """Shape of `module`'s output for `example` (one forward pass)."""
    shapes: list[tuple[int, ...]] = []
    handle = module.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        handle.remove()
    return shapes[-1] if shapes else ()


def default_cam_layer(subject: Subject, example: torch.Tensor) -> str:
    """The last conv layer with a spatial output (Grad-CAM's usual choice)."""
    layers = spatial_conv_layers(subject.model, example)
    if not layers:
        raise UserError(f"{subject.name} has no convolutional layer with a spatial output, so class activation maps "
                        f"(Grad-CAM and its family) cannot be computed; use --methods saliency smoothgrad")
    return layers[-1][0]
