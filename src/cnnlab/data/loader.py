"""Batches from whole-dataset uint8 tensors: shuffled and augmented per epoch, normalized on the fly.

No per-sample Dataset/DataLoader: the dataset lives in memory (on the GPU when training there) and each
batch is a slice plus a few tensor ops. Shuffling and augmentation of epoch `e` use a generator seeded
from (seed, e), so a resumed run replays exactly the batches an uninterrupted run would have seen.

Under torchrun, ``batch_size`` is the *global* batch: step b of an epoch covers positions
[b * batch_size, (b + 1) * batch_size) of the epoch's order, and rank r takes every world_size-th of them
starting at r. The union of the ranks' batches is the one-process batch, augmented identically, so the
learning rate (scaled by the global batch) and the recipe do not depend on the number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from .augment import BatchAugment


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


class TensorBatches:
    """Iterable of (inputs float [B, C, H, W], labels int64 [B]) for one split.

    ``low_res=(size, epochs)``: progressive resizing; the first `epochs` epochs (a fraction allowed: the
    switch then happens mid-epoch, at a step) see images downscaled to size x size.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 mean: tuple[float, ...], std: tuple[float, ...], shuffle: bool = False,
                 augment: BatchAugment | None = None, seed: int = 0, device: torch.device | str = "cpu",
                 channels_last: bool = False, rank: int = 0, world_size: int = 1,
                 low_res: tuple[int, float] | None = None, normalize: bool = True):
        if batch_size % world_size:
            raise ValueError(f"the global batch size {batch_size} must be a multiple of the {world_size} processes")
        self.device = torch.device(device)
        self.low_res = low_res if low_res and low_res[0] and low_res[1] else None
        # Keep the uint8 data on the compute device: one copy instead of one per batch.
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment if augment is not None and augment.active else None
        self.seed = seed
        self.channels_last = channels_last
        self.rank, self.world_size = rank, world_size
        self.normalize_images = normalize  # False for tensors that are not images (extracted features)
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255

    @property
    def num_examples(self) -> int:
        """Images per epoch on this rank."""
        return sum(len(self.positions(b)) for b in range(len(self)))

    def _last_batch(self) -> int:
        """Size of the last, partial global batch that is kept (0: none), a multiple of world_size."""
        rest = len(self.labels) % self.batch_size
        rest -= rest % self.world_size
        # A last batch of one image per process would break batch norm's statistics: drop it.
        return rest if rest // self.world_size > 1 else 0

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size + (1 if self._last_batch() else 0)

    def positions(self, b: int) -> torch.Tensor:
        """The positions in the epoch's order that this rank trains on at step b."""
        start = b * self.batch_size
        full = len(self.labels) // self.batch_size
        end = start + (self.batch_size if b < full else self._last_batch())
        return torch.arange(start + self.rank, end, self.world_size)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        if not self.normalize_images:
            return images.float()
        x = (images.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def low_res_steps(self) -> int:
        """Steps (counted from the run's start) that see downscaled images."""
        return int(round(self.low_res[1] * len(self))) if self.low_res else 0

    def epoch(self, epoch: int = 0, max_batches: int | None = None,
              resolution: str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch (the first `max_batches` of them, for fractional epochs).

        `resolution` 'low' or 'full' forces one size (the budget planner's calibration uses it).
        """
        gen = epoch_generator(self.seed, epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        draws = self.augment.draw(order, epoch, gen) if self.augment is not None else None
        batches = len(self) if max_batches is None else min(max_batches, len(self))
        low_steps = self.low_res_steps()
        for b in range(batches):
            positions = self.positions(b)
            idx = order[positions]
            dev_idx = idx.to(self.device)
            images = self.images[dev_idx]
            if draws is not None:
                images = self.augment.apply(images, draws, positions)
            x = self.normalize(images)
            low = epoch * len(self) + b < low_steps if resolution is None else resolution == "low"
            if low and self.low_res:
                x = self.downscale(x, self.low_res[0])
            yield x, self.labels[dev_idx]

    def downscale(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """Antialiased resize of a batch to size x size (progressive resizing)."""
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __iter__(self):
        return self.epoch(0)


def steps_per_epoch(batches: TensorBatches, epochs: float) -> list[int]:
    """Number of steps in each epoch; a fractional last epoch runs that fraction of its batches."""
    n = len(batches)
    total = int(math.ceil(epochs * n - 1e-6))
    whole, rest = divmod(total, n)
    return [n] * whole + ([rest] if rest else [])
