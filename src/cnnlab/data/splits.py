"""Seeded, stratified train/validation splits."""

from __future__ import annotations

import torch


def stratified_split(labels: torch.Tensor, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train_indices, val_indices): val_size examples with the class proportions of `labels`.

    Each class contributes round(val_size * share) examples (the rounding remainder goes to the largest
    classes); both index lists are sorted, so "the first N training images" keeps its meaning.
    """
    n = len(labels)
    if val_size <= 0:
        return torch.arange(n), torch.empty(0, dtype=torch.long)
    if val_size >= n:
        raise ValueError(f"val_size {val_size} must be smaller than the {n} training examples")
    gen = torch.Generator().manual_seed(seed)
    classes, counts = torch.unique(labels, return_counts=True)
    quota = (counts.double() * val_size / n).floor().long()
    remainder = val_size - int(quota.sum())
    quota[torch.argsort(counts, descending=True, stable=True)[:remainder]] += 1
    val_parts = []
    for cls, q in zip(classes.tolist(), quota.tolist()):
        members = torch.nonzero(labels == cls).flatten()
        val_parts.append(members[torch.randperm(len(members), generator=gen)[:q]])
    val = torch.sort(torch.cat(val_parts)).values
    mask = torch.ones(n, dtype=torch.bool)
    mask[val] = False
    return torch.nonzero(mask).flatten(), val
