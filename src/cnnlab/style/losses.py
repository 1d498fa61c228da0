"""The losses of neural style transfer (Gatys et al. 2016; Johnson et al. 2016), shared by both methods.

- content: the squared distance between the features of the output and of the content photo at one layer;
- style: the squared distance between Gram matrices (channel-by-channel feature correlations, which keep
  texture and colour statistics and drop where things are) at several layers, weighted per layer;
- total variation (``total_variation_l2``): the squared differences between neighbouring pixels, a smoothness
  prior against the high-frequency noise the optimizer finds cheapest.

Each layer's content and style term is divided by the squared norm of its target. The raw terms of
different layers and different loss networks differ by orders of magnitude (a VGG relu1_1 Gram is ~1e3
times a relu5_1 one, EfficientNet's again different), so with raw terms every network and layer set needs
its own hand-tuned weights; relative terms make a style weight of 1 mean "as much as the content" whatever
the network, and let one set of defaults serve VGG and EfficientNet-Lite0 alike. ``relative=False`` gives
the classic raw terms (benchmarks/style_gallery.py shows both on EfficientNet-Lite0: raw terms at style
weights 1e2 and 1e4, without TV, stylize too, with more high-frequency noise; relative terms at style weight
10 with a TV weight of 10 give the painting's colours and strokes more smoothly).

``smooth`` applies Wang et al.'s softmax transformation (CVPR 2021, "Rethinking and Improving the Robustness
of Image Style Transfer") before the Gram matrix: a softmax over each channel's positions. Their argument:
networks other than VGG have peaky activations whose raw Gram matrices are dominated by a few huge values.
Measured here on EfficientNet-Lite0 with block outputs as style layers (benchmarks/style_gallery.py, by eye):
the plain Gram loss already gives the painting's colours and strokes, while the softmax (each channel
normalized over its positions) throws away the channels' magnitudes, i.e. the colour statistics: L-BFGS
then finds nearly invisible changes that lower the smoothed loss, and the output stays the photo. So
smoothing is available (``--smooth``) but off by default for every network.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """[B, C, C] channel correlations of features [B, C, H, W], divided by C·H·W (size-independent)."""
    b, c, h, w = features.shape
    f = features.float().reshape(b, c, h * w)
    return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)


def softmax_smoothing(features: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Wang et al.'s transformation: a softmax over each channel's spatial positions, times the position count
    (so that a flat map becomes ones, keeping values near 1 whatever the image size)."""
    b, c, h, w = features.shape
    flat = features.float().reshape(b, c, h * w) / temperature
    return (torch.softmax(flat, dim=-1) * (h * w)).reshape(b, c, h, w)


def total_variation_l2(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between vertically and horizontally neighbouring pixels, over the batch (one
    number): the squared (L2) total variation of Johnson et al., smooth everywhere, so L-BFGS handles it well."""
    dy = images[:, :, 1:, :] - images[:, :, :-1, :]
    dx = images[:, :, :, 1:] - images[:, :, :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


def relative_mse(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||value - target||² / ||target||², averaged over the batch (target broadcast over it)."""
    dims = tuple(range(1, value.dim()))
    target = target.expand_as(value)
    return ((value - target).pow(2).sum(dims) / target.pow(2).sum(dims).clamp_min(1e-12)).mean()


def squared_distance(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||value - target||², averaged over the batch: the classic, unnormalized term (``relative=False``)."""
    dims = tuple(range(1, value.dim()))
    return (value - target.expand_as(value)).pow(2).sum(dims).mean()


def style_targets(style_features: Sequence[Mapping[str, torch.Tensor]], mix: Sequence[float],
                  smooth: bool) -> dict[str, torch.Tensor]:
    """The Gram matrices a stylized image should have: one style's, or a weighted mix of several styles'
    (the --style-weights of several --style images), per layer, each [1, C, C]."""
    total = float(sum(mix))
    out: dict[str, torch.Tensor] = {}
    for features, weight in zip(style_features, mix):
        for layer, f in features.items():
            g = gram_matrix(softmax_smoothing(f) if smooth else f).mean(0, keepdim=True) * (weight / total)
            out[layer] = out[layer] + g if layer in out else g
    return out


def style_loss(features: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
               layer_weights: Mapping[str, float], smooth: bool, relative: bool = True) -> torch.Tensor:
    """Σ_l w_l · (relative) squared distance between the Gram matrices of `features` and the targets, / Σ w_l."""
    distance = relative_mse if relative else squared_distance
    terms = [w * distance(gram_matrix(softmax_smoothing(features[l]) if smooth else features[l]), targets[l])
             for l, w in layer_weights.items()]
    return torch.stack(terms).sum() / max(sum(layer_weights.values()), 1e-12)


def content_loss(features: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                 layers: Sequence[str], smooth: bool = False, relative: bool = True) -> torch.Tensor:
    """Mean over the content layers of the (relative) squared distance between (smoothed) features; the raw
    distance is a mean over elements, as in Gatys et al."""
    def view(f: torch.Tensor) -> torch.Tensor:
        return softmax_smoothing(f) if smooth else f.float()

    if relative:
        return torch.stack([relative_mse(view(features[l]), view(targets[l])) for l in layers]).mean()
    return torch.stack([(view(features[l]) - view(targets[l])).pow(2).mean() for l in layers]).mean()
