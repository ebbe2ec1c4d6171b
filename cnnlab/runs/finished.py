"""Opening a finished run for `evaluate`, `predict` and `activations`: its config, model and preprocessing.

How the configs fit together. Each of these commands is a Hydra app with its own small config
(configs/evaluate.yaml, …) holding only the command's options and `run: ???`. The run's own config is
*not* composed again: `cnnlab train` saved it fully resolved as `<run>/config.yaml`, and it is read
with OmegaConf as it is, so the model is rebuilt exactly as trained even if cnnlab's defaults changed
since. The checkpoint (best.pt or last.pt) supplies the weights, and the preprocessing is rebuilt by
training's own `load_data` and `make_preprocess`: the same resize and the same per-channel statistics of
the run's training split.

`cnnlab evaluate dataset=<name>` selects a dataset config group in the command's config; its node
replaces the run's `dataset` node as a whole (two datasets share no loader options, so a key-by-key
merge would mix them) and is resolved inside the run's config, so `${data_dir}` is the run's (or
the command's `data_dir=` when set). The model keeps the run's input size: images of another native
size are resized to it, and only the channel and class counts must agree.

The commands write their outputs into the run directory (hydra.run.dir is the run, Hydra's own
.hydra/ files are switched off so the run's saved overrides stay intact).
"""

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from cnnlab.app import checks
from cnnlab.app.plans import data_spec
from cnnlab.data.batches import Preprocess
from cnnlab.data.decode import decode_all
from cnnlab.data.sources import IMAGE_SUFFIXES, Dataset, Split
from cnnlab.errors import CheckpointError, ConfigError, DataError
from cnnlab.models import create_model
from cnnlab.runs.layout import CHECKPOINTS, RunDir
from cnnlab.runs.resume import BEFORE_THEY_EXISTED
from cnnlab.training.build import load_data, make_preprocess
from cnnlab.training.checkpoint import load_checkpoint
from cnnlab.training.device import resolve_channels_last


@dataclass
class FinishedRun:
    """A trained run: its directory, saved config, and model loaded from one checkpoint (eval mode)."""

    directory: Path
    config: DictConfig
    model: nn.Module
    checkpoint: Path
    epoch: int  # epochs trained when the checkpoint was written
    input_size: tuple[int, int]
    device: torch.device

    @property
    def in_channels(self) -> int:
        """Channels the model reads."""
        return int(self.config.model.in_channels)

    @property
    def native_size(self) -> tuple[int, int]:
        """[height, width] of the run's dataset images before preprocessing."""
        height, width = self.config.dataset.image_size
        return int(height), int(width)

    def load_data(self) -> Dataset:
        """The run's own dataset, on the run's device."""
        return load_data(data_spec(self.config), self.device)

    def preprocess(self, data: Dataset) -> Preprocess:
        """The run's preprocessing (resize and normalization), given the run's own dataset."""
        return make_preprocess(data, self.input_size, self.config.dataset.normalize).to(self.device)


def check_run(cfg: DictConfig, checkpoint_key: str) -> Path:
    """The checkpoint file named by `run` and `<checkpoint_key>`, which must exist; one line otherwise."""
    kind = checks.choice(cfg, checkpoint_key, CHECKPOINTS)
    directory = Path(str(checks.value(cfg, "run")))  # as given: it is also hydra.run.dir
    hint = "give the directory `cnnlab train` printed at its end (run directory: …)"
    if not directory.is_dir():
        what = "is a file" if directory.exists() else "does not exist"
        raise ConfigError(f"run={directory} {what}; {hint}")
    if not RunDir(directory).config.is_file():
        raise ConfigError(f"run={directory} is not a cnnlab run directory (no config.yaml); {hint}")
    path = RunDir(directory).checkpoint(kind)
    if not path.is_file():
        other = CHECKPOINTS[1 - CHECKPOINTS.index(kind)]
        raise CheckpointError(
            f"run {directory} has no {kind}.pt (the run stopped before writing it); "
            f"use {checkpoint_key}={other} if {other}.pt exists, or train again"
        )
    return path


def saved_config(directory: Path) -> DictConfig:
    """The run's fully resolved config, as `cnnlab train` saved it."""
    path = RunDir(directory).config
    try:
        config = OmegaConf.load(path)
    except (OSError, ValueError, OmegaConfBaseException, yaml.YAMLError) as error:
        raise ConfigError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    if not isinstance(config, DictConfig) or "model" not in config or "dataset" not in config:
        raise ConfigError(f"{path} is not a cnnlab run config (no model or dataset section)")
    _add_new_loader_options(config)
    return config


def _add_new_loader_options(config: DictConfig) -> None:
    """Options added to cnnlab after the run was saved, so runs of older versions stay readable: the
    split and model options of BEFORE_THEY_EXISTED take the value that reproduces the run, loader
    options (e.g. imagefolder's `stream`) their packaged defaults."""
    if "val_fraction" not in config.dataset:
        for key in ("val_fraction", "split_seed"):
            config.dataset[key] = BEFORE_THEY_EXISTED[f"dataset.{key}"]
    packaged_model = resources.files("cnnlab.configs") / "model" / f"{config.model.get('name')}.yaml"
    if packaged_model.is_file():  # e.g. lenet_modern's batch_norm: off for a run saved before it existed
        for key in OmegaConf.load(str(packaged_model)):
            if key not in config.model and f"model.{key}" in BEFORE_THEY_EXISTED:
                config.model[key] = BEFORE_THEY_EXISTED[f"model.{key}"]
    packaged = resources.files("cnnlab.configs") / "dataset" / f"{config.dataset.get('name')}.yaml"
    if "loader" not in config.dataset or not packaged.is_file():
        return
    defaults = OmegaConf.to_container(OmegaConf.load(str(packaged)).get("loader", {}), resolve=False)
    for key, value in defaults.items():
        if key not in config.dataset.loader:
            config.dataset.loader[key] = value


def open_run(checkpoint: Path, device: torch.device, config: DictConfig | None = None) -> FinishedRun:
    """Rebuild the run's model from its config (`config`, already read, or its config.yaml) and load
    the checkpoint's weights onto `device`."""
    directory = checkpoint.parent
    config = saved_config(directory) if config is None else config
    try:
        name, in_channels, num_classes, options = checks.model_spec(config)
        size = checks.input_size(config)
        model = create_model(name, in_channels, num_classes, size, **options)
    except (ConfigError, TypeError) as error:
        raise ConfigError(f"{directory / 'config.yaml'}: cannot rebuild the model: {error}") from None
    payload = load_checkpoint(checkpoint)
    try:
        model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError) as error:
        reason = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{checkpoint} does not fit the model of {directory}: {reason[:160]}") from None
    model.to(device).eval()
    if resolve_channels_last(config.trainer.get("channels_last", False), device):
        model.to(memory_format=torch.channels_last)  # as trained: the same convolution kernels
    return FinishedRun(directory, config, model, checkpoint, int(payload["state"]["epoch"]), size, device)


def with_dataset(run: FinishedRun, dataset: DictConfig, data_dir: str | None) -> DictConfig:
    """The run's config with its dataset node replaced by `dataset`, resolved inside the run's config
    (so `${data_dir}` is the run's data_dir, or `data_dir` when given)."""
    config = run.config.copy()
    if data_dir is not None:
        config.data_dir = data_dir
    # The splits are carved as the run's were (the same val_fraction and split seed).
    splits = {key: run.config.dataset[key] for key in ("val_fraction", "split_seed")}
    config.dataset = {**splits, **OmegaConf.to_container(dataset, resolve=False)}
    for key in ("in_channels", "num_classes"):
        got, want = checks.value(config, f"dataset.{key}"), run.config.model[key]
        if got != want:
            what = "input channels" if key == "in_channels" else "classes"
            raise ConfigError(
                f"dataset {config.dataset.name} has {got} {what} but the run's model has {want}; "
                "evaluate on a dataset of the same shape"
            )
    return config


def image_files(target: str, key: str) -> list[Path]:
    """The image file `target`, or every image under the directory `target` (sorted)."""
    path = Path(target).expanduser()
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"{key}={path}: no image files ({suffixes}) in this directory")
        return files
    if not path.is_file():
        raise DataError(f"{key}={path} does not exist; give an image file or a directory of images")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{key}={path} is not an image file; use one of: {suffixes}")
    return [path]


def read_images(files: list[Path], channels: int, size: tuple[int, int]) -> Split:
    """Decode image files as the imagefolder loader does: grayscale or RGB by `channels`, resized to
    the dataset's native `size` → a Split of uint8 (N, C, H, W) images, all labelled 0; the run's
    Preprocess does the rest."""
    if channels not in (1, 3):
        raise ConfigError(f"the run's model reads {channels} channels; image files give 1 (grey) or 3 (RGB)")
    images, labels, _ = decode_all(
        [(0, path) for path in files], list(size), channels, 0, skip_unreadable=False
    )
    return Split(images, labels)
