"""Training-time augmentation in-process: per-sample draws that are a pure function of (seed, epoch,
rank), a row per sample of the epoch; exact crops and flips, soft targets for mixup and cutmix, the config
group and its defaults (with the image folders' smaller batches)."""

import pytest
import torch
import torch.nn.functional as F
import yaml
from helpers import REPO

from cnnlab.commands import COMMANDS
from cnnlab.data.augment import Augment
from cnnlab.data.batches import Preprocess
from cnnlab.training.loop import BatchLoss, batch_draws

NONE = yaml.safe_load((REPO / "configs" / "augment" / "none.yaml").read_text())


def make_augment(size: tuple[int, int], num_classes: int, **options) -> Augment:
    """An Augment of configs/augment/none.yaml's options, with `options` changed."""
    base = {key: value for key, value in NONE.items() if key != "name"}
    base.update(scale=tuple(base["scale"]), ratio=tuple(base["ratio"]))
    return Augment(size, num_classes, **{**base, **options})


def constant_batch(n: int, size: int = 16) -> torch.Tensor:
    """n copies of one image whose every pixel is distinct (so a crop's offset shows in its values)."""
    image = torch.arange(1, size * size + 1, dtype=torch.float32).view(1, 1, size, size)
    return image.repeat(n, 1, 1, 1)


def test_each_sample_of_a_batch_gets_its_own_crop_and_flip():
    augment = make_augment((16, 16), 10, crop="padded", padding=4, flip=True)
    out, targets = augment(constant_batch(32), torch.zeros(32, dtype=torch.long), augment.draw(32, 0, 0, 0))
    distinct = {tuple(image.flatten().tolist()) for image in out}
    assert len(distinct) > 20  # 81 offsets × 2 flips: nearly every sample differs
    assert torch.equal(targets, torch.zeros(32, dtype=torch.long))  # no mixing: the labels as they were


def test_padded_crops_and_flips_copy_pixels_exactly():
    augment = make_augment((16, 16), 10, crop="padded", padding=3, flip=True)
    images = constant_batch(64)
    out, _ = augment(images, torch.zeros(64, dtype=torch.long), augment.draw(64, 1, 2, 3))
    allowed = set(images[0].flatten().tolist()) | {0.0}  # an input pixel, or the zero padding
    assert set(out.flatten().tolist()) <= allowed
    flip_only = make_augment((16, 16), 10, flip=True)
    draws = flip_only.draw(64, 0, 0, 0)
    flipped, _ = flip_only(images, torch.zeros(64, dtype=torch.long), draws)
    mirrored = draws["theta"][:, 0, 0] < 0
    assert 10 < int(mirrored.sum()) < 54
    assert torch.equal(flipped[mirrored], images[mirrored].flip(-1))
    assert torch.equal(flipped[~mirrored], images[~mirrored])


@pytest.mark.parametrize("size", [(28, 28), (20, 36), (96, 96)])  # matmul resampling; grid_sample's
@pytest.mark.parametrize("crop", ["padded", "resized"])
def test_crops_sample_the_image_where_affine_grid_says(crop, size):
    augment = make_augment(size, 10, crop=crop, padding=4, scale=(0.08, 1.0), flip=True)
    images = torch.randn(16, 3, *size)
    draws = augment.draw(16, 0, 0, 0)
    out, _ = augment(images, torch.zeros(16, dtype=torch.long), draws)
    grid = F.affine_grid(draws["theta"], [16, 3, *size], align_corners=False)
    mode = "nearest" if crop == "padded" else "bilinear"
    want = F.grid_sample(images, grid, mode=mode, padding_mode="zeros", align_corners=False)
    if crop == "padded":
        assert torch.equal(out, want)
    else:
        assert torch.allclose(out, want, atol=1e-4)


def test_draws_are_a_pure_function_of_seed_epoch_and_rank():
    augment = make_augment(
        (32, 32), 10, crop="resized", flip=True, random_erasing=0.5, mixup_alpha=0.2, cutmix_alpha=1.0
    )
    first = augment.draw(16, 0, 1, 2)
    assert first.keys() == {"theta", "erase", "cut", "mixup", "lam"}
    assert all(len(v) == 16 for v in first.values())  # a row per sample of the epoch
    assert all(torch.equal(first[k], v) for k, v in augment.draw(16, 0, 1, 2).items())
    for other in ((1, 1, 2), (0, 2, 2), (0, 1, 3)):  # seed, epoch, rank
        assert not torch.equal(first["theta"], augment.draw(16, *other)["theta"]), other


def test_each_batch_takes_its_own_rows_of_the_epochs_draws():
    drawn = {"theta": torch.arange(10.0).view(10, 1), "lam": torch.arange(10.0)}
    last = batch_draws(drawn, 2, 4, 2)  # the third batch of 4: two samples left
    assert torch.equal(last["theta"], torch.tensor([[8.0], [9.0]]))
    assert torch.equal(last["lam"], torch.tensor([8.0, 9.0]))
    assert torch.equal(batch_draws(drawn, 1, 4, 4)["lam"], torch.tensor([4.0, 5.0, 6.0, 7.0]))
    assert batch_draws(None, 0, 4, 4) is None  # no augmentation


def test_resized_crops_stay_within_their_scale_and_ratio():
    augment = make_augment((32, 32), 10, crop="resized", scale=(0.25, 0.5), ratio=(1.0, 1.0))
    theta = augment.draw(256, 0, 0, 0)["theta"]
    area = (theta[:, 0, 0] * theta[:, 1, 1]).abs()
    assert area.min() >= 0.25 - 1e-6 and area.max() <= 0.5 + 1e-6
    assert torch.allclose(theta[:, 0, 0], theta[:, 1, 1])  # square crops
    # Every crop lies inside the image: centre ± half-size within [-1, 1].
    assert (theta[:, 0, 2].abs() + theta[:, 0, 0].abs() <= 1 + 1e-6).all()


def test_resized_crops_keep_the_pixel_aspect_ratio_of_non_square_images():
    augment = make_augment((32, 128), 10, crop="resized", scale=(0.05, 0.2), ratio=(1.0, 1.0))
    theta = augment.draw(64, 0, 0, 0)["theta"]
    pixel_aspect = (theta[:, 0, 0].abs() * 128) / (theta[:, 1, 1] * 32)
    assert torch.allclose(pixel_aspect, torch.ones(64), atol=1e-5)


def test_the_model_is_fed_exact_float32_crops_under_bf16_autocast():
    seen = []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64 * 64, 4))
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    augment = make_augment((64, 64), 4, crop="padded", padding=8, flip=True)
    images, labels = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8), torch.arange(8) % 4
    draws = augment.draw(8, 0, 0, 0)
    BatchLoss(model, Preprocess(None), "bf16", 0.0, augment)(images, labels, draws)
    want, _ = augment(Preprocess(None)(images), labels, draws)
    assert seen[0].dtype == torch.float32 and torch.equal(seen[0], want)
    assert set(want.flatten().tolist()) <= set(Preprocess(None)(images).flatten().tolist()) | {0.0}


def test_mixup_blends_images_and_targets_with_the_same_weight():
    augment = make_augment((8, 8), 5, mixup_alpha=0.4)
    images, labels = torch.randn(12, 3, 8, 8), torch.arange(12) % 5
    draws = augment.draw(12, 0, 0, 0)
    lam = draws["lam"]
    assert ((lam > 0) & (lam < 1)).all() and not torch.allclose(lam, lam[0])  # one λ per sample
    out, targets = augment(images, labels, draws)
    partner = images.roll(1, dims=0)
    want = lam.view(-1, 1, 1, 1) * images + (1 - lam.view(-1, 1, 1, 1)) * partner
    assert torch.allclose(out, want, atol=1e-6)
    one_hot = F.one_hot(labels, 5).float()
    assert torch.allclose(targets, lam[:, None] * one_hot + (1 - lam[:, None]) * one_hot.roll(1, dims=0))


def test_cutmix_targets_are_each_samples_share_of_its_own_pixels():
    augment = make_augment((16, 16), 4, cutmix_alpha=1.0)
    images = (
        torch.arange(1.0, 17.0).view(16, 1, 1, 1).expand(16, 1, 16, 16).contiguous()
    )  # sample i: value i+1
    labels = torch.arange(16) % 4
    draws = augment.draw(16, 3, 0, 0)
    out, targets = augment(images, labels, draws)
    own = (out == images).float().mean(dim=(1, 2, 3))
    assert torch.allclose(draws["lam"], own)
    assert ((out == images) | (out == images.roll(1, dims=0))).all()  # each pixel its own or its partner's
    assert torch.allclose(targets.sum(dim=1), torch.ones(16))


def test_some_samples_stay_unmixed_with_mix_prob():
    augment = make_augment((8, 8), 3, mixup_alpha=1.0, mix_prob=0.5)
    lam = augment.draw(400, 0, 0, 0)["lam"]
    assert 150 < int((lam == 1).sum()) < 250


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_the_soft_target_loss_is_the_mixed_loss_of_the_two_labels(smoothing):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 5))
    augment = make_augment((8, 8), 5, mixup_alpha=0.4)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    draws = augment.draw(6, 0, 0, 0)
    loss, _ = BatchLoss(model, Preprocess(None), "32", smoothing, augment)(images, labels, draws)
    mixed, _ = augment(Preprocess(None)(images), labels, draws)
    logits = model(mixed)
    lam = draws["lam"]
    own = F.cross_entropy(logits, labels, label_smoothing=smoothing, reduction="none")
    other = F.cross_entropy(logits, labels.roll(1), label_smoothing=smoothing, reduction="none")
    assert torch.allclose(loss, (lam * own + (1 - lam) * other).mean(), atol=1e-6)


def test_evaluation_never_augments():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    augment = make_augment((8, 8), 3, crop="resized", flip=True, mixup_alpha=1.0)
    images, labels = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8), torch.tensor([0, 1, 2, 0])
    with_augment = BatchLoss(model, Preprocess(None), "32", 0.0, augment)
    plain = BatchLoss(model, Preprocess(None), "32", 0.0)
    assert torch.equal(with_augment(images, labels)[0], plain(images, labels)[0])  # no draws: as is


@pytest.mark.parametrize(
    ("overrides", "crop", "flip"),
    [
        ([], "none", False),
        (["dataset=mnist"], "none", False),
        (["dataset=fashion_mnist"], "none", False),
        (["dataset=cifar10"], "padded", True),
        (["dataset=imagefolder"], "resized", True),
        (["dataset=cifar10", "augment=none"], "none", False),
        (["experiment=d2l_resnet18", "dataset=cifar10"], "none", False),  # the book's runs: none
        (["experiment=d2l_vgg"], "none", False),
    ],
)
def test_each_dataset_names_its_augmentation_and_the_book_presets_none(overrides, crop, flip):
    cfg = COMMANDS["train"].compose(overrides)
    assert (cfg.augment.crop, cfg.augment.flip) == (crop, flip)


@pytest.mark.parametrize(
    ("overrides", "batch_size"),
    [
        ([], 64),
        (["dataset=cifar10"], 64),
        (["dataset=imagefolder"], 16),  # trainer=small_batches: a small folder still makes steps
        (["dataset=imagefolder", "trainer.batch_size=64"], 64),
        (["dataset=imagefolder", "trainer=default"], 64),
        (["dataset=imagefolder", "experiment=d2l_resnet18"], 128),  # the book's batch
    ],
)
def test_image_folders_train_in_small_batches_unless_told_otherwise(overrides, batch_size):
    assert COMMANDS["train"].compose(overrides).trainer.batch_size == batch_size
