"""The fast style-transfer network (Johnson et al., ECCV 2016, with the later standard fixes).

Down-sampling convolutions (9x9 stride 1, then two 3x3 stride 2), residual blocks at a quarter of the
resolution, up-sampling back, a 9x9 convolution to RGB. Instance normalization instead of batch norm
(Ulyanov et al. 2016: each image normalized on its own, which is what makes the output's contrast independent
of the batch and the network apply to one frame at a time); reflection padding (no dark borders); nearest
up-sampling + convolution instead of transposed convolutions (no checkerboard artifacts, Odena et al. 2016).
It is fully convolutional: trained on 256 px crops, it applies to any size.

``width`` scales every layer's channels (32 in the paper). Inference cost grows with width²; a 2-core CPU
stylizes 512 px frames several times faster at width 16, at some loss of detail.

The slim options, for real time on a CPU (benchmarks/style_speed.py measures each), all off by default so the
paper's network stays the default and older weights files (whose metadata lacks them) rebuild as they were:
``separable`` makes each residual block's 3x3 convolutions depthwise-separable (a depthwise 3x3 then a
pointwise 1x1, no norm or activation between them, as Xception found best; MobileNet's factorization), about
8-9x fewer operations in the blocks; ``edge_kernel`` shrinks the first and last convolutions (9x9 in the paper;
they run at full resolution, where every operation counts most); ``downsamples`` 3 adds a stride-2 stage, so
the residual blocks run at 1/8 of the resolution (64x fewer pixels than the frame; its channels stay 4x width).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError

MIN_SIDE = 16
OUTPUTS = ("sigmoid", "linear")  # the output layer; "linear" = the networks trained before sigmoid
EDGE_KERNELS = (9, 7, 5, 3)
DOWNSAMPLES = (2, 3)


def check_architecture(edge_kernel: int, downsamples: int) -> None:
    """The slim options' values a network can be built with (a user mistake otherwise, named by its flag)."""
    if edge_kernel not in EDGE_KERNELS:
        raise UserError(f"--edge-kernel must be one of {', '.join(map(str, EDGE_KERNELS))}, got {edge_kernel}")
    if downsamples not in DOWNSAMPLES:
        raise UserError(f"--downsamples must be one of {', '.join(map(str, DOWNSAMPLES))}, got {downsamples}")


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride))


def _separable(channels: int) -> nn.Sequential:
    """A 3x3 convolution factorized: depthwise 3x3 (each channel alone), then pointwise 1x1 (mixing channels)."""
    return nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(channels, channels, 3, groups=channels),
                         nn.Conv2d(channels, channels, 1))


def _norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, separable: bool = False):
        super().__init__()
        conv = _separable if separable else (lambda c: _conv(c, c, 3))
        self.body = nn.Sequential(conv(channels), _norm(channels), nn.ReLU(inplace=True),
                                  conv(channels), _norm(channels))

    def forward(self, x):
        return x + self.body(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2, then a convolution."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.conv = _conv(cin, cout, 3)

    def forward(self, x):
        return self.conv(self.up(x))


class TransformNet(nn.Module):
    """Images in [0, 1], [B, 3, H, W] -> stylized images of the same size, in [0, 1] (``output="sigmoid"``).

    The output goes through a sigmoid, so the loss network sees exactly the colours a picture will show. With a
    linear output (the paper's, and cnnlab's before: ``output="linear"``, kept so those networks still load)
    the network learned to put values far outside [0, 1] on bright regions, which the loss network barely sees
    but which `apply` clamps into saturated colours that neither the photo nor the painting has: the colour
    blobs. Measured (benchmarks/results/style-quality-*.md): 83-96 % of the outlier-colour pixels of a linear
    network trained 15 minutes had a raw channel out of range; a sigmoid network trained the same minutes had
    at most 0.002 % outlier colours on any photo, against 0.35-0.64 %.

    H and W need not be multiples of 4 (or 8): the stride-2 layers round up, so the output is at least the
    input's size and is cropped back to it exactly. Sides under MIN_SIDE are refused (the 9x9 reflection
    padding needs more pixels than that)."""

    def __init__(self, width: int = 32, residual_blocks: int = 5, separable: bool = False, edge_kernel: int = 9,
                 downsamples: int = 2, output: str = "sigmoid"):
        super().__init__()
        check_architecture(edge_kernel, downsamples)
        if output not in OUTPUTS:
            raise UserError(f"--output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        self.width, self.residual_blocks, self.output = width, residual_blocks, output
        self.separable, self.edge_kernel, self.downsamples = bool(separable), edge_kernel, downsamples
        channels = [width * 2 ** min(level, 2) for level in range(downsamples + 1)]  # w, 2w, 4w(, 4w)
        down: list[nn.Module] = [_conv(3, width, edge_kernel), _norm(width), nn.ReLU(inplace=True)]
        for cin, cout in zip(channels, channels[1:]):
            down += [_conv(cin, cout, 3, 2), _norm(cout), nn.ReLU(inplace=True)]
        up: list[nn.Module] = []
        for cin, cout in zip(channels[::-1], channels[-2::-1]):
            up += [Upsample(cin, cout), _norm(cout), nn.ReLU(inplace=True)]
        self.down = nn.Sequential(*down)
        self.res = nn.Sequential(*[ResidualBlock(channels[-1], self.separable) for _ in range(residual_blocks)])
        self.up = nn.Sequential(*up, _conv(width, 3, edge_kernel))

    def forward(self, x):
        h, w = x.shape[-2:]
        if min(h, w) < MIN_SIDE:
            raise UserError(f"images must be at least {MIN_SIDE} pixels on each side for a style network, got {w}x{h}")
        y = self.up(self.res(self.down(x)))[..., :h, :w]
        return torch.sigmoid(y) if self.output == "sigmoid" else y

    def arguments(self) -> dict[str, int | bool | str]:
        """What rebuilds this network from its weights file (recorded in the file's metadata). The slim options
        are recorded only when they differ from the paper's, so the paper's network's metadata is what it was."""
        args: dict[str, int | bool | str] = {"width": self.width, "residual_blocks": self.residual_blocks,
                                             "output": self.output}
        if self.separable:
            args["separable"] = True
        if self.edge_kernel != 9:
            args["edge_kernel"] = self.edge_kernel
        if self.downsamples != 2:
            args["downsamples"] = self.downsamples
        return args
