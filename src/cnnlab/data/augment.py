"""Batched augmentation of uint8 image tensors [N, C, H, W].

Augmenting whole batches with a few tensor ops keeps the data path out of the way: on a 2-core CPU a
per-sample DataLoader costs about a fifth of the epoch time of a small network. All randomness comes from
an explicit ``torch.Generator`` so that an epoch can be replayed exactly (resume, tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..config import AugmentConfig


def shift_pixels(translate: float, size: int) -> int:
    """Maximum shift in pixels: `translate` pixels when >= 1, else that fraction of the side (rounded)."""
    return int(round(translate * size)) if translate < 1 else int(translate)


def pad(images: torch.Tensor, amount: int, mode: str) -> torch.Tensor:
    """Pad H and W by `amount` on each side; mode reflect | zeros | edge."""
    if amount == 0:
        return images
    torch_mode = {"reflect": "reflect", "zeros": "constant", "edge": "replicate"}[mode]
    if torch_mode == "constant":
        return F.pad(images, (amount,) * 4)
    # reflect/replicate padding is implemented for float tensors only.
    return F.pad(images.float(), (amount,) * 4, mode=torch_mode).to(images.dtype)


def translate(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, max_shift: int,
              pad_mode: str = "reflect") -> torch.Tensor:
    """Shift image i right by dx[i] and down by dy[i] pixels (|d| <= max_shift), filling per pad_mode.

    One gather over a padded copy, whatever the mix of shifts in the batch.
    """
    if max_shift == 0:
        return images
    n, c, h, w = images.shape
    padded = pad(images, max_shift, pad_mode)
    dev = images.device
    rows = (max_shift - dy.to(dev)).view(n, 1, 1, 1) + torch.arange(h, device=dev).view(1, 1, h, 1)
    cols = (max_shift - dx.to(dev)).view(n, 1, 1, 1) + torch.arange(w, device=dev).view(1, 1, 1, w)
    batch = torch.arange(n, device=dev).view(n, 1, 1, 1)
    chan = torch.arange(c, device=dev).view(1, c, 1, 1)
    return padded[batch, chan, rows, cols]


def random_translate(images: torch.Tensor, max_shift: int, generator: torch.Generator,
                     pad_mode: str = "reflect") -> torch.Tensor:
    """Independent uniform integer shifts in [-max_shift, max_shift] along x and y."""
    n = images.shape[0]
    dx = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator)
    dy = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator)
    return translate(images, dx, dy, max_shift, pad_mode)


def flip_where(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror (left-right) the images where mask is True."""
    return torch.where(mask.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)


def alternating_flip_mask(indices: torch.Tensor, epoch: int, seed: int) -> torch.Tensor:
    """A fixed random half of the dataset is flipped on even epochs, the other half on odd ones.

    Over two epochs every image is seen both ways, which beats independent coin flips (airbench).
    """
    # A cheap integer hash of (index, seed) gives a per-image bit that does not depend on batch order.
    h = (indices * 2654435761 + seed * 40503) % 4294967296
    bit = (h >> 16) & 1
    return (bit ^ (epoch & 1)).bool()


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one random size x size square per image (the square may cross the border)."""
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n, 1, 1), generator=generator)
    cx = torch.randint(0, w, (n, 1, 1), generator=generator)
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return images.masked_fill(inside.unsqueeze(1).to(images.device), 0)


class BatchAugment:
    """The training augmentation of a config, applied to a uint8 batch.

    ``indices`` are the dataset positions of the batch (needed by alternating flips); ``epoch`` and the
    generator make each epoch's augmentation reproducible.
    """

    def __init__(self, cfg: AugmentConfig, image_size: int, seed: int = 0):
        self.cfg = cfg
        self.max_shift = shift_pixels(cfg.translate, image_size)
        self.seed = seed

    @property
    def active(self) -> bool:
        return bool(self.max_shift or self.cfg.flip or self.cfg.cutout)

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int,
                 generator: torch.Generator) -> torch.Tensor:
        if self.cfg.flip:
            if self.cfg.flip_mode == "alternating":
                mask = alternating_flip_mask(indices, epoch, self.seed)
            else:
                mask = torch.rand(images.shape[0], generator=generator) < 0.5
            images = flip_where(images, mask)
        if self.max_shift:
            images = random_translate(images, self.max_shift, generator, self.cfg.pad_mode)
        if self.cfg.cutout:
            images = cutout(images, self.cfg.cutout, generator)
        return images
