"""The fast style-transfer network (Johnson et al., ECCV 2016, with the later standard fixes).

Down-sampling convolutions (9x9 stride 1, then two 3x3 stride 2), residual blocks at a quarter of the
resolution, up-sampling back, a 9x9 convolution to RGB. Instance normalization instead of batch norm
(Ulyanov et al. 2016: each image normalized on its own, which is what makes the output's contrast independent
of the batch and the network apply to one frame at a time); reflection padding (no dark borders); nearest
up-sampling + convolution instead of transposed convolutions (no checkerboard artifacts, Odena et al. 2016).
It is fully convolutional: trained on 256 px crops, it applies to any size.

``width`` scales every layer's channels (32 in the paper). Inference cost grows with width²; a 2-core CPU
stylizes 512 px frames several times faster at width 16, at some loss of detail.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError

MIN_SIDE = 16
OUTPUTS = ("sigmoid", "linear")  # the output layer; "linear" = the networks trained before sigmoid


def _conv(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.ReflectionPad2d(kernel // 2), nn.Conv2d(cin, cout, kernel, stride))


def _norm(channels: int) -> nn.InstanceNorm2d:
    return nn.InstanceNorm2d(channels, affine=True)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, 3), _norm(channels), nn.ReLU(inplace=True),
                                  _conv(channels, channels, 3), _norm(channels))

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
    the network learned to put values far outside [0, 1] on bright regions (down to -5.9 after 6 minutes of
    training), which the loss network barely sees (its ReLU6 clips the first layer at 6) but which `apply`
    clamps into saturated colours that neither the photo nor the painting has: the rainbow blobs. Measured
    (benchmarks/style_quality.py): 92-95 % of the outlier-colour pixels of a linear network had a channel out of
    range; a sigmoid network trained the same minutes had no outlier-colour pixel and a lower loss.

    H and W need not be multiples of 4: the stride-2 layers round up, so the output is at least the input's
    size and is cropped back to it exactly. Sides under MIN_SIDE are refused (the 9x9 reflection padding needs
    more pixels than that)."""

    def __init__(self, width: int = 32, residual_blocks: int = 5, output: str = "sigmoid"):
        super().__init__()
        if output not in OUTPUTS:
            raise UserError(f"--output must be one of {', '.join(OUTPUTS)}, got {output!r}")
        w = width
        self.width, self.residual_blocks, self.output = width, residual_blocks, output
        self.down = nn.Sequential(_conv(3, w, 9), _norm(w), nn.ReLU(inplace=True),
                                  _conv(w, 2 * w, 3, 2), _norm(2 * w), nn.ReLU(inplace=True),
                                  _conv(2 * w, 4 * w, 3, 2), _norm(4 * w), nn.ReLU(inplace=True))
        self.res = nn.Sequential(*[ResidualBlock(4 * w) for _ in range(residual_blocks)])
        self.up = nn.Sequential(Upsample(4 * w, 2 * w), _norm(2 * w), nn.ReLU(inplace=True),
                                Upsample(2 * w, w), _norm(w), nn.ReLU(inplace=True),
                                _conv(w, 3, 9))

    def forward(self, x):
        h, w = x.shape[-2:]
        if min(h, w) < MIN_SIDE:
            raise UserError(f"images must be at least {MIN_SIDE} pixels on each side for a style network, got {w}x{h}")
        y = self.up(self.res(self.down(x)))[..., :h, :w]
        return torch.sigmoid(y) if self.output == "sigmoid" else y

    def arguments(self) -> dict[str, int]:
        """What rebuilds this network from its weights file (recorded in the file's metadata)."""
        return {"width": self.width, "residual_blocks": self.residual_blocks, "output": self.output}
