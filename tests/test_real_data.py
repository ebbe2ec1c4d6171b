"""The real-data protocol: three splits, selection on val, defaults that learn, the learning-health
guard and the stability knobs (warm-up, gradient clipping, label smoothing, early stopping)."""

import math
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import learning_curves, metrics, one_error_line, run_dirs
from hydra import compose, initialize_config_module
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_reliability import start, wait_for_checkpoint_step

from cnnlab.commands import checks
from cnnlab.data.batches import Preprocess, channel_stats
from cnnlab.data.sources import load_dataset, load_digits
from cnnlab.data.splits import stratified_split
from cnnlab.errors import DataError
from cnnlab.models import create_model, list_models
from cnnlab.models.sizing import smallest_input_size
from cnnlab.training.loop import BatchLoss, train_step
from cnnlab.training.optim import build_scheduler

DIGITS = {"test_fraction": 0.2, "split_seed": 0}


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


def test_val_fraction_zero_validates_on_the_test_split_and_says_so(cli):
    data = load_dataset("digits", DIGITS, 0.0, 0)
    assert data.val is data.test and len(data.train) == 1437
    result = cli("train", "trainer.epochs=1", "dataset.val_fraction=0")
    assert result.returncode == 0, result.stderr
    assert "dataset.val_fraction=0: validating on the test split (the book's protocol)" in result.stdout
    found = metrics(run_dirs(cli.cwd)[0])
    assert found["test"]["test/acc"] == found["best"]["val/acc"]  # one split, one figure


def write_digit_folder(root, parts: dict[str, slice], swap_labels_in: str = "") -> None:
    """Digits as root/<part>/<label>/<i>.png; in `swap_labels_in` every image sits in the next
    class's folder, so a model that learns the digits gets that split wrong."""
    data = load_digits(0.2, 0)
    images = torch.cat([data.train.images, data.test.images])
    labels = torch.cat([data.train.labels, data.test.labels]).tolist()
    for part, chosen in parts.items():
        for i in range(*chosen.indices(len(labels))):
            label = (labels[i] + 1) % 10 if part == swap_labels_in else labels[i]
            folder = root / part / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i, 0].numpy()).save(folder / f"{i:04d}.png")


def test_imagefolder_uses_its_val_and_test_folders_or_carves_val(tmp_path):
    write_digit_folder(
        tmp_path / "both", {"train": slice(0, 300), "val": slice(300, 400), "test": slice(400, 450)}
    )
    write_digit_folder(tmp_path / "no_val", {"train": slice(0, 300), "test": slice(400, 450)})
    write_digit_folder(tmp_path / "train_only", {"train": slice(0, 300)})
    options = {"image_size": [8, 8], "channels": 1, "cache_dir": str(tmp_path / "cache"), "workers": 0}
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


def test_a_non_finite_validation_loss_is_divergence(tmp_path):
    from cnnlab.data.sources import Dataset, Split
    from cnnlab.training.distributed import SINGLE_PROCESS
    from cnnlab.training.loop import Diverged, LoopSettings, RunState, fit

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
    settings = LoopSettings(
        epochs=2,
        batch_size=16,
        eval_batch_size=16,
        seed=0,
        precision="32",
        checkpoint_every_steps=0,
        distributed=SINGLE_PROCESS,
        num_classes=2,
        clip_grad_norm=None,
        early_stopping_patience=0,
        early_stopping_min_delta=0.0,
        health_check=0.0,
        stop_if_stuck=False,
    )
    saved = []

    class Logger:
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    with pytest.raises(Diverged, match="validation loss became non-finite"):
        fit(
            BatchLoss(model, Preprocess(None), "32", label_smoothing=0.0),
            model,
            Dataset(split, split, None, ["a", "b"]),
            Preprocess(None),
            optimizer,
            torch.optim.lr_scheduler.ConstantLR(optimizer, 1.0, 0),
            torch.amp.GradScaler("cpu", enabled=False),
            settings,
            RunState(),
            Logger(),
            lambda state, best: saved.append(best),
        )
    assert saved == []  # neither last.pt nor best.pt replaced by the diverged model
