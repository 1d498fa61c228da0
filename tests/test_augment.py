"""Batched augmentation moves pixels where it should."""

import torch

from cnnlab.config import AugmentConfig
from cnnlab.data import augment
from cnnlab.data.splits import stratified_split


def _ramp(n=2):
    return torch.arange(n * 3 * 8 * 8, dtype=torch.int64).view(n, 3, 8, 8).to(torch.uint8)


def test_translate_moves_pixels_right_and_down():
    x = _ramp()
    out = augment.translate(x, dx=torch.tensor([2, -1]), dy=torch.tensor([1, 0]), max_shift=2, pad_mode="zeros")
    # image 0 moved right 2, down 1: out[y, x] = in[y-1, x-2]; the uncovered border is zero
    assert torch.equal(out[0, :, 1:, 2:], x[0, :, :-1, :-2])
    assert (out[0, :, 0, :] == 0).all() and (out[0, :, :, :2] == 0).all()
    # image 1 moved left 1
    assert torch.equal(out[1, :, :, :-1], x[1, :, :, 1:])
    assert (out[1, :, :, -1] == 0).all()


def test_translate_reflect_and_edge_fill_from_the_image():
    x = _ramp(1)
    right = augment.translate(x, torch.tensor([1]), torch.tensor([0]), 1, "reflect")
    assert torch.equal(right[0, :, :, 0], x[0, :, :, 1])  # reflect: column -1 mirrors column 1
    edge = augment.translate(x, torch.tensor([1]), torch.tensor([0]), 1, "edge")
    assert torch.equal(edge[0, :, :, 0], x[0, :, :, 0])  # edge: column -1 repeats column 0


def test_shift_in_pixels_or_fraction():
    assert augment.shift_pixels(0.1, 32) == 3
    assert augment.shift_pixels(2, 32) == 2


def test_flip_where_mirrors_only_masked():
    x = _ramp()
    out = augment.flip_where(x, torch.tensor([True, False]))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


def test_alternating_flip_covers_both_ways_in_two_epochs():
    idx = torch.arange(1000)
    even = augment.alternating_flip_mask(idx, 0, seed=3)
    odd = augment.alternating_flip_mask(idx, 1, seed=3)
    assert torch.equal(even, ~odd)
    assert 0.4 < even.float().mean() < 0.6


def test_batch_augment_is_reproducible_and_random_per_image():
    cfg = AugmentConfig(translate=4, flip=True)
    aug = augment.BatchAugment(cfg, 32, seed=0)
    x = torch.randint(0, 255, (64, 3, 32, 32), dtype=torch.uint8)
    a = aug(x, torch.arange(64), 0, torch.Generator().manual_seed(5))
    b = aug(x, torch.arange(64), 0, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    changed = (a != x).flatten(1).any(1)
    assert changed.float().mean() > 0.8  # nearly every image moved or flipped


def test_cutout_zeros_a_square():
    x = torch.full((4, 3, 16, 16), 200, dtype=torch.uint8)
    out = augment.cutout(x, 4, torch.Generator().manual_seed(0))
    zeros = (out == 0).all(1).flatten(1).sum(1)
    assert ((zeros > 0) & (zeros <= 25)).all()


def test_stratified_split_keeps_class_shares_and_is_seeded():
    labels = torch.arange(1000) % 10
    labels[:100] = 0  # unbalanced
    train, val = stratified_split(labels, 100, seed=1)
    assert len(val) == 100 and len(train) == 900
    assert not set(train.tolist()) & set(val.tolist())
    share = torch.bincount(labels[val], minlength=10).float() / 100
    full = torch.bincount(labels, minlength=10).float() / 1000
    assert torch.allclose(share, full, atol=0.011)
    assert torch.equal(val, stratified_split(labels, 100, seed=1)[1])
    assert not torch.equal(val, stratified_split(labels, 100, seed=2)[1])


def test_progressive_resizing_downscales_only_the_first_epochs():
    from cnnlab.data.loader import TensorBatches

    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    batches = TensorBatches(images, torch.arange(40) % 10, 20, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True,
                            channels_last=True, low_res=(24, 2))
    sizes = [[tuple(x.shape[-2:]) for x, _ in batches.epoch(e)] for e in range(3)]
    assert sizes == [[(24, 24)] * 2, [(24, 24)] * 2, [(32, 32)] * 2]
    x, _ = next(batches.epoch(0))
    assert x.is_contiguous(memory_format=torch.channels_last)
    full_size = TensorBatches(images, torch.arange(40) % 10, 20, mean=(0.5,) * 3, std=(0.25,) * 3, shuffle=True)
    full, _ = next(full_size.epoch(0))
    # the low-resolution batch is the full one resized (same images, same order), not other images
    resized = torch.nn.functional.interpolate(full, size=(24, 24), mode="bilinear", antialias=True)
    assert torch.allclose(x, resized, atol=1e-5)
