"""Shared plain helpers for both tiers (tests/unit, tests/e2e): run the CLI as a user does, read what a
run wrote, and write the small datasets several test modules train or load from.

Test modules import them as `from helpers import …` (tests/ is on sys.path: tests/conftest.py lives
there); no test module imports another, and fixtures stay in conftest.py or their own module."""

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cnnlab.data.sources import load_digits

REPO = Path(__file__).resolve().parents[1]

# --- running cnnlab -------------------------------------------------------------------------------


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None, **popen):
    """Run `python -m cnnlab ARGS` in `cwd`; return the CompletedProcess (text output)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "CNNLAB_DATA_DIR": str(cwd / "data"), **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


# ~90 steps an epoch on digits: long enough to stop mid-epoch, short enough for the suite.
SLOW_RUN = ["trainer.epochs=3", "trainer.batch_size=16", "trainer.checkpoint_every_steps=10"]


def start(cwd: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CNNLAB_DATA_DIR": str(cwd / "data")}
    return subprocess.Popen(
        [sys.executable, "-m", "cnnlab", "train", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def one_error_line(stderr: str) -> str:
    """Assert stderr is exactly one `cnnlab …: error: …` line with no traceback; return it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert ": error: " in lines[0], stderr
    return lines[0]


# --- reading what a run wrote ---------------------------------------------------------------------


def run_dirs(root: Path, command: str = "train") -> list[Path]:
    """Run directories (those holding metrics.json) under root/outputs/<command>*, oldest first."""
    found = [p.parent for p in (root / "outputs").glob(f"{command}*/**/metrics.json")]
    return sorted(found, key=lambda p: str(p))


def metrics(run_dir: Path) -> dict:
    """The run's metrics.json."""
    return json.loads((run_dir / "metrics.json").read_text())


def learning_curves(run_dir: Path) -> list[dict]:
    """Per-epoch metrics without the timing fields (which legitimately differ between runs)."""
    return [
        {k: v for k, v in h.items() if not k.startswith("throughput")} for h in metrics(run_dir)["history"]
    ]


def scalar_steps(run_dir: Path, tag: str) -> list[int]:
    """Steps logged for `tag` as TensorBoard reads them (purged events excluded)."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [event.step for event in events.Scalars(tag)]


# The image tags a trained run's event files hold (and one call of write_visuals writes).
IMAGE_TAGS = {
    "kernels/first_conv",
    "features/stage1",
    "features/stage2",
    "eval/confusion_matrix",
    "eval/misclassified",
}


def sweep_dir(root: Path) -> Path:
    """The one sweep directory under root/outputs."""
    (found,) = (root / "outputs").glob("*-sweeps/*/*")
    return found


def job_records(sweep: Path) -> list[dict]:
    """The sweep's job records (.jobs/<num>.json), by job number."""
    records = [json.loads(path.read_text()) for path in (sweep / ".jobs").glob("*.json")]
    return sorted(records, key=lambda record: record["num"])


# --- waiting for a run in another process ---------------------------------------------------------


def wait_for_file(root: Path, pattern: str, timeout: float = 120) -> Path:
    """Wait until a file matching the glob `pattern` exists under `root`; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} under {root} after {timeout:.0f} s")


def wait_for_checkpoint_step(
    run_root: Path, step: int, timeout: float = 120, runs: str = "outputs/train/*/*"
) -> Path:
    """Wait until the last.pt of some run (a directory matching `runs` under `run_root`) records at least
    `step` optimizer steps; return that run dir."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for last in run_root.glob(f"{runs}/last.pt"):
            try:
                if torch.load(last, weights_only=True)["state"]["step"] >= step:
                    return last.parent
            except Exception:  # being replaced right now: look again
                pass
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint reached step {step}")


# --- datasets written for a test ------------------------------------------------------------------

# The digits loader's options as configs/dataset/digits.yaml sets them (split seed 0).
DIGITS = {"test_fraction": 0.2, "split_seed": 0}


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file as MNIST ships it (big-endian dims, uint8 data)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, images: int = 40, labels: int | None = None, top_label: int = 9) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", generator.integers(0, 256, (images, 28, 28)))
        values = np.arange(labels or images) % (top_label + 1)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", values)
    return raw


def write_noise_folder(root: Path, per_class: int = 6) -> None:
    """root/train/a|b/<i>.png: random 20×20 RGB images (test_faults*.py's `write_folder`)."""
    generator = np.random.default_rng(0)
    for name in ("a", "b"):
        folder = root / "train" / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = generator.integers(0, 256, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def write_jpeg_folder(root, broken: int = 0) -> None:
    """root/train|val/<a|b>/*.jpg: 4 + 2 small JPEGs per class, the first `broken` training ones corrupt
    (test_image_files*.py's `write_folder`)."""
    for part, count in (("train", 4), ("val", 2)):
        for label, name in enumerate("ab"):
            (root / part / name).mkdir(parents=True)
            for i in range(count):
                image = Image.fromarray(np.full((10 + i, 12, 3), 60 + 120 * label, np.uint8))
                image.save(root / part / name / f"{i}.jpg")
    for i in range(broken):
        (root / "train" / "a" / f"{i}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")


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


# --- the training loop by hand ---------------------------------------------------------------------


def loop_settings(**changes):
    """LoopSettings for a tiny two-class run on CPU (batches of 4, nothing optional on), with `changes`."""
    from cnnlab.training.distributed import SINGLE_PROCESS
    from cnnlab.training.loop import LoopSettings

    values = dict(
        epochs=2,
        batch_size=4,
        eval_batch_size=4,
        seed=0,
        precision="32",
        checkpoint_every_steps=0,
        distributed=SINGLE_PROCESS,
        num_classes=2,
        clip_grad_norm=None,
        early_stopping_patience=0,
        early_stopping_min_delta=0.0,
        early_stopping_target=None,
        health_check=0.0,
        stop_if_stuck=False,
        detect_anomaly=False,
        limit_batches=None,
    )
    return LoopSettings(**{**values, **changes})
