"""`cnnlab train` end to end, as a user runs it: accuracy, outputs, seeding, sweeps, datasets, install."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, learning_curves, metrics, one_error_line, run_dirs, scalar_steps, write_idx
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

SCALAR_TAGS = {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "throughput/images_per_s"}


def test_default_run_is_quick_accurate_and_complete(cli):
    result = cli("train")
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(cli.cwd)
    found = metrics(run_dir)
    assert found["status"] == "finished"
    assert found["epochs"] == 20
    assert found["final"]["val/acc"] >= 0.95, found["final"]
    assert found["best"]["val/acc"] >= found["final"]["val/acc"]
    for name in ("last.pt", "best.pt", "config.yaml", ".hydra/overrides.yaml"):
        assert (run_dir / name).is_file(), name
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert set(events.Tags()["scalars"]) >= SCALAR_TAGS
    assert "config/text_summary" in events.Tags()["tensors"]
    assert scalar_steps(run_dir, "val/acc") == list(range(1, 21))
    assert "on cpu" in result.stdout  # the device in use is printed
    assert f"tensorboard --logdir {run_dir}" in result.stdout
    assert "epoch 20/20" in result.stdout  # plain per-epoch lines when stdout is not a terminal


def test_same_seed_gives_identical_metrics_and_another_seed_does_not(cli):
    for seed in (0, 0, 1):
        assert cli("train", "trainer.epochs=3", f"trainer.seed={seed}").returncode == 0
    first, second, other = run_dirs(cli.cwd)
    assert learning_curves(first) == learning_curves(second)
    assert learning_curves(first) != learning_curves(other)
    assert len({first, second, other}) == 3  # runs started within a second never share a directory


def test_multirun_makes_one_named_tensorboard_run_per_job(cli):
    result = cli("train", "-m", "optimizer.lr=0.1,0.01", "trainer.epochs=1")
    assert result.returncode == 0, result.stderr
    jobs = run_dirs(cli.cwd)
    assert [job.name for job in jobs] == [
        "0_optimizer.lr=0.1,trainer.epochs=1",
        "1_optimizer.lr=0.01,trainer.epochs=1",
    ]
    assert jobs[0].parent == jobs[1].parent  # one sweep directory: `tensorboard --logdir` compares them
    for job in jobs:
        assert list(job.glob("events.out.tfevents.*"))
        assert metrics(job)["status"] == "finished"
    assert metrics(jobs[0])["final"] != metrics(jobs[1])["final"]


@pytest.mark.parametrize(("dataset", "folder"), [("fashion_mnist", "FashionMNIST"), ("mnist", "MNIST")])
def test_torchvision_datasets_load_from_idx_files(cli, dataset, folder):
    """The loading path users take after torchvision's download, on IDX files written here."""
    rng = np.random.default_rng(0)
    raw = cli.cwd / "data" / dataset / folder / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 256), ("t10k", 64)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28))
        for i, label in enumerate(labels):  # a class-dependent bright bar: learnable
            images[i, 2 * label : 2 * label + 3, 4:24] = 250
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    result = cli("train", f"dataset={dataset}", "dataset.loader.download=false", "trainer.epochs=3")
    assert result.returncode == 0, result.stderr
    assert "230 train / 26 val / 64 test, 28×28" in result.stdout  # val: 10% of each class of train
    assert metrics(run_dirs(cli.cwd)[0])["final"]["val/acc"] > 0.5


def test_missing_dataset_offline_names_the_directory_and_the_offline_alternative(cli):
    result = cli("train", "dataset=fashion_mnist", "dataset.loader.download=false")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert str(cli.cwd / "data" / "fashion_mnist") in line
    assert "FashionMNIST/raw/*-idx?-ubyte" in line and "dataset=digits" in line


def write_colour_folder(root: Path, train: int = 12) -> None:
    """root/train|val/red|blue/<i>.png: noisy red or blue images of varied heights."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for part, count in (("train", train), ("val", 4)):
        for name, colour in (("red", (220, 20, 20)), ("blue", (20, 20, 220))):
            folder = root / part / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(rng.normal(colour, 20, size=(20 + i % 12, 30, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_imagefolder_trains_on_a_users_images_streamed_or_in_memory_alike(cli):
    root = cli.cwd / "images"
    write_colour_folder(root)
    train = (
        "train",
        "dataset=imagefolder",
        f"dataset.loader.root={root}",
        "dataset.num_classes=2",
        "dataset.loader.image_size=[16,16]",
        "trainer.epochs=5",
        "trainer.batch_size=8",
        "optimizer.lr=0.01",  # 24 images: the default 0.05 with momentum overshoots in bf16
    )
    streamed = cli(*train, "dataset.loader.stream=true")
    assert streamed.returncode == 0, streamed.stderr
    assert "24 train / 8 val, 16×16" in streamed.stdout  # its val/ folder; no test/ folder
    assert "no test split (imagefolder has no test/ folder)" in streamed.stdout
    assert not (cli.cwd / "data" / "imagefolder").exists()  # nothing decoded into a cache
    in_memory = cli(*train, "dataset.loader.stream=false")
    assert in_memory.returncode == 0, in_memory.stderr
    assert len(list((cli.cwd / "data" / "imagefolder").glob("*.pt"))) == 1
    first, second = run_dirs(cli.cwd)
    assert metrics(first)["final"]["val/acc"] == metrics(second)["final"]["val/acc"] == 1.0
    assert learning_curves(first) == learning_curves(second)  # the same bytes in the same batches
    wrong = cli("train", "dataset=imagefolder", f"dataset.loader.root={root}", "dataset.num_classes=3")
    assert wrong.returncode == 2
    assert "has 2 classes but dataset.num_classes=3" in one_error_line(wrong.stderr)
    negative = cli(*train, "dataset.loader.workers=-1")
    assert negative.returncode == 2
    assert "dataset.loader.workers must be an integer ≥ 0, got -1" in one_error_line(negative.stderr)


def test_a_corrupt_image_read_by_a_worker_is_one_error_line(cli):
    root = cli.cwd / "images"
    write_colour_folder(root)
    broken = root / "train" / "blue" / "3.png"
    broken.write_bytes(b"\x89PNG truncated")
    result = cli(
        "train",
        "dataset=imagefolder",
        f"dataset.loader.root={root}",
        "dataset.num_classes=2",
        "dataset.loader.workers=2",
        "dataset.normalize=false",  # so the training loop's own batches meet the file first
    )
    assert result.returncode == 2
    assert f"cnnlab train: error: cannot read image {broken}: " in one_error_line(result.stderr)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stopping_the_process_group_while_workers_stream_saves_last_pt(cli, signum):
    """Ctrl-C in a terminal, or SIGTERM from timeout/scancel/kill -- -PGID, reaches the workers too."""
    root = cli.cwd / "images"
    write_colour_folder(root, train=40)
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "cnnlab", "train", "dataset=imagefolder", f"dataset.loader.root={root}"),
            *("dataset.num_classes=2", "dataset.loader.workers=2", "trainer.batch_size=2"),
            *("trainer.epochs=10", "trainer.checkpoint_every_steps=5"),
        ],
        cwd=cli.cwd,
        env={**os.environ, "CNNLAB_DATA_DIR": str(cli.cwd / "data")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, which Ctrl-C in a terminal signals as a whole
    )
    deadline = time.monotonic() + 120
    while not list(cli.cwd.glob("outputs/train/*/*/last.pt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signum)  # the workers get it too
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signum, stderr
    assert f"interrupted by {signal.Signals(signum).name}" in one_error_line(stderr)
    assert metrics(run_dirs(cli.cwd)[0])["status"] == "interrupted"


# Where the installed sweeper plugin is, and the sweepers Hydra's plugin scan finds.
DISCOVER_SWEEPERS = """
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
import hydra_plugins.cnnlab_sweepers.continued_optuna as plugin
print(plugin.__file__)
print(",".join(sorted(cls.__name__ for cls in Plugins.instance().discover(Sweeper))))
"""


def test_plain_install_finds_its_configs_from_any_directory(tmp_path):
    """A real (non-editable) install, as `pip install .` makes it, packages configs/ as cnnlab.configs."""
    site = tmp_path / "site"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(REPO),
        ],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    assert (site / "cnnlab" / "configs" / "train.yaml").is_file()
    # hparams_search=optuna's sweeper ships as a Hydra plugin beside the package.
    assert (site / "hydra_plugins" / "cnnlab_sweepers" / "continued_optuna.py").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "CNNLAB_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import cnnlab.configs, cnnlab; print(cnnlab.__file__)"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
    )
    assert where.stdout.startswith(str(site)), "the installed copy, not the checkout, must be imported"
    sweepers = subprocess.run(
        [sys.executable, "-c", DISCOVER_SWEEPERS], cwd=elsewhere, capture_output=True, text=True, env=env
    )
    assert sweepers.returncode == 0, sweepers.stderr
    plugin_file, discovered = sweepers.stdout.splitlines()
    assert plugin_file.startswith(str(site)) and "ContinuedOptunaSweeper" in discovered.split(",")
    result = subprocess.run(
        [sys.executable, "-m", "cnnlab", "train", "trainer.epochs=1"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert metrics(run_dirs(elsewhere)[0])["status"] == "finished"
