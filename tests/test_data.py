"""The input pipeline: batches by index, per-batch preprocessing, the digits split, the image cache."""

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from cnnlab.data.batches import Preprocess, batches, channel_stats, epoch_order
from cnnlab.data.sources import Split, load_digits, load_imagefolder
from cnnlab.training.distributed import Distributed


def test_every_sample_is_seen_once_per_epoch_in_a_seeded_order():
    split = Split(torch.arange(100, dtype=torch.uint8).view(100, 1, 1, 1), torch.arange(100))
    order = epoch_order(100, seed=3, epoch=0)
    seen = torch.cat([labels for _, labels in batches(split, 32, order)])
    assert sorted(seen.tolist()) == list(range(100))
    assert torch.equal(order, epoch_order(100, seed=3, epoch=0))
    assert not torch.equal(order, epoch_order(100, seed=3, epoch=1))
    assert not torch.equal(order, epoch_order(100, seed=4, epoch=0))
    resumed = torch.cat([labels for _, labels in batches(split, 32, order, start=2)])
    assert torch.equal(resumed, seen[64:])


def test_ranks_split_an_epoch_between_them_with_equal_step_counts():
    order = epoch_order(101, seed=0, epoch=0)
    shards = [Distributed(rank, 3).shard(order, pad=True) for rank in range(3)]
    assert {len(s) for s in shards} == {34}
    assert set(torch.cat(shards).tolist()) == set(range(101))
    unpadded = [Distributed(rank, 3).shard(torch.arange(101), pad=False) for rank in range(3)]
    assert sorted(torch.cat(unpadded).tolist()) == list(range(101))


@pytest.mark.parametrize("size", [(28, 28), (96, 96), (20, 40), (5, 5)])
def test_per_batch_resize_and_normalize_match_torchvision_transforms(size):
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    mean, std = channel_stats(images)
    ours = Preprocess(size, mean, std)(images)
    reference = v2.Compose(
        [
            v2.ToDtype(torch.float32, scale=True),
            v2.Resize(size, antialias=True),
            v2.Normalize(mean.tolist(), std.tolist()),
        ]
    )(images)
    assert ours.shape == (4, 3, *size)
    assert torch.allclose(ours, reference, atol=2e-2), (ours - reference).abs().max()


def test_channel_stats_are_the_training_split_statistics():
    images = torch.randint(0, 256, (50, 2, 7, 9), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk=7)
    scaled = images.double() / 255
    assert torch.allclose(mean.double(), scaled.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), scaled.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)


def test_digits_split_is_stratified_fixed_and_uint8():
    first, second = load_digits(0.2, 0), load_digits(0.2, 0)
    assert torch.equal(first.test.labels, second.test.labels)
    assert len(first.train) == 1437 and len(first.test) == 360
    assert first.train.images.dtype == torch.uint8 and first.train.images.shape[1:] == (1, 8, 8)
    assert first.train.images.max() == 255
    counts = torch.bincount(first.test.labels)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 of each digit
    assert not torch.equal(load_digits(0.2, 1).test.labels, first.test.labels)


def test_imagefolder_decodes_once_then_reads_the_cache(tmp_path):
    from PIL import Image

    for part in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / "img" / part / name).mkdir(parents=True)
            Image.fromarray(np.full((10, 12, 3), 200 if name == "a" else 30, np.uint8)).save(
                tmp_path / "img" / part / name / "x.png"
            )
    cache = tmp_path / "cache"
    first = load_imagefolder(str(tmp_path / "img"), [8, 8], 1, str(cache))
    assert len(list(cache.glob("*.pt"))) == 1
    again = load_imagefolder(str(tmp_path / "img"), [8, 8], 1, str(cache))
    assert torch.equal(first.train.images, again.train.images) and again.classes == ["a", "b"]
    assert first.train.images.shape == (2, 1, 8, 8) and first.train.images[0].min() == 200
    Image.fromarray(np.full((10, 12, 3), 90, np.uint8)).save(tmp_path / "img" / "train" / "a" / "y.png")
    changed = load_imagefolder(str(tmp_path / "img"), [8, 8], 1, str(cache))
    assert len(changed.train) == 3 and len(list(cache.glob("*.pt"))) == 2
