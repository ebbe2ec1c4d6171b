"""Fault tests in-process (issue: nothing lost, nothing silently wrong): fuzzed and unusual image files,
a corrupt image cache, fuzzed checkpoints, damaged dataset files, and reconciling a resume with the
run's saved config."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_mnist
from helpers import write_noise_folder as write_folder
from PIL import Image

from cnnlab.data.decode import decode_image
from cnnlab.data.sources import load_dataset, load_imagefolder
from cnnlab.errors import CheckpointError, DataError
from cnnlab.files import atomic_write
from cnnlab.training.checkpoint import load_checkpoint, save_checkpoint

# --- images ---------------------------------------------------------------------------------------


def test_fuzzed_image_files_decode_or_fail_with_one_data_error_naming_the_file(tmp_path):
    generator = np.random.default_rng(0)
    originals = []
    for suffix in (".png", ".jpg", ".bmp", ".tif"):
        path = tmp_path / f"original{suffix}"
        Image.fromarray(generator.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
        originals.append(path.read_bytes())
    outcomes = {"decoded": 0, "refused": 0}
    for i in range(200):
        data = bytearray(originals[i % len(originals)])
        if i % 3 == 0:
            data = data[: generator.integers(0, len(data))]
        else:
            for _ in range(generator.integers(1, 16)):
                data[generator.integers(0, len(data))] = generator.integers(0, 256)
        path = tmp_path / f"mutated{i}{('.png', '.jpg', '.bmp', '.tif')[i % 4]}"
        path.write_bytes(bytes(data))
        try:
            image = decode_image(path, [8, 8], 3)
        except DataError as error:
            assert str(path) in str(error) and "\n" not in str(error)
            outcomes["refused"] += 1
        else:
            assert image.shape == (3, 8, 8) and image.dtype == torch.uint8
            outcomes["decoded"] += 1
    assert outcomes["refused"] > 20 and outcomes["decoded"] > 20, outcomes


def test_16_bit_images_are_scaled_not_saturated_and_tif_files_are_read(tmp_path):
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63,000
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # a 16-bit grayscale PNG
    decoded = decode_image(tmp_path / "deep.png", [8, 8], 1)[0].numpy().astype(int)
    assert np.abs(decoded - np.round(ramp / 257)).max() <= 1
    assert decoded.max() == 245 and len(np.unique(decoded)) == 64  # not clipped at 255
    for name in ("a", "b"):
        (tmp_path / "tif" / "train" / name).mkdir(parents=True)
        Image.fromarray(np.full((8, 8, 3), 40 if name == "a" else 200, np.uint8)).save(
            tmp_path / "tif" / "train" / name / "x.tif"
        )
    data = load_imagefolder(str(tmp_path / "tif"), [8, 8], 3, str(tmp_path / "cache"), True, 0, 0.25, False)
    assert len(data.train) == 2


def test_a_corrupt_decoded_image_cache_is_named(tmp_path):
    write_folder(tmp_path / "images", per_class=2)
    load_imagefolder(str(tmp_path / "images"), [8, 8], 3, str(tmp_path / "cache"), False, 0, 0.25, False)
    (cache,) = (tmp_path / "cache").glob("imagefolder-*.pt")
    cache.write_bytes(cache.read_bytes()[:100])
    with pytest.raises(DataError, match=f"cache {cache} is unreadable .*delete it and run again"):
        load_imagefolder(str(tmp_path / "images"), [8, 8], 3, str(tmp_path / "cache"), False, 0, 0.25, False)


# --- checkpoints ----------------------------------------------------------------------------------


def small_checkpoint(path: Path) -> None:
    model = torch.nn.Linear(64, 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    contents = ("optimizer", "scheduler", "scaler", "rng", "config")
    payload = {"model": model.state_dict(), "state": {"epoch": 1, "step": 5}, **{key: {} for key in contents}}
    payload["optimizer"] = optimizer.state_dict()
    save_checkpoint(path, payload)


def test_random_and_mutated_checkpoint_bytes_are_always_one_checkpoint_error(tmp_path):
    small_checkpoint(tmp_path / "good.pt")
    good = (tmp_path / "good.pt").read_bytes()
    assert load_checkpoint(tmp_path / "good.pt")["state"]["epoch"] == 1
    generator = np.random.default_rng(0)
    path = tmp_path / "fuzz.pt"
    detected = 0
    for i in range(400):
        if i < 200:  # random bytes, some starting like a zip file
            data = bytes(generator.integers(0, 256, generator.integers(0, 3000), dtype=np.uint8))
            data = (b"PK\x03\x04" + data) if i % 2 else data
        else:  # a real checkpoint, truncated or with a run of flipped bytes
            data = bytearray(good)
            if i % 4 == 0:
                data = data[: generator.integers(0, len(data))]
            else:
                start_at = generator.integers(0, len(data) - 64)
                data[start_at : start_at + 64] = bytes(b ^ 0xFF for b in data[start_at : start_at + 64])
        path.write_bytes(bytes(data))
        try:
            load_checkpoint(path)
        except CheckpointError as error:
            assert "\n" not in str(error)
            detected += 1
    assert detected >= 390  # a flip may land in bytes nothing reads (zip padding), nowhere else


def test_a_bit_flip_in_the_weights_is_caught_by_the_checksum(tmp_path):
    small_checkpoint(tmp_path / "good.pt")
    data = bytearray((tmp_path / "good.pt").read_bytes())
    weights = torch.load(tmp_path / "good.pt", weights_only=True)["model"]["weight"]
    raw = weights.numpy().tobytes()
    offset = bytes(data).index(raw[:64])  # the stored weight tensor, uncompressed in the zip
    data[offset + 100] ^= 0x01
    (tmp_path / "flipped.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="is corrupt: its contents no longer match the checksum"):
        load_checkpoint(tmp_path / "flipped.pt")


def test_a_checkpoint_without_a_model_is_refused(tmp_path):
    small_checkpoint(tmp_path / "good.pt")
    payload = torch.load(tmp_path / "good.pt", weights_only=True)
    del payload["model"]
    torch.save(payload, tmp_path / "no_model.pt")
    with pytest.raises(CheckpointError, match=r"incomplete cnnlab checkpoint \(no model\)"):
        load_checkpoint(tmp_path / "no_model.pt")


def test_orphaned_temporary_files_are_removed_by_the_next_save(tmp_path):
    orphan = tmp_path / ".last.pt.x1y2z3.tmp"
    orphan.write_bytes(b"half a checkpoint")
    other = tmp_path / ".metrics.json.abc.tmp"
    other.write_bytes(b"{")
    atomic_write(tmp_path / "last.pt", lambda file: file.write(b"new"))
    assert not orphan.exists() and other.exists()  # only the file being written has its orphans removed
    assert (tmp_path / "last.pt").read_bytes() == b"new"


# --- damaged dataset files ------------------------------------------------------------------------


def load_mnist(root: Path):
    return load_dataset("mnist", {"root": str(root), "download": False}, 0.1, 0)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", r"train-images-idx3-ubyte is truncated or corrupt: its header declares 40×28×28 values"),
        ("garbage", r"train-images-idx3-ubyte is not an IDX file of 3-d uint8 data \(bad header\)"),
        ("empty", r"train-images-idx3-ubyte is not an IDX file"),
        ("fewer labels", r"holds 40 images but .*train-labels-idx1-ubyte holds 30 labels"),
        ("labels out of range", r"the train split has labels 0\.\.11 but 10 classes"),
    ],
)
def test_damaged_idx_files_are_one_data_error_naming_the_file(tmp_path, damage, message):
    raw = write_mnist(tmp_path, labels=30 if damage == "fewer labels" else None,
                      top_label=11 if damage == "labels out of range" else 9)  # fmt: skip
    images = raw / "train-images-idx3-ubyte"
    if damage == "truncate":
        images.write_bytes(images.read_bytes()[:5000])
    elif damage == "garbage":
        images.write_bytes(os.urandom(4000))
    elif damage == "empty":
        images.write_bytes(b"")
    with pytest.raises(DataError, match=message):
        load_mnist(tmp_path)


# --- reconciling a resume with the run's saved config (no training) --------------------------------


def composed(*overrides: str) -> dict:
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module(config_module="cnnlab.configs", version_base="1.3"):
        return OmegaConf.to_container(compose("train", list(overrides)), resolve=True)


def test_reconcile_keeps_the_runs_groups_moves_derived_paths_and_reads_old_runs():
    from omegaconf import OmegaConf

    from cnnlab.errors import ConfigError
    from cnnlab.runs.resume import reconcile

    saved = composed("model=resnet18", "scheduler=none", "data_dir=/old", "trainer.resume=/r")
    saved["optimizer"]["lr"] = 0.05  # an sgd default that has changed since the run
    del saved["model"]["zero_init_residual"]  # an option newer than the run
    del saved["dataset"]["val_fraction"], saved["dataset"]["split_seed"]
    typed = ["trainer.resume=/r", "optimizer=sgd", "data_dir=/new", "trainer.epochs=30"]
    requested = OmegaConf.create(composed(*typed))
    config, changes = reconcile(requested, saved, typed, done_epochs=5)
    assert config.model.name == "resnet18" and "channels" not in config.model  # no lenet_modern keys
    assert config.optimizer.lr == 0.05  # retyping the run's own group changes nothing
    assert config.model.zero_init_residual is False  # as the run ran before the option existed
    assert (config.dataset.val_fraction, config.dataset.split_seed) == (0, 0)
    assert changes == {"data_dir": ["/old", "/new"], "trainer.epochs": [20, 30]}  # digits reads no files
    assert config.trainer.epochs == 30
    with pytest.raises(
        ConfigError, match=r"trainer\.epochs=3 is fewer than the 5 epochs the run has trained"
    ):
        reconcile(
            OmegaConf.create(composed("trainer.epochs=3", "trainer.resume=/r")),
            saved,
            ["trainer.epochs=3"],
            5,
        )


def test_reconcile_moves_a_loader_root_derived_from_data_dir():
    from omegaconf import OmegaConf

    from cnnlab.runs.resume import reconcile

    saved = composed("dataset=mnist", "data_dir=/old", "trainer.resume=/r")
    typed = ["dataset=mnist", "data_dir=/new"]
    config, changes = reconcile(OmegaConf.create(composed(*typed, "trainer.resume=/r")), saved, typed, 1)
    assert config.dataset.loader.root == "/new/mnist"
    assert changes == {"data_dir": ["/old", "/new"], "dataset.loader.root": ["/old/mnist", "/new/mnist"]}


@pytest.mark.parametrize(
    ("epochs_done", "says"),
    [(2, "last.pt saved at epoch 3, step 0. Resume with: cnnlab train trainer.resume="),
     (3, "training had ended (last.pt and best.pt are saved): test best.pt with: cnnlab evaluate run=")],
)  # fmt: skip
def test_an_interrupt_says_what_is_left_to_do(tmp_path, epochs_done, says):
    """Stopped mid-training: resume it; stopped while testing, after the last epoch: evaluate it."""
    import signal

    from cnnlab.commands.train import _Record
    from cnnlab.training.distributed import Distributed
    from cnnlab.training.loop import Interrupted

    record = _Record(tmp_path, epochs=3, ranks=Distributed(), resumed=False)
    record.start("cpu")
    record.state.epoch = epochs_done
    stop = Interrupted(signal.SIGINT)
    with pytest.raises(Interrupted), record:
        raise stop
    assert says in str(stop)
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "interrupted"
