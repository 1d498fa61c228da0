"""Batches from whole-dataset uint8 tensors: shuffled and augmented per epoch, normalized on the fly.

No per-sample Dataset/DataLoader: the dataset lives in memory (on the GPU when training there) and each
batch is a slice plus a few tensor ops. Shuffling and augmentation of epoch `e` use a generator seeded
from (seed, e), so a resumed run replays exactly the batches an uninterrupted run would have seen.
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

    With ``world_size > 1`` (torchrun), each rank takes every world_size-th example of the epoch's
    permutation, so ranks see disjoint shards of equal size.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, *,
                 mean: tuple[float, ...], std: tuple[float, ...], shuffle: bool = False,
                 augment: BatchAugment | None = None, seed: int = 0, device: torch.device | str = "cpu",
                 channels_last: bool = False, rank: int = 0, world_size: int = 1,
                 low_res: tuple[int, int] | None = None):
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
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255

    @property
    def num_examples(self) -> int:
        return len(self.labels) // self.world_size if self.world_size > 1 else len(self.labels)

    def __len__(self) -> int:
        n = self.num_examples
        full, rest = divmod(n, self.batch_size)
        # A last batch of one image would break batch norm's statistics: drop it.
        return full + (1 if rest > 1 else 0)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def epoch(self, epoch: int = 0, max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of one epoch (the first `max_batches` of them, for fractional epochs)."""
        gen = epoch_generator(self.seed, epoch)
        n = len(self.labels)
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        if self.world_size > 1:
            order = order[: self.num_examples * self.world_size][self.rank:: self.world_size]
        batches = len(self) if max_batches is None else min(max_batches, len(self))
        for b in range(batches):
            idx = order[b * self.batch_size: (b + 1) * self.batch_size]
            dev_idx = idx.to(self.device)
            images = self.images[dev_idx]
            if self.augment is not None:
                images = self.augment(images, idx, epoch, gen)
            x = self.normalize(images)
            if self.low_res and epoch < self.low_res[1]:
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
    whole = int(math.floor(epochs))
    steps = [len(batches)] * whole
    frac = epochs - whole
    if frac > 1e-9:
        steps.append(max(1, int(math.ceil(frac * len(batches)))))
    return steps
