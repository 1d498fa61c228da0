"""Batched augmentation moves pixels where it should; splits and shards are what they claim."""

import pytest
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


@pytest.mark.parametrize("size", [1, 4, 5, 8])
def test_cutout_zeros_a_square_of_exactly_its_size(size):
    x = torch.full((64, 3, 16, 16), 200, dtype=torch.uint8)
    out = augment.cutout(x, size, torch.Generator().manual_seed(0))
    zero = (out == 0).all(1)
    assert ((out == 0) == zero.unsqueeze(1)).all()  # all channels together
    counts = zero.flatten(1).sum(1)
    assert counts.max() == size * size  # squares inside the image have exactly size x size pixels
    assert (counts > 0).all() and (counts <= size * size).all()  # those crossing the border fewer
    for img in zero:
        rows, cols = img.any(1).nonzero().flatten(), img.any(0).nonzero().flatten()
        assert len(rows) <= size and len(cols) <= size
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)  # one block
        assert img[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a filled rectangle


def test_epoch_draws_are_per_position_so_a_split_batch_is_augmented_alike():
    cfg = AugmentConfig(translate=3, flip=True, cutout=4)
    aug = augment.BatchAugment(cfg, 16, seed=0)
    x = torch.randint(0, 255, (10, 3, 16, 16), dtype=torch.uint8)
    order = torch.randperm(10, generator=torch.Generator().manual_seed(1))
    draws = aug.draw(order, 0, torch.Generator().manual_seed(2))
    whole = aug.apply(x, draws, torch.arange(10))
    even, odd = aug.apply(x[0::2], draws, torch.arange(0, 10, 2)), aug.apply(x[1::2], draws, torch.arange(1, 10, 2))
    assert torch.equal(whole[0::2], even) and torch.equal(whole[1::2], odd)


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


def _batches(n=103, batch_size=20, rank=0, world_size=1, **kw):
    from cnnlab.data.loader import TensorBatches

    images = torch.arange(n).view(n, 1, 1, 1).expand(n, 3, 4, 4).to(torch.uint8).contiguous()
    aug = augment.BatchAugment(AugmentConfig(translate=1, flip=True), 4, seed=0)
    return TensorBatches(images, torch.arange(n), batch_size, mean=(0.0,) * 3, std=(1 / 255,) * 3, shuffle=True,
                         seed=3, augment=aug, rank=rank, world_size=world_size, **kw)


def test_ranks_take_disjoint_shares_of_each_global_batch_that_add_up_to_one_process():
    single = list(_batches(n=104).epoch(2))
    ranks = [list(_batches(n=104, rank=r, world_size=2).epoch(2)) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 6  # 5 x 20 and a last batch of 4
    seen = []
    for b, (x, y) in enumerate(single):
        (x0, y0), (x1, y1) = ranks[0][b], ranks[1][b]
        assert len(y0) == len(y1) == len(y) // 2 and not set(y0.tolist()) & set(y1.tolist())
        assert sorted(y0.tolist() + y1.tolist()) == sorted(y.tolist())
        assert torch.equal(x[0::2], x0) and torch.equal(x[1::2], x1)  # augmented as in one process
        seen += y.tolist()
    assert sorted(seen) == list(range(104))  # every image once per epoch
    assert _batches(n=104, rank=1, world_size=2).num_examples == 52
    # a last batch of 3 is trimmed to 2 (a multiple of the processes), and then dropped: 1 image per
    # process would break batch norm
    assert len(_batches(n=103, world_size=2)) == 5 and len(_batches(n=103)) == 6
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        _batches(world_size=3)


def test_validation_and_training_are_disjoint_through_data_load(fake_cifar_root):
    from cnnlab import data
    from cnnlab.config import DataConfig

    def keys(images):
        return {bytes(img.flatten().tolist()) for img in images}

    full = data.load(DataConfig(root=str(fake_cifar_root), download=False, val_size=0))
    split = data.load(DataConfig(root=str(fake_cifar_root), download=False, val_size=100, limit_train=150))
    assert len(split.val_labels) == 100 and len(split.train_labels) == 150
    assert not keys(split.val_images) & keys(split.train_images)
    assert keys(split.val_images) | keys(split.train_images) <= keys(full.train_images)
    assert not keys(split.test_images) & keys(full.train_images)  # the test set is its own file
    again = data.load(DataConfig(root=str(fake_cifar_root), download=False, val_size=100))
    assert torch.equal(again.val_images, split.val_images)  # the split does not depend on limit_train
    assert torch.equal(again.train_images[:150], split.train_images)
