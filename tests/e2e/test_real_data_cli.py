"""The real-data protocol through `cnnlab train`: selection on val, defaults that learn, the
learning-health guard and the stability knobs (label smoothing, early stopping, a bit-identical resume)."""

import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from helpers import (
    DIGITS,
    learning_curves,
    metrics,
    one_error_line,
    run_dirs,
    start,
    wait_for_checkpoint_step,
    write_digit_folder,
)
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnlab.data.batches import Preprocess
from cnnlab.data.sources import load_dataset
from cnnlab.training.loop import BatchLoss

# --- the three splits -------------------------------------------------------------------------------


def test_val_fraction_zero_validates_on_the_test_split_and_says_so(cli):
    data = load_dataset("digits", DIGITS, 0.0, 0)
    assert data.val is data.test and len(data.train) == 1437
    result = cli("train", "trainer.epochs=1", "dataset.val_fraction=0")
    assert result.returncode == 0, result.stderr
    assert "dataset.val_fraction=0: validating on the test split (the book's protocol)" in result.stdout
    found = metrics(run_dirs(cli.cwd)[0])
    assert found["test"]["test/acc"] == found["best"]["val/acc"]  # one split, one figure


def test_selection_uses_val_and_test_is_measured_once_with_best_pt(cli, tmp_path):
    # The test folder's labels are all wrong: a model that learns scores ~0 on it. Chosen on test,
    # best.pt would be the least-trained epoch; chosen on val, it is the best-validating one.
    write_digit_folder(
        tmp_path / "img",
        {"train": slice(0, 1200), "val": slice(1200, 1500), "test": slice(1500, 1797)},
        "test",
    )
    result = cli(
        "train",
        "dataset=imagefolder",
        f"dataset.loader.root={tmp_path / 'img'}",
        "dataset.num_classes=10",
        "dataset.in_channels=1",
        "dataset.loader.image_size=[8,8]",
        "resize=28",
        "trainer.epochs=4",
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(cli.cwd)
    found = metrics(run_dir)
    # best.pt: the highest val acc, ties broken by the lower val loss.
    ranked = [(epoch["val/acc"], -epoch["val/loss"]) for epoch in found["history"]]
    assert found["best"]["epoch"] == ranked.index(max(ranked)) + 1
    assert found["best"]["val/acc"] > 0.8 and found["test"]["test/acc"] < 0.2  # val and test disagree
    assert found["test"]["epoch"] == found["best"]["epoch"]
    assert "1,200 train / 300 val / 297 test" in result.stdout
    assert f"test acc (best.pt) │ {found['test']['test/acc']:.4f}" in result.stdout
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert [e.value for e in events.Scalars("test/acc")] == pytest.approx([found["test"]["test/acc"]])
    # `cnnlab evaluate` on best.pt reproduces the figure; on val it is the best epoch's val acc.
    for split, want in (("test", found["test"]["test/acc"]), ("val", found["best"]["val/acc"])):
        evaluated = cli("evaluate", f"run={run_dir}", f"evaluate.split={split}")
        assert evaluated.returncode == 0, evaluated.stderr
        assert f"{split} loss" in evaluated.stdout and f"accuracy {want:.4f}" in evaluated.stdout
    report = cli("report", str(cli.cwd / "outputs"))
    assert report.returncode == 0, report.stderr
    assert "test acc" in report.stdout and f"{found['test']['test/acc']:.4f}" in report.stdout


# --- defaults that learn ----------------------------------------------------------------------------


def test_the_default_run_learns_in_every_seed_and_the_guard_stays_quiet(cli):
    for seed in range(5):
        result = cli("train", "trainer.epochs=10", f"trainer.seed={seed}")
        assert result.returncode == 0, result.stderr
        assert "warning" not in result.stdout
    for run_dir in run_dirs(cli.cwd):
        found = metrics(run_dir)
        assert found["warnings"] == []
        assert found["test"]["test/acc"] >= 0.9, (run_dir, found["test"])


# --- the learning-health guard ----------------------------------------------------------------------

STALLED = ["model=lenet", "optimizer.lr=3", "trainer.epochs=2"]  # sigmoid LeNet, lr far too high


def test_a_stalled_run_is_warned_about_and_recorded(cli):
    result = cli("train", *STALLED)
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("warning: "))
    assert "still at chance level (ln 10 = 2.303)" in line and "optimizer.lr" in line
    (run_dir,) = run_dirs(cli.cwd)
    found = metrics(run_dir)
    assert found["warnings"] == [line.removeprefix("warning: ")]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert "warnings/text_summary" in events.Tags()["tensors"]


def test_stop_if_stuck_stops_with_exit_4_and_keeps_last_pt(cli):
    result = cli("train", *STALLED, "trainer.stop_if_stuck=true")
    assert result.returncode == 4, result.stderr
    assert "stopped: trainer.stop_if_stuck=true" in one_error_line(result.stderr)
    (run_dir,) = run_dirs(cli.cwd)
    assert metrics(run_dir)["status"] == "stuck"
    state = torch.load(run_dir / "last.pt", weights_only=True)["state"]
    assert state["epoch"] == 0 and state["step"] == math.ceil(1295 / 64)  # checked at the first epoch's end


# Digits at batch 512: 3 steps an epoch, the first epoch all warm-up (a small image folder's case).
SHORT_EPOCHS = ["trainer.batch_size=512", "trainer.epochs=8"]


def test_short_first_epochs_are_judged_after_20_steps(cli):
    healthy = cli("train", *SHORT_EPOCHS)  # still at chance after the 3 warm-up steps, then learns
    assert healthy.returncode == 0, healthy.stderr
    assert "warning: " not in healthy.stdout
    (run_dir,) = run_dirs(cli.cwd)
    assert metrics(run_dir)["warnings"] == [] and metrics(run_dir)["best"]["val/acc"] > 0.9

    stalled = cli("train", *STALLED, *SHORT_EPOCHS, "trainer.stop_if_stuck=true")
    assert stalled.returncode == 4, stalled.stderr
    # Judged at the end of the epoch the 20th step falls in: all of its 3 steps, not the last one alone.
    assert "error: after 21 steps (epoch 7) the training loss is" in one_error_line(stalled.stderr)
    stalled_dir = run_dirs(cli.cwd)[-1]  # named by the time it started
    assert metrics(stalled_dir)["status"] == "stuck"
    state = torch.load(stalled_dir / "last.pt", weights_only=True)["state"]
    assert (state["epoch"], state["batch"], state["step"]) == (6, 3, 21)


def test_a_run_shorter_than_20_steps_is_not_judged(cli):
    result = cli("train", *STALLED, "trainer.batch_size=512")  # 2 epochs of 3 steps, at chance
    assert result.returncode == 0, result.stderr
    assert "warning: " not in result.stdout
    assert metrics(run_dirs(cli.cwd)[0])["warnings"] == []


# --- stability knobs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["scheduler=onecycle", "scheduler.warmup_epochs=1"], "scheduler=onecycle warms up by itself"),
        (["scheduler.warmup_epochs=-1"], "scheduler.warmup_epochs must be a number ≥ 0"),
        (["trainer.clip_grad_norm=0"], "trainer.clip_grad_norm must be a number > 0"),
        (["loss.label_smoothing=1.5"], "loss.label_smoothing must be a number ≥ 0 and ≤ 1"),
        (["trainer.early_stopping.patience=-1"], "trainer.early_stopping.patience must be an integer ≥ 0"),
        (["trainer.health_check=2"], "trainer.health_check must be a number ≥ 0 and ≤ 1"),
        (["trainer.stop_if_stuck=maybe"], "trainer.stop_if_stuck must be true or false"),
        (["dataset.val_fraction=0.95"], "dataset.val_fraction must be a number ≥ 0 and ≤ 0.9"),
        (["loss=focal"], "loss"),
    ],
)
def test_bad_knob_values_are_one_line(cli, overrides, message):
    result = cli("train", *overrides)
    assert result.returncode == 2, result.stderr
    assert message in one_error_line(result.stderr)


def test_label_smoothing_trains_on_smoothed_targets_and_evaluates_the_plain_loss(cli):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    images, labels = torch.randint(0, 256, (8, 1, 2, 2), dtype=torch.uint8), torch.arange(8) % 3
    smoothed, _ = BatchLoss(model, Preprocess(None), "32", label_smoothing=0.3)(images, labels)
    log_p = model(images.float() / 255).log_softmax(dim=1)  # Preprocess without statistics: x / 255
    targets = torch.nn.functional.one_hot(labels, 3) * 0.7 + 0.3 / 3
    assert smoothed.item() == pytest.approx(-(targets * log_p).sum(dim=1).mean().item(), rel=1e-5)

    for smoothing in ("0.0", "0.2"):
        assert cli("train", "trainer.epochs=2", f"loss.label_smoothing={smoothing}").returncode == 0
    plain, smooth = (metrics(run_dir)["history"][-1] for run_dir in run_dirs(cli.cwd))
    # Smoothed targets keep the training loss far from 0; validation measures the plain loss.
    assert smooth["train/loss"] > plain["train/loss"] + 0.2
    assert smooth["val/loss"] < 1.0


def test_early_stopping_stops_and_says_why(cli):
    result = cli(
        "train",
        "trainer.epochs=6",
        "trainer.early_stopping.patience=2",
        "trainer.early_stopping.min_delta=0.5",
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(cli.cwd)
    found = metrics(run_dir)
    assert found["epochs"] == 3 and found["epochs_planned"] == 6 and found["status"] == "finished"
    assert found["stopped_early"].startswith("val acc has not improved by more than 0.5 for 2 epochs")
    assert "stopping early: val acc has not improved" in result.stdout
    assert "stopped early" in result.stdout and "epochs             │ 3 of 6" in result.stdout
    first = found["history"][0]  # the default clips, so each epoch reports its gradient norms
    assert first["grad_norm/max"] >= first["grad_norm/mean"] > 0


KNOBS = [
    "trainer.epochs=4",
    "trainer.batch_size=16",
    "trainer.checkpoint_every_steps=10",
    "scheduler=cosine",
    "scheduler.warmup_epochs=2",
    "trainer.clip_grad_norm=0.5",
    "loss.label_smoothing=0.1",
    "trainer.early_stopping.patience=2",
    "trainer.early_stopping.min_delta=0.5",
    "augment=standard",
    "augment.random_erasing=0.25",
    "augment.mixup_alpha=0.2",
    "augment.cutmix_alpha=1.0",
]


def test_kill_9_then_resume_with_every_knob_on_is_bit_identical(cli, tmp_path):
    reference = cli("train", *KNOBS)
    assert reference.returncode == 0, reference.stderr
    (uninterrupted,) = run_dirs(cli.cwd)
    want = metrics(uninterrupted)
    assert want["stopped_early"] and want["epochs"] == 3  # every knob acted

    victim = tmp_path / "victim"
    victim.mkdir()
    process = start(victim, *KNOBS)
    run_dir = wait_for_checkpoint_step(victim, 100)  # epoch 2 of 81-step epochs, inside the warm-up
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", f"trainer.resume={run_dir}"],
        cwd=victim,
        capture_output=True,
        text=True,
        env={**os.environ, "CNNLAB_DATA_DIR": str(victim)},
    )
    assert resumed.returncode == 0, resumed.stderr
    assert learning_curves(run_dir) == learning_curves(uninterrupted)
    got = metrics(run_dir)
    for key in ("best", "test", "stopped_early", "warnings", "steps"):
        assert got[key] == want[key], key
