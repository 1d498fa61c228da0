"""Activation maximization: synthesize the input that a filter, a dense unit or a class logit likes most.

Plain gradient ascent on pixels yields high-frequency noise that excites the unit without meaning
anything. What makes the result an interpretable pattern (Olah et al., "Feature Visualization", Distill
2017, and the Lucid library):
- a decorrelated parametrization: the image is the inverse FFT of a spectrum scaled by 1/frequency, with
  colours decorrelated by ImageNet's colour covariance (``param="fourier"``; ``"pixel"`` is the plain one);
- transformation robustness: a random jitter, scale and rotation of the image at every step;
- total-variation (L1, ``total_variation_l1``) and L2 penalties;
- octaves: optimize a small image first, then upscale and continue (for large inputs).

All targets are optimized at once, as one batch (image i maximizes target i).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..config import one_of
from .subject import Subject

# Square root of ImageNet's colour covariance (Lucid); columns normalized to the largest norm.
_COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR_DECORRELATION = _COLOR_SQRT / _COLOR_SQRT.norm(dim=0).max()


@dataclass
class MaximizeSettings:
    """How an activation maximization runs (filters, classes). Loaded like every settings object
    (config.load_settings); the docstring under a field is also its `cnnlab visualize` flag's help."""

    steps: int = 256
    """Optimization steps per octave."""
    lr: float = 0.05
    """Adam's step size."""
    image_size: int | None = None
    """Side of the synthesized images; None = the model's input size (32 for CIFAR, 224 for ImageNet)."""
    param: str = one_of("fourier", "pixel")
    """The image's parametrization: fourier (a decorrelated 1/f spectrum: patterns) or pixel (plain pixels)."""
    decorrelate: bool = True
    """Decorrelate colours with ImageNet's colour covariance."""
    jitter: float = 1 / 16
    """Random translation, as a fraction of the side."""
    scale: tuple[float, float] = (0.9, 1.1)
    """Range of the random scaling."""
    rotate: float = 10.0
    """Random rotation range, degrees (+/-)."""
    tv_weight: float = 0.05
    """Total-variation weight."""
    l2_weight: float = 0.01
    """L2 weight."""
    octaves: int = 1
    """Optimize a small image first, then upscale and continue, this many times in all."""
    octave_scale: float = 1.4
    """Side ratio from one octave to the next."""
    seed: int = 0
    """Seed of the starting images and the random transformations."""
    batch_size: int = 64
    """Targets optimized at once."""
    init: str = one_of("noise", "grey")
    """Starting image: 'noise' (uniform random pixels) or 'grey' (Lucid's near-grey start)."""
    init_std: float = 0.01
    """Spread of the parametrization's random start."""

    def check(self) -> None:
        """Run by the loader after every load: values the optimization cannot use."""
        from ..errors import UserError

        if self.steps < 0 or self.octaves < 1 or self.batch_size < 1 or self.octave_scale <= 0:
            raise UserError(f"--steps must be 0 or more, --octaves and batch_size 1 or more and octave_scale more "
                            f"than 0, got {self.steps}, {self.octaves}, {self.batch_size} and {self.octave_scale}")
        if not self.lr > 0 or self.tv_weight < 0 or self.l2_weight < 0 or self.init_std < 0:
            raise UserError(f"--lr must be more than 0 and --tv, --l2, init_std 0 or more, got {self.lr}, "
                            f"{self.tv_weight}, {self.l2_weight} and {self.init_std}")
        if self.image_size is not None and self.image_size < 8:
            raise UserError(f"--size must be 8 pixels or more, got {self.image_size}")


@dataclass
class MaximizeResult:
    images: torch.Tensor  # [N, 3, H, W] in [0, 1]
    targets: list[int]
    initial_activation: list[float]
    final_activation: list[float]
    meta: dict = field(default_factory=dict)


class ImageParam(nn.Module):
    """A batch of images in [0, 1] from pixels or a 1/f-scaled spectrum, with optional colour decorrelation."""

    def __init__(self, batch: int, size: int, fourier: bool, decorrelate: bool, std: float, generator):
        super().__init__()
        self.size, self.fourier, self.decorrelate = size, fourier, decorrelate
        if fourier:
            fy = torch.fft.fftfreq(size).view(-1, 1)
            fx = torch.fft.rfftfreq(size).view(1, -1)
            freqs = torch.sqrt(fx ** 2 + fy ** 2)
            self.register_buffer("spectrum_scale", size / torch.clamp(freqs, min=1.0 / size))
            shape = (batch, 3, size, size // 2 + 1, 2)
        else:
            shape = (batch, 3, size, size)
        self.raw = nn.Parameter(torch.randn(shape, generator=generator) * std)

    def _colors(self, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        if not self.decorrelate:
            return x
        m = COLOR_DECORRELATION.to(x.device)
        m = torch.linalg.inv(m) if inverse else m
        return torch.einsum("ij,bjhw->bihw", m, x)

    def logits(self) -> torch.Tensor:
        """The image before the sigmoid."""
        if self.fourier:
            spectrum = torch.view_as_complex(self.raw) * self.spectrum_scale
            x = torch.fft.irfft2(spectrum, s=(self.size, self.size)) / 4.0
        else:
            x = self.raw
        return self._colors(x)

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits())

    @torch.no_grad()
    def set_logits(self, z: torch.Tensor) -> None:
        """Re-parametrize so that logits() == z (used to move to the next octave)."""
        x = self._colors(z, inverse=True)
        if self.fourier:
            spectrum = torch.fft.rfft2(x * 4.0) / self.spectrum_scale
            self.raw.copy_(torch.view_as_real(spectrum))
        else:
            self.raw.copy_(x)


def random_transform(images: torch.Tensor, s: MaximizeSettings, generator: torch.Generator) -> torch.Tensor:
    """Pad with grey, then a random rotation/scale/translation per image, cropped back to the same size."""
    n, _, h, w = images.shape
    pad = max(1, int(round(h * s.jitter)))
    x = F.pad(images, (pad,) * 4, value=0.5)
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(s.rotate)
    scale = s.scale[0] + torch.rand(n, generator=generator) * (s.scale[1] - s.scale[0])
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * pad / (h + 2 * pad))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Sample the central h x w window of the padded image through the random affine map.
    crop = h / (h + 2 * pad)
    theta = torch.stack([torch.stack([cos * crop, -sin * crop, shift[:, 0]], 1),
                         torch.stack([sin * crop, cos * crop, shift[:, 1]], 1)], 1).to(images)
    grid = F.affine_grid(theta, (n, 3, h, w), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def total_variation_l1(images: torch.Tensor) -> torch.Tensor:
    """Per image ([N]): mean absolute (L1) difference of neighbouring pixels, Lucid's penalty, which lets edges
    stay sharp where the squared one (style/losses.total_variation_l2) would blur them."""
    dy = (images[..., 1:, :] - images[..., :-1, :]).abs().flatten(1).mean(1)
    dx = (images[..., :, 1:] - images[..., :, :-1]).abs().flatten(1).mean(1)
    return dx + dy


class _Capture:
    """Forward hook that keeps a module's output."""

    def __init__(self, module: nn.Module):
        self.output: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output):
        self.output = output

    def remove(self):
        self.handle.remove()


def _unit_activation(act: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """act [B, C, H, W] or [B, C]: mean activation of unit targets[i] in image i -> [B]."""
    picked = act[torch.arange(len(targets), device=act.device), targets]
    return picked.flatten(1).mean(1) if picked.ndim > 1 else picked


def maximize(subject: Subject, layer: str | None, targets: list[int],
             settings: MaximizeSettings | None = None) -> MaximizeResult:
    """Images maximizing unit targets[i] of `layer` (None: the model's output logits)."""
    s = settings or MaximizeSettings()
    model = subject.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    device = next(model.parameters()).device
    size = s.image_size or subject.input_size
    fixed = subject.preprocess.fixed_size
    if fixed and size != subject.input_size:
        size = subject.input_size  # a flatten + dense head accepts one input size only
    mean = torch.tensor(subject.preprocess.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(subject.preprocess.std, device=device).view(1, 3, 1, 1)
    capture = _Capture(subject.module(layer)) if layer else None

    def activation(images: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        out = model((images - mean) / std)
        act = capture.output if capture else out
        return _unit_activation(act, units)

    gen = torch.Generator().manual_seed(s.seed)
    all_images, initial, final = [], [], []
    try:
        for start in range(0, len(targets), s.batch_size):
            units = torch.tensor(targets[start:start + s.batch_size], device=device)
            sizes = [max(8, int(round(size / s.octave_scale ** k))) for k in reversed(range(s.octaves))]
            if fixed:
                sizes = [size]
            param = ImageParam(len(units), sizes[0], s.param == "fourier", s.decorrelate, s.init_std, gen).to(device)
            if s.init == "noise":
                noise = torch.rand(len(units), 3, sizes[0], sizes[0], generator=gen).clamp(0.02, 0.98)
                param.set_logits(torch.logit(noise).to(device))
            with torch.no_grad():
                start_images = F.interpolate(param(), size=(size, size), mode="bilinear", align_corners=False)
                initial += activation(start_images, units).tolist()
            for octave, side in enumerate(sizes):
                if octave:
                    z = F.interpolate(param.logits(), size=(side, side), mode="bilinear", align_corners=False)
                    param = ImageParam(len(units), side, s.param == "fourier", s.decorrelate, s.init_std, gen)
                    param = param.to(device)
                    param.set_logits(z.detach())
                optimizer = torch.optim.Adam(param.parameters(), lr=s.lr)
                for _ in range(s.steps):
                    images = param()
                    act = activation(random_transform(images, s, gen), units)
                    loss = (-act + s.tv_weight * total_variation_l1(images)
                            + s.l2_weight * (images - 0.5).pow(2).flatten(1).mean(1)).sum()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
            with torch.no_grad():
                result = F.interpolate(param(), size=(size, size), mode="bilinear", align_corners=False) \
                    if sizes[-1] != size else param()
                final += activation(result, units).tolist()
            all_images.append(result.detach().cpu())
    finally:
        if capture:
            capture.remove()
        for p in model.parameters():
            p.requires_grad_(True)
    return MaximizeResult(torch.cat(all_images), list(targets), initial, final,
                          meta={"layer": layer or "logits", "steps": s.steps, "param": s.param, "size": size})


def first_layer_weights(model: nn.Module) -> tuple[str, torch.Tensor]:
    """(name, kernels as images [out, 3, k, k] in [0, 1]) of the first Conv2d: RGB when it sees 3 channels."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            w = module.weight.detach().float().cpu()
            if w.shape[1] != 3:
                w = w.mean(1, keepdim=True).expand(-1, 3, -1, -1)
            # One scale for all kernels keeps their relative strength visible; 0 is mid-grey.
            return name, (w / (2 * w.abs().max().clamp(min=1e-12)) + 0.5).clamp(0, 1)
    from ..errors import UserError

    raise UserError("the model has no convolutional layer, so there are no first-layer kernels to show")
