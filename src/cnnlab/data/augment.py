"""Batched augmentation of uint8 image tensors [N, C, H, W].

Augmenting whole batches with a few tensor ops keeps the data path out of the way: on a 2-core CPU a
per-sample DataLoader costs about a fifth of the epoch time of a small network.

The random choices of an epoch (flip, shift, cutout position) are drawn once for every position of the
epoch's shuffled order, from the epoch's seeded generator (:meth:`BatchAugment.draw`), and each batch
applies its slice (:meth:`BatchAugment.apply`). So an epoch can be replayed exactly (resume, tests), and
the images a torchrun rank sees are augmented exactly as they would be in one process: ranks draw
different augmentations because they take different positions, and 2 processes with half the batch
each compute what 1 process computes.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def cutout_mask(cy: torch.Tensor, cx: torch.Tensor, size: int, h: int, w: int) -> torch.Tensor:
    """[N, H, W] True inside a size x size square whose centre pixel is (cy, cx) (rows and columns
    cy - size//2 ... cy - size//2 + size - 1); it may cross the border."""
    top = (cy - size // 2).view(-1, 1, 1)
    left = (cx - size // 2).view(-1, 1, 1)
    ys = torch.arange(h, device=cy.device).view(1, h, 1) - top
    xs = torch.arange(w, device=cx.device).view(1, 1, w) - left
    return (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)


def cutout(images: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Zero one random size x size square per image (the square may cross the border)."""
    n, _, h, w = images.shape
    cy = torch.randint(0, h, (n,), generator=generator)
    cx = torch.randint(0, w, (n,), generator=generator)
    return images.masked_fill(cutout_mask(cy, cx, size, h, w).unsqueeze(1).to(images.device), 0)


def random_crop_boxes(n: int, size: int, min_scale: float, generator: torch.Generator) -> torch.Tensor:
    """[n, 4] (top, left, height, width) of torchvision's RandomResizedCrop (area min_scale..1 of a size x size
    image, aspect 3/4..4/3), drawn from `generator` (torchvision draws from the global RNG, forked here)."""
    from torchvision.transforms import RandomResizedCrop

    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    stub = torch.empty(3, size, size, dtype=torch.uint8)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.tensor([RandomResizedCrop.get_params(stub, [min_scale, 1.0], [3 / 4, 4 / 3])
                             for _ in range(n)], dtype=torch.long)


def resized_crops(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box cut out and resized back to the image's size (antialiased)."""
    from torchvision.transforms.v2 import functional as TF

    size = list(images.shape[-2:])
    return torch.stack([TF.resized_crop(img, *box.tolist(), size, antialias=True) for img, box in zip(images, boxes)])


def color_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Per image: brightness, contrast and saturation multiplied by its three factors (torchvision)."""
    from torchvision.transforms.v2 import functional as TF

    out = []
    for img, (b, c, s) in zip(images, factors.tolist()):
        img = TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(img, b), c), s)
        out.append(img)
    return torch.stack(out)


@dataclass
class EpochDraws:
    """The random choices of one epoch, one entry per position of the epoch's order (None = unused)."""

    flip: torch.Tensor | None = None
    dx: torch.Tensor | None = None
    dy: torch.Tensor | None = None
    cy: torch.Tensor | None = None
    cx: torch.Tensor | None = None
    boxes: torch.Tensor | None = None    # [N, 4] top, left, height, width of a random resized crop
    jitter: torch.Tensor | None = None   # [N, 3] brightness, contrast, saturation factors


class BatchAugment:
    """The training augmentation of a config, applied to uint8 batches (see the module docstring)."""

    def __init__(self, cfg: AugmentConfig, image_size: int, seed: int = 0):
        self.cfg = cfg
        self.image_size = image_size
        self.max_shift = shift_pixels(cfg.translate, image_size)
        self.seed = seed

    @property
    def active(self) -> bool:
        return bool(self.max_shift or self.cfg.flip or self.cfg.cutout or self.cfg.crop_scale or
                    self.cfg.color_jitter)

    def draw(self, order: torch.Tensor, epoch: int, generator: torch.Generator) -> EpochDraws:
        """Every random choice of an epoch whose shuffled dataset indices are `order`."""
        n, draws = len(order), EpochDraws()
        if self.cfg.flip:
            draws.flip = alternating_flip_mask(order, epoch, self.seed) if self.cfg.flip_mode == "alternating" \
                else torch.rand(n, generator=generator) < 0.5
        if self.max_shift:
            draws.dx = torch.randint(-self.max_shift, self.max_shift + 1, (n,), generator=generator)
            draws.dy = torch.randint(-self.max_shift, self.max_shift + 1, (n,), generator=generator)
        if self.cfg.cutout:
            draws.cy = torch.randint(0, self.image_size, (n,), generator=generator)
            draws.cx = torch.randint(0, self.image_size, (n,), generator=generator)
        if self.cfg.crop_scale:
            draws.boxes = random_crop_boxes(n, self.image_size, self.cfg.crop_scale, generator)
        if self.cfg.color_jitter:
            j = self.cfg.color_jitter
            draws.jitter = 1 - j + 2 * j * torch.rand(n, 3, generator=generator)
        return draws

    def apply(self, images: torch.Tensor, draws: EpochDraws, positions: torch.Tensor) -> torch.Tensor:
        """Augment the batch at `positions` of the epoch's order with that epoch's draws."""
        if draws.flip is not None:
            images = flip_where(images, draws.flip[positions])
        if draws.boxes is not None:
            images = resized_crops(images, draws.boxes[positions])
        if draws.dx is not None:
            images = translate(images, draws.dx[positions], draws.dy[positions], self.max_shift, self.cfg.pad_mode)
        if draws.cy is not None:
            _, _, h, w = images.shape
            mask = cutout_mask(draws.cy[positions], draws.cx[positions], self.cfg.cutout, h, w)
            images = images.masked_fill(mask.unsqueeze(1).to(images.device), 0)
        if draws.jitter is not None:
            images = color_jitter(images, draws.jitter[positions])
        return images

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, epoch: int,
                 generator: torch.Generator) -> torch.Tensor:
        """Augment one batch on its own (its dataset `indices` in order): draw, then apply."""
        return self.apply(images, self.draw(indices, epoch, generator), torch.arange(len(indices)))
