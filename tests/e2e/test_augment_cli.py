"""Training-time augmentation through `cnnlab train`: one-line errors for bad options, and an augmented
run that is reproducible and shows its inputs in TensorBoard."""

import pytest
from helpers import metrics, one_error_line, run_dirs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment=sharpen", "unknown augment 'sharpen'; choose one of: crop_flip, none, standard"),
        ("augment.crop=random", "augment.crop='random' is not one of: none, padded, resized"),
        ("augment.scale=[0.5,2]", "augment.scale must be [low, high] with 0 < low ≤ high ≤ 1"),
        ("augment.mix_prob=1.5", "augment.mix_prob must be a number ≥ 0 and ≤ 1"),
        ("+augment.mixup=0.2", "augment.mixup is not an augment option; they are: crop, padding"),
        ("augment.mixup_alpha=-1", "augment.mixup_alpha must be a number ≥ 0"),
    ],
)
def test_a_bad_augment_option_is_one_line_and_exit_2(cli, override, message):
    result = cli("train", override)
    assert result.returncode == 2
    assert message in one_error_line(result.stderr)


def test_padding_must_leave_an_image_to_crop(cli):
    result = cli("train", "augment=crop_flip", "augment.padding=28")
    assert result.returncode == 2
    assert "augment.padding=28 must be smaller than the 28×28 input" in one_error_line(result.stderr)


def test_an_augmented_run_is_reproducible_and_shows_its_inputs_in_tensorboard(cli):
    args = (
        "train",
        "trainer.epochs=1",
        "augment=crop_flip",
        "augment.mixup_alpha=0.2",
        "augment.random_erasing=0.5",
    )
    for _ in range(2):
        assert cli(*args).returncode == 0
    first, second = run_dirs(cli.cwd)
    assert metrics(first)["history"][0]["train/loss"] == metrics(second)["history"][0]["train/loss"]
    plain = cli("train", "trainer.epochs=1")
    assert (
        metrics(run_dirs(cli.cwd)[-1])["history"][0]["train/loss"]
        != metrics(first)["history"][0]["train/loss"]
    )
    events = EventAccumulator(str(first), size_guidance={"images": 0}).Reload()
    assert "inputs/augmented" in events.Tags()["images"]
    (image,) = events.Images("inputs/augmented")
    assert image.step == 0 and image.width > 8 * 56  # 8 magnified tiles per row
    assert plain.returncode == 0
    assert "inputs/augmented" not in EventAccumulator(str(run_dirs(cli.cwd)[-1])).Reload().Tags()["images"]
