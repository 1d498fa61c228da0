"""The objective a style network trains on in the engine: the perceptual losses of optimize.StyleObjective on
the network's output, plus the stability term that keeps video from flickering.

Apart from train.py because it is a loss, not a training run's wiring: the stability test and the benchmarks
build it on their own networks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .optimize import StyleObjective


class PerceptualObjective:
    """Content (output vs its input), style (output vs the painting), TV; with a stability weight, also the
    mean squared difference between the output and the model's output for the input plus Gaussian noise (both
    passes trained) and, with a shift, for a window of the input moved by up to `shift` pixels, compared with
    the same window of the output (away from the window's border, where the two see different padding). The
    noise and the shift of step N are drawn from a generator seeded by (seed, N), N being the schedule's
    checkpointed step count, so a resumed run draws what an uninterrupted one does."""

    def __init__(self, objective: StyleObjective, model: torch.nn.Module | None = None, stability_weight: float = 0.0,
                 noise: float = 0.0, seed: int = 0, step: Callable[[], int] = lambda: 0, shift: int = 0):
        self.objective, self.model = objective, model
        self.stability_weight, self.noise, self.shift = stability_weight, noise, shift
        self.seed, self.step = seed, step

    def __call__(self, outputs: torch.Tensor, inputs: torch.Tensor, _labels: torch.Tensor) -> torch.Tensor:
        targets = self.objective.content_targets(inputs)
        loss = self.objective(outputs, targets)["total_loss"]
        if self.stability_weight and self.model is not None:
            loss = loss + self.stability_weight * self.instability(outputs, inputs)
        return loss

    def instability(self, outputs: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Mean squared change of the output under this step's noise (and move)."""
        g = torch.Generator().manual_seed((self.seed * 2**32 + self.step()) % 2**64)
        noise = torch.randn(inputs.shape, generator=g).to(inputs.device, inputs.dtype)
        moved, expected = inputs + self.noise * noise, outputs
        if self.shift:
            moved, expected = _moved_windows(moved, outputs, self.shift, g)
        change = (expected.float() - self.model(moved.clamp(0, 1)).float()).pow(2)
        return _inside(change, self.shift).mean()


def _inside(image: torch.Tensor, margin: int) -> torch.Tensor:
    """`image` without a border of `margin` pixels."""
    return image[..., margin:image.shape[-2] - margin, margin:image.shape[-1] - margin]


def _moved_windows(inputs: torch.Tensor, outputs: torch.Tensor, shift: int, g: torch.Generator):
    """The same window, `shift` pixels smaller on each axis, of the inputs and of the outputs, at an offset of 0
    to `shift` pixels drawn from `g`: the window is the input as a camera moved by that offset would see it,
    and the outputs' window is what the network should paint for it."""
    top, left = (int(v) for v in torch.randint(0, shift + 1, (2,), generator=g))
    h, w = inputs.shape[-2] - shift, inputs.shape[-1] - shift
    return inputs[..., top:top + h, left:left + w], outputs[..., top:top + h, left:left + w]
