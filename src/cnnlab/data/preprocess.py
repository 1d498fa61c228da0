"""Preprocess: how a model wants its photos, one class for every layer that needs it.

A registered ImageNet network declares it with its registry entry (models/registry.py), a finished run
carries it in its weights metadata (runs.RunMeta.view()), and the data layer decodes a dataset's photos
by it (data.load(cfg, view)). It lives here, in the lowest layer that uses it, so that data, models and
runs share the one definition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Preprocess:
    """How a model wants its input: resize the shorter side, optionally center-crop, normalize.

    ``fixed_size`` models (e.g. with a flatten + dense head) always get resize + square crop; others
    may take the whole image with its shorter side resized (no crop), which keeps every pixel visible.
    """

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] | None = None
    """None: the data's own statistics (a network trained from scratch on it)."""
    std: tuple[float, ...] | None = None
    fixed_size: bool = False

    def __call__(self, image: torch.Tensor, crop: bool | None = None) -> torch.Tensor:
        """uint8 [3, H, W] -> normalized float [3, h, w]."""
        from torchvision.transforms import v2

        do_crop = self.fixed_size if crop is None else (crop or self.fixed_size)
        steps = [v2.Resize(self.resize if do_crop else self.crop, antialias=True)]
        if do_crop:
            steps.append(v2.CenterCrop(self.crop))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(self.mean, self.std)]
        return v2.Compose(steps)(image)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Normalized float [..., 3, h, w] -> [0, 1] RGB, for display."""
        mean = torch.tensor(self.mean, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(-1, 1, 1)
        return (x * std + mean).clamp(0, 1)
