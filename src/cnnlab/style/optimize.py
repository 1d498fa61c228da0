"""Optimization-based style transfer (Gatys et al., CVPR 2016): the pixels of one image are optimized so that
its loss-network features match the content photo's at the content layer and its Gram matrices match the
painting's at the style layers, with a total-variation prior.

Choices where the paper leaves room (and why):
- The image is optimized in pixel space: L-BFGS (the paper's, and the fastest to a good image per loss
  evaluation; its line search wants an unconstrained problem, so the image is clamped to [0, 1] once, at the
  end) or Adam (clamped after every step). One iteration = one loss evaluation.
- The style image is resized to the output's longest side, so its brush strokes keep their scale.
- Loss terms are relative to their targets (losses.py), so one set of weights serves every loss network.
- ``preserve_colors``: luminance-only transfer (Gatys et al. 2017, "Controlling perceptual factors"): the
  output's luminance with the content photo's chrominance (YCbCr), so a painting's palette does not replace
  the photo's colours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from ..config import one_of
from ..errors import UserError
from . import losses
from .lossnet import LossNetwork


@dataclass
class OptimizeSettings:
    """Everything that defines one optimization-based stylization (recorded in its summary.json).

    Loaded like every settings object (config.load_settings: YAML, KEY=VALUE, typed, checked); the docstring
    under each field is also its `cnnlab stylize optimize` flag's help."""

    size: int = 256
    """The output's longest side in pixels (the content photo is resized to it)."""
    iterations: int = 300
    """Loss evaluations (one L-BFGS evaluation or one Adam step each)."""
    optimizer: str = one_of("lbfgs", "adam")
    """lbfgs (the paper's, fastest to a good image) | adam."""
    lr: float = 0.02
    """Adam's step size in pixel units (L-BFGS uses its line-free default step of 1)."""
    content_weight: float = 1.0
    """Content loss weight."""
    style_weight: float = 10.0
    """Style loss weight."""
    tv_weight: float = 10.0
    """Total-variation weight. Total variation is a mean of squared pixel differences (about 0.003 for a photo,
    0.03 for a noisy stylization), so its weight is larger than the relative terms' to matter."""
    init: str = one_of("content", "noise")
    """The image the optimization starts from."""
    style_mix: list[float] = field(default_factory=lambda: [1.0])
    """One weight per style image (several --style images: the mix of their Gram matrices)."""
    preserve_colors: bool = False
    """Keep the photo's colours: luminance-only transfer."""
    snapshot_every: int = 0
    """Keep the image every K iterations for the evolution strip, evolution.png (0: no snapshots)."""
    seed: int = 0
    """Seed of the noise start."""

    def check(self) -> None:
        """Run by the loader after every load (and by optimize() before anything is computed)."""
        check_settings(self)


def resize_longest(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 or float [3, H, W] -> float [1, 3, h, w] in [0, 1] with max(h, w) = size (aspect kept)."""
    x = image.float().unsqueeze(0)
    if image.dtype == torch.uint8:
        x = x / 255
    h, w = x.shape[-2:]
    scale = size / max(h, w)
    out = (max(1, round(h * scale)), max(1, round(w * scale)))
    return F.interpolate(x, size=out, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return torch.stack([y, (b - y) / 1.772 + 0.5, (r - y) / 1.402 + 0.5], 1)  # JPEG's full-range YCbCr


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    y, cb, cr = x.unbind(1)
    r = y + 1.402 * (cr - 0.5)
    b = y + 1.772 * (cb - 0.5)
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return torch.stack([r, g, b], 1).clamp(0, 1)


def keep_content_colors(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The stylized image's luminance with the content image's chrominance."""
    s, c = rgb_to_ycbcr(stylized), rgb_to_ycbcr(content)
    return ycbcr_to_rgb(torch.cat([s[:, :1], c[:, 1:]], 1))


class StyleObjective:
    """content_weight · content + style_weight · style + tv_weight · TV of an image batch, against fixed
    targets (one content photo's features, the style mix's Gram matrices). Used by both methods."""

    def __init__(self, net: LossNetwork, styles: Sequence[torch.Tensor], style_mix: Sequence[float],
                 content_weight: float, style_weight: float, tv_weight: float):
        if len(style_mix) != len(styles):
            raise UserError(f"--style-weights has {len(style_mix)} values for {len(styles)} --style images; give "
                            f"one weight per style image")
        if any(w < 0 for w in style_mix) or sum(style_mix) <= 0:
            raise UserError(f"--style-weights must be 0 or more with a positive sum, got {list(style_mix)}")
        self.net = net
        self.weights = (content_weight, style_weight, tv_weight)
        with torch.no_grad():
            style_features = [{k: v.detach() for k, v in net(s).items() if k in net.style_weights} for s in styles]
        self.style_targets = losses.style_targets(style_features, style_mix, net.choice.smooth)

    def content_targets(self, content: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return {k: v.detach() for k, v in self.net(content).items() if k in self.net.content_layers}

    def __call__(self, images: torch.Tensor, content_targets: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """{'content_loss', 'style_loss', 'tv_loss', 'total_loss'} (scalars with gradients)."""
        features = self.net(images)
        smooth, relative = self.net.choice.smooth, self.net.choice.relative
        content = losses.content_loss(features, content_targets, self.net.content_layers, smooth, relative)
        style = losses.style_loss(features, self.style_targets, self.net.style_weights, smooth, relative)
        tv = losses.total_variation_l2(images)
        cw, sw, tw = self.weights
        return {"content_loss": content, "style_loss": style, "tv_loss": tv,
                "total_loss": cw * content + sw * style + tw * tv}


@dataclass
class OptimizeResult:
    image: torch.Tensor                       # [1, 3, h, w] in [0, 1]
    initial: dict[str, float]
    final: dict[str, float]
    snapshots: list[tuple[int, torch.Tensor]]  # (iteration, image)
    history: list[dict[str, float]]
    seconds: float
    settings: dict


def _floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


def check_weights(**weights: float) -> None:
    """Loss weights must be finite and 0 or more (shared by optimize and train)."""
    import math

    for name, value in weights.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UserError(f"--{name.replace('_', '-')} must be a finite number of 0 or more, got {value}")


def check_settings(s: OptimizeSettings) -> None:
    """Every setting checked before anything is computed or written."""
    if s.optimizer not in ("lbfgs", "adam"):
        raise UserError(f"--optimizer must be lbfgs or adam, got {s.optimizer!r}")
    if s.init not in ("content", "noise"):
        raise UserError(f"--init must be content or noise, got {s.init!r}")
    if s.iterations < 1 or s.size < 16 or s.snapshot_every < 0:
        raise UserError(f"--iterations must be 1 or more, --size 16 or more and --snapshot-every 0 or more, got "
                        f"{s.iterations}, {s.size} and {s.snapshot_every}")
    check_weights(content_weight=s.content_weight, style_weight=s.style_weight, tv_weight=s.tv_weight)
    if not s.lr > 0:
        raise UserError(f"--lr must be more than 0, got {s.lr}")


def stylize(net: LossNetwork, content: torch.Tensor, styles: Sequence[torch.Tensor], s: OptimizeSettings,
            on_iteration: Callable[[int, dict[str, float]], None] | None = None,
            autocast=None) -> OptimizeResult:
    """Optimize an image: content / styles are uint8 or float [3, H, W] images (read_image's output)."""
    import contextlib
    import time

    check_settings(s)
    device = net.mean.device
    amp = autocast or contextlib.nullcontext
    content_x = resize_longest(content, s.size).to(device)
    style_x = [resize_longest(st, s.size).to(device) for st in styles]
    with amp():
        objective = StyleObjective(net, style_x, s.style_mix, s.content_weight, s.style_weight, s.tv_weight)
        targets = objective.content_targets(content_x)
    generator = torch.Generator().manual_seed(s.seed)
    start_image = content_x.clone() if s.init == "content" else \
        torch.rand(content_x.shape, generator=generator).to(device)
    image = start_image.clone().requires_grad_(True)
    history: list[dict[str, float]] = []
    snapshots: list[tuple[int, torch.Tensor]] = [(0, start_image.detach().cpu())] if s.snapshot_every else []

    def evaluate() -> torch.Tensor:
        with amp():
            terms = objective(image, targets)
        record = _floats(terms)
        history.append(record)
        n = len(history) - 1  # evaluations before this one = iterations done
        if s.snapshot_every and n and n % s.snapshot_every == 0:
            snapshots.append((n, image.detach().clamp(0, 1).cpu()))
        if on_iteration:
            on_iteration(n, record)
        return terms["total_loss"]

    started = time.perf_counter()
    if s.optimizer == "lbfgs":
        optimizer = torch.optim.LBFGS([image], lr=1.0, max_iter=s.iterations, max_eval=s.iterations,
                                      tolerance_grad=-1, tolerance_change=-1, history_size=50)

        def closure():
            optimizer.zero_grad(set_to_none=True)
            loss = evaluate()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            image.clamp_(0, 1)
    else:
        optimizer = torch.optim.Adam([image], lr=s.lr)
        for _ in range(s.iterations):
            optimizer.zero_grad(set_to_none=True)
            evaluate().backward()
            optimizer.step()
            with torch.no_grad():
                image.clamp_(0, 1)
    with torch.no_grad(), amp():
        final = _floats(objective(image, targets))
    seconds = time.perf_counter() - started
    out = image.detach().clamp(0, 1)
    if s.preserve_colors:
        out = keep_content_colors(out, content_x)
    if s.snapshot_every and (not snapshots or snapshots[-1][0] != len(history)):
        snapshots.append((len(history), out.cpu()))
    return OptimizeResult(out.cpu(), history[0], final, snapshots, history, seconds, asdict(s))
