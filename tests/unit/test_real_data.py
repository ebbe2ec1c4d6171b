"""The real-data protocol in-process: three splits, first-batch losses at chance level, and the pieces
of the stability knobs (warm-up, gradient clipping, a non-finite validation loss) and the learning-health
check."""

import math

import pytest
import torch
from helpers import (
    DIGITS,
    loop_settings,
    write_digit_folder,
)
from hydra import compose, initialize_config_module

from cnnlab.app import checks
from cnnlab.data.batches import Preprocess, channel_stats
from cnnlab.data.sources import load_dataset, load_digits
from cnnlab.data.splits import stratified_split
from cnnlab.errors import DataError
from cnnlab.models import create_model, list_models
from cnnlab.models.sizing import smallest_input_size
from cnnlab.training.logging import QuietLogger
from cnnlab.training.loop import BatchLoss, RunState, _check_health, train_step
from cnnlab.training.optim import build_scheduler

# --- the three splits -------------------------------------------------------------------------------


def test_validation_is_carved_from_train_stratified_disjoint_and_fixed_by_the_split_seed():
    whole = load_digits(0.2, 0)
    data = load_dataset("digits", DIGITS, 0.1, 0)
    assert len(data.train) + len(data.val) == len(whole.train) == 1437
    assert torch.equal(data.test.labels, whole.test.labels)  # the test split is untouched
    # Disjoint and complete: every training image is in exactly one of the two.
    kept, held = stratified_split(whole.train.labels, 0.1, 0)
    assert set(kept.tolist()).isdisjoint(held.tolist())
    assert sorted(kept.tolist() + held.tolist()) == list(range(1437))
    assert torch.equal(data.val.images, whole.train.images[held])
    assert torch.equal(data.train.images, whole.train.images[kept])
    # Stratified: each class holds out round(10%) of its images.
    for label in range(10):
        members = int((whole.train.labels == label).sum())
        assert int((data.val.labels == label).sum()) == round(0.1 * members)
    again, other = load_dataset("digits", DIGITS, 0.1, 0), load_dataset("digits", DIGITS, 0.1, 1)
    assert torch.equal(again.val.images, data.val.images)
    assert not torch.equal(other.val.images, data.val.images)


def test_imagefolder_uses_its_val_and_test_folders_or_carves_val(tmp_path):
    write_digit_folder(
        tmp_path / "both", {"train": slice(0, 300), "val": slice(300, 400), "test": slice(400, 450)}
    )
    write_digit_folder(tmp_path / "no_val", {"train": slice(0, 300), "test": slice(400, 450)})
    write_digit_folder(tmp_path / "train_only", {"train": slice(0, 300)})
    options = {"image_size": [8, 8], "channels": 1, "cache_dir": str(tmp_path / "cache"), "workers": 0}
    options.update(memory_budget=0.25, skip_unreadable=False)  # configs/dataset/imagefolder.yaml's
    for stream in (True, False):
        load = {**options, "stream": stream}
        both = load_dataset("imagefolder", {**load, "root": str(tmp_path / "both")}, 0.1, 0)
        assert (len(both.train), len(both.val), len(both.test)) == (300, 100, 50)
        carved = load_dataset("imagefolder", {**load, "root": str(tmp_path / "no_val")}, 0.2, 0)
        assert len(carved.train) + len(carved.val) == 300 and len(carved.test) == 50
        alone = load_dataset("imagefolder", {**load, "root": str(tmp_path / "train_only")}, 0.2, 0)
        assert alone.test is None and len(alone.val) > 0
        with pytest.raises(DataError, match="no test split to validate on"):
            load_dataset("imagefolder", {**load, "root": str(tmp_path / "train_only")}, 0.0, 0)


# --- defaults that learn ----------------------------------------------------------------------------


def smooth_images(count: int, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """uint8 images with the spatial correlation of photos (blurred, upsampled noise)."""
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand(count, channels, max(2, size[0] // 4), max(2, size[1] // 4), generator=generator)
    fine = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return (fine * 255).round().to(torch.uint8)


def first_batches(dataset: str, size: tuple[int, int]) -> torch.Tensor:
    """Two 64-image batches of `dataset`'s channel count, normalized as training normalizes them."""
    if dataset in ("digits", "mnist", "fashion_mnist"):
        images = load_digits(0.2, 0).train.images[:128]  # real digits stand in for every 1-channel set
    else:
        images = smooth_images(128, 3, (32, 32))
    return Preprocess(size, *channel_stats(images))(images)


@pytest.fixture(scope="module")
def model_configs():
    """Every registered model's packaged config, at each shipped dataset's size (or the smallest the
    model takes)."""
    datasets = ("digits", "mnist", "fashion_mnist", "cifar10", "imagefolder")
    with initialize_config_module(config_module="cnnlab.configs", version_base="1.3"):
        return [
            (
                model_name,
                dataset,
                compose("train", [f"model={model_name}", f"dataset={dataset}", "dataset.num_classes=10"]),
            )
            for model_name in list_models()
            for dataset in datasets
        ]


def test_every_model_starts_at_chance_level_loss_on_every_dataset_shape(model_configs):
    chance = math.log(10)
    table = []
    for model_name, dataset, cfg in model_configs:
        name, in_channels, num_classes, options = checks.model_spec(cfg)
        size = checks.input_size(cfg)
        smallest = smallest_input_size(name, in_channels, num_classes, **options) or 1
        size = (max(size[0], smallest), max(size[1], smallest))
        for seed in (0, 1):
            torch.manual_seed(seed)
            model = create_model(name, in_channels, num_classes, size, **options).train()
            x = first_batches(dataset, size)
            labels = torch.arange(len(x)) % num_classes
            with torch.no_grad():
                loss = torch.nn.functional.cross_entropy(model(x), labels).item()
            table.append((model_name, dataset, seed, round(loss, 3)))
    outside = [row for row in table if not chance - 0.5 <= row[3] <= chance + 1.0]
    assert not outside, f"first-batch losses outside [ln 10 − 0.5, ln 10 + 1]: {outside}"
    assert {row[0] for row in table} == set(list_models())


# --- stability knobs ------------------------------------------------------------------------------


def scheduled_lrs(name: str, warmup_epochs: float, steps: int = 10, **options) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_scheduler(optimizer, name, 5, 2, warmup_epochs, **options)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_warmup_ramps_linearly_then_hands_over_to_the_schedule():
    assert scheduled_lrs("none", 0) == [1.0] * 10
    assert scheduled_lrs("none", 0.8) == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    cosine = scheduled_lrs("cosine", 1, min_lr=0.0)  # 5 warm-up steps, then 5 of cosine from 1 to 0
    assert cosine[:5] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6])
    assert cosine[5:] == pytest.approx([0.5 * (1 + math.cos(math.pi * t / 5)) for t in range(5)])
    # A warm-up as long as the run (or longer) is the whole run: the lr only ramps up.
    assert scheduled_lrs("cosine", 3, min_lr=0.0) == pytest.approx([(t + 1) / 11 for t in range(10)])


def tiny_step(clip: float | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    """One SGD step (lr 1, no momentum) of a linear model; (gradient norm or None, parameter change)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    forward = BatchLoss(model, Preprocess(None), "32", label_smoothing=0.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    images = torch.randint(0, 256, (8, 1, 2, 2), dtype=torch.uint8)
    _, _, norm = train_step(forward, images, torch.arange(8) % 3, optimizer, scheduler, scaler, clip)
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    return norm, (after - before).norm()


def test_clip_grad_norm_bounds_the_step_and_the_norm_is_reported_before_clipping():
    norm, change = tiny_step(1e9)  # a bound far above the norm: measured, not clipped
    assert change == pytest.approx(norm.item(), rel=1e-5)  # lr 1: the step is the gradient
    unmeasured, unclipped_change = tiny_step(None)  # no clipping: no norm computed at all
    assert unmeasured is None and unclipped_change == change
    clipped_norm, clipped_change = tiny_step(0.1 * norm.item())
    assert clipped_norm == pytest.approx(norm.item())
    assert clipped_change == pytest.approx(0.1 * norm.item(), rel=1e-4)


def test_a_non_finite_validation_loss_is_divergence(tmp_path):
    from cnnlab.data.sources import Dataset, Split
    from cnnlab.training.loop import Diverged, RunState, Training, fit

    class NaNInEval(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 2)

        def forward(self, x):
            y = self.linear(x.flatten(1))
            return y if self.training else y * float("nan")

    split = Split(torch.randint(0, 256, (16, 1, 2, 2), dtype=torch.uint8), torch.arange(16) % 2)
    model = NaNInEval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    settings = loop_settings(batch_size=16, eval_batch_size=16)
    saved = []

    class Logger:
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    class Checkpointer:
        def save(self, training, state, best):
            saved.append(best)

    training = Training(
        model,
        BatchLoss(model, Preprocess(None), "32", label_smoothing=0.0),
        Preprocess(None),
        optimizer,
        torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0, 0),
        torch.amp.GradScaler("cpu", enabled=False),
        settings,
        (2, 2),
        False,
        None,
    )
    with pytest.raises(Diverged, match="validation loss became non-finite"):
        fit(training, Dataset(split, split, None, ["a", "b"]), RunState(), Logger(), Checkpointer())
    assert saved == []  # neither last.pt nor best.pt replaced by the diverged model


@pytest.mark.parametrize(
    ("loss_per_image", "correct", "stuck"),
    [
        (0.69, 100, True),  # ln 2 = 0.693 and half right: guessing
        (0.68, 197, False),  # near ln 2 but 0.77 right (label smoothing, augmentation): learning
        (0.40, 128, False),  # the loss is well below chance
        (0.90, 140, True),  # above chance, 0.55 right: still guessing
    ],
)
def test_the_health_check_judges_the_loss_and_the_accuracy_against_chance(loss_per_image, correct, stuck):
    settings = loop_settings(batch_size=16, num_classes=2)
    # An epoch of 16 steps of 16 images: the judged window is all 256 of them (HEALTH_MIN_IMAGES).
    state = RunState(step=32, epoch=1, batch=16, epoch_seen=256, epoch_correct=correct)
    state.epoch_losses = [loss_per_image * 16] * 16
    assert _check_health(state, settings, QuietLogger()) is stuck
    assert len(state.warnings) == int(stuck) and state.health_checked
    if stuck:
        assert f"the training accuracy {correct / 256:.2f} (chance: 0.50)" in state.warnings[0]["message"]
