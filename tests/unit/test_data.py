"""The input pipeline: batches by index, per-batch preprocessing, the digits split, the image cache,
streaming image files through DataLoader workers."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from cnnlab.data import batches as batches_module
from cnnlab.data.batches import Preprocess, batches, channel_stats, epoch_order, split_stats
from cnnlab.data.sources import FileSplit, Split, load_digits, load_imagefolder
from cnnlab.errors import DataError
from cnnlab.training.distributed import Distributed

LOADER = dict(memory_budget=0.25, skip_unreadable=False)  # configs/dataset/imagefolder.yaml's


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


@pytest.mark.parametrize("size", [(28, 28), (96, 96), (20, 40), (5, 5), (32, 32)])
@pytest.mark.parametrize("normalize", [True, False])
def test_per_batch_resize_and_normalize_match_torchvision_transforms(size, normalize):
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    # Distinct statistics per channel, so a mixed-up channel or a wrong scale or shift shows.
    mean, std = (torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.2, 0.3, 0.4])) if normalize else (None, None)
    ours = Preprocess(size, mean, std)(images) if normalize else Preprocess(size)(images)
    steps = [v2.ToDtype(torch.float32, scale=True), v2.Resize(size, antialias=True)]
    if normalize:
        steps.append(v2.Normalize(mean.tolist(), std.tolist()))
    reference = v2.Compose(steps)(images)
    assert ours.shape == (4, 3, *size) and ours.dtype == torch.float32
    # Normalizing before the resize (one fused pass) only reorders float rounding.
    assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()


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
    for part in ("train", "val"):
        for name in ("a", "b"):
            (tmp_path / "img" / part / name).mkdir(parents=True)
            Image.fromarray(np.full((10, 12, 3), 200 if name == "a" else 30, np.uint8)).save(
                tmp_path / "img" / part / name / "x.png"
            )
    cache = tmp_path / "cache"
    first = load_imagefolder(
        str(tmp_path / "img"), [8, 8], 1, str(cache), stream=False, workers=None, **LOADER
    )
    assert len(list(cache.glob("*.pt"))) == 1
    again = load_imagefolder(
        str(tmp_path / "img"), [8, 8], 1, str(cache), stream=False, workers=None, **LOADER
    )
    assert torch.equal(first.train.images, again.train.images) and again.classes == ["a", "b"]
    assert first.train.images.shape == (2, 1, 8, 8) and first.train.images[0].min() == 200
    Image.fromarray(np.full((10, 12, 3), 90, np.uint8)).save(tmp_path / "img" / "train" / "a" / "y.png")
    changed = load_imagefolder(
        str(tmp_path / "img"), [8, 8], 1, str(cache), stream=False, workers=None, **LOADER
    )
    assert len(changed.train) == 3 and len(list(cache.glob("*.pt"))) == 2


def write_image_folder(root, per_class: dict[str, int]) -> None:
    """root/train|val/<class>/<i>.png: random RGB images of varied sizes (so decoding resizes them)."""
    rng = np.random.default_rng(0)
    for part, count in per_class.items():
        for name in ("cat", "dog", "owl"):
            (root / part / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(9 + i, 14 - i % 3, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / part / name / f"{i}.png")


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_are_the_in_memory_batches_byte_for_byte(tmp_path, workers):
    write_image_folder(tmp_path / "img", {"train": 7, "val": 3})
    load = dict(
        root=str(tmp_path / "img"), image_size=[12, 10], channels=3, cache_dir=str(tmp_path / "c"), **LOADER
    )
    streamed = load_imagefolder(**load, stream=True, workers=workers)
    assert isinstance(streamed.train, FileSplit) and not (tmp_path / "c").exists()  # nothing cached
    memory = load_imagefolder(**load, stream=False, workers=None)
    assert streamed.classes == memory.classes == ["cat", "dog", "owl"]
    assert len(streamed.train) == 21 and streamed.train.channels == memory.train.channels == 3
    assert torch.equal(streamed.train.labels, memory.train.labels)

    order = epoch_order(21, seed=5, epoch=0)
    ours = list(batches(streamed.train, 4, order))
    theirs = list(batches(memory.train, 4, order))
    assert [len(labels) for _, labels in ours] == [4, 4, 4, 4, 4, 1]
    for (images, labels), (want_images, want_labels) in zip(ours, theirs, strict=True):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, 12, 10)
        assert torch.equal(images, want_images) and torch.equal(labels, want_labels)
    # Every sample exactly once per epoch, in the epoch's order.
    assert torch.equal(torch.cat([images for images, _ in ours]), memory.train.images[order])
    resumed = list(batches(streamed.train, 4, order, start=4))
    assert len(resumed) == 2 and all(torch.equal(a[0], b[0]) for a, b in zip(resumed, ours[4:], strict=True))
    stored = torch.cat([images for images, _ in batches(streamed.val, 4)])
    assert torch.equal(stored, memory.val.images)
    index = torch.tensor([8, 0, 5])
    assert torch.equal(streamed.val.take(index), memory.val.take(index))


def test_streamed_statistics_are_exact_up_to_the_sample_then_a_fixed_sample(tmp_path, monkeypatch):
    write_image_folder(tmp_path / "img", {"train": 6, "val": 1})
    load = dict(
        root=str(tmp_path / "img"), image_size=[8, 8], channels=3, cache_dir=str(tmp_path / "c"), **LOADER
    )
    memory = load_imagefolder(**load, stream=False, workers=None).train
    streamed = load_imagefolder(**load, stream=True, workers=0).train
    assert all(torch.equal(a, b) for a, b in zip(split_stats(streamed), split_stats(memory), strict=True))
    monkeypatch.setattr(batches_module, "STATS_SAMPLE", 5)
    sampled = split_stats(streamed)
    chosen = torch.randperm(18, generator=torch.Generator().manual_seed(0))[:5]  # seed 0, whatever the run's
    assert len(chosen.unique()) == 5
    want = channel_stats(memory.images[chosen.sort().values])
    assert all(torch.equal(a, b) for a, b in zip(sampled, want, strict=True))
    assert not torch.allclose(sampled[0], split_stats(memory)[0])  # 5 of the 18 images, not all


def test_a_corrupt_file_is_one_line_data_error_from_a_worker(tmp_path):
    write_image_folder(tmp_path / "img", {"train": 3, "val": 1})
    broken = tmp_path / "img" / "train" / "dog" / "1.png"
    broken.write_bytes(b"not a png")
    load = dict(
        root=str(tmp_path / "img"), image_size=[8, 8], channels=3, cache_dir=str(tmp_path / "c"), **LOADER
    )
    split = load_imagefolder(**load, stream=True, workers=2).train
    with pytest.raises(DataError) as error:
        list(batches(split, 2))
    assert str(error.value).startswith(f"cannot read image {broken}: ") and "\n" not in str(error.value)


def test_the_example_files_are_digits_and_a_two_class_photo_folder_of_mixed_sizes(tmp_path, capsys):
    from cnnlab.cli import main

    assert main(["examples", str(tmp_path)]) == 0
    assert "6 digits" in capsys.readouterr().out
    digits = sorted((tmp_path / "samples").glob("digit_*_label*.png"))
    assert len(digits) == 6 and all(Image.open(path).size == (8, 8) for path in digits)
    photos = load_imagefolder(
        str(tmp_path / "photos"), [32, 32], 3, str(tmp_path / "cache"), stream=False, workers=0, **LOADER
    )
    assert photos.classes == ["circles", "squares"] and (len(photos.train), len(photos.val)) == (120, 40)
    sizes = {Image.open(path).size for path in (tmp_path / "photos").rglob("*.jpg")}
    assert len(sizes) > 100  # mixed sizes, as real photos come
    assert photos.train.labels.bincount().tolist() == [60, 60]
