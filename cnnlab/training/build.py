"""Plain values → the dataset and everything one training run steps (model, wrappers, preprocessing,
augmentation, optimizer, schedule, scaler): built the same way for `cnnlab train`, evaluate, predict
and the benchmark. The commands derive the specs from their config (cnnlab.app.plans)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from cnnlab.data.augment import Augment
from cnnlab.data.batches import Preprocess, split_stats
from cnnlab.data.sources import Dataset, Progress, load_dataset
from cnnlab.errors import ConfigError, DataError
from cnnlab.models import create_model
from cnnlab.training.device import resolve_channels_last, resolve_compile, resolve_precision
from cnnlab.training.distributed import Distributed
from cnnlab.training.loop import BatchLoss, LoopSettings, Training, steps_per_epoch
from cnnlab.training.optim import build_optimizer, build_scheduler


@dataclass(frozen=True)
class DataSpec:
    """Which dataset, loaded how, and what the model expects of it."""

    name: str
    loader: dict[str, Any]  # the source's options (the `dataset.loader` config)
    val_fraction: float
    split_seed: int
    num_classes: int | None  # None: as many as the data has
    in_channels: int
    normalize: bool  # by the training split's per-channel statistics


@dataclass(frozen=True)
class TrainingSpec:
    """Everything a training run is built from, as plain values."""

    model: str
    model_options: dict[str, Any]
    in_channels: int
    num_classes: int
    input_size: tuple[int, int]
    optimizer: dict[str, Any]  # build_optimizer's keywords
    scheduler: dict[str, Any]  # build_scheduler's keywords
    augment: dict[str, Any]  # Augment's options
    label_smoothing: float
    normalize: bool
    epochs: int
    batch_size: int
    eval_batch_size: int
    seed: int
    precision: str  # as configured: auto is resolved for the device
    channels_last: str | bool
    compile: str | bool
    checkpoint_every_steps: int
    clip_grad_norm: float | None
    early_stopping_patience: int
    early_stopping_min_delta: float
    early_stopping_target: float | None
    health_check: float
    stop_if_stuck: bool
    detect_anomaly: bool
    limit_batches: int | float | None  # per epoch and evaluation: N batches, a share, or (None) all


def load_data(spec: DataSpec, device: torch.device, progress: Progress | None = None) -> Dataset:
    """The dataset's three splits, checked against the spec's classes and channels, moved to `device`."""
    data = load_dataset(spec.name, spec.loader, spec.val_fraction, spec.split_seed, progress)
    if spec.num_classes is not None and len(data.classes) != spec.num_classes:  # None: the folder's
        raise DataError(
            f"dataset {spec.name} has {len(data.classes)} classes but dataset.num_classes="
            f"{spec.num_classes}; set dataset.num_classes={len(data.classes)}"
        )
    channels = data.train.channels
    if channels != spec.in_channels:
        raise ConfigError(
            f"dataset {spec.name} has {channels}-channel images but dataset.in_channels="
            f"{spec.in_channels}; set dataset.in_channels={channels}"
        )
    # In memory, the whole dataset moves to the device once, as uint8: batches never cross host↔device
    # again. Streamed from files, only the labels move; each decoded batch is sent there.
    return data.to(device)


def make_preprocess(data: Dataset, size: tuple[int, int], normalize: bool) -> Preprocess:
    """Resize to the model's input `size`, normalized by the training split's statistics if asked (of a
    fixed sample of at most STATS_SAMPLE images when the split is streamed from files)."""
    return Preprocess(size, *(split_stats(data.train) if normalize else ()))


def build_training(spec: TrainingSpec, data: Dataset, ranks: Distributed) -> Training:
    """The model, its wrappers, preprocessing, augmentation, optimizer, schedule and scaler for `data`'s
    device."""
    device = data.train.device
    settings = LoopSettings(
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        eval_batch_size=spec.eval_batch_size,
        seed=spec.seed,
        precision=resolve_precision(str(spec.precision), device),
        checkpoint_every_steps=spec.checkpoint_every_steps,
        distributed=ranks,
        num_classes=len(data.classes),
        clip_grad_norm=spec.clip_grad_norm,
        early_stopping_patience=spec.early_stopping_patience,
        early_stopping_min_delta=spec.early_stopping_min_delta,
        early_stopping_target=spec.early_stopping_target,
        health_check=spec.health_check,
        stop_if_stuck=spec.stop_if_stuck,
        detect_anomaly=spec.detect_anomaly,
        limit_batches=spec.limit_batches,
    )
    model = create_model(
        spec.model, spec.in_channels, spec.num_classes, spec.input_size, **spec.model_options
    )
    model = model.to(device)
    if resolve_channels_last(spec.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        # Input shapes are fixed: let cuDNN time its algorithms once per shape (measured on an H100:
        # ResNet-18@96 compiled 1.1× faster). Runs on a GPU are then not bit-reproducible; CPU runs are.
        torch.backends.cudnn.benchmark = True
    step_model = model
    if ranks.enabled:
        step_model = DistributedDataParallel(
            model,
            device_ids=None if device.index is None else [device.index],
            gradient_as_bucket_view=True,  # grads live in the all-reduce buckets: no copies
        )
    optimizer = build_optimizer(model.parameters(), **spec.optimizer)
    steps = steps_per_epoch(len(data.train), settings.batch_size, ranks, settings.limit_batches)
    scheduler = build_scheduler(optimizer, steps_per_epoch=steps, epochs=settings.epochs, **spec.scheduler)
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "16")
    preprocess = make_preprocess(data, spec.input_size, spec.normalize).to(device)
    augment = Augment(spec.input_size, settings.num_classes, **spec.augment)
    augment = augment if augment.active else None
    # The anomaly hooks need the eager modules: a compiled graph would run around them.
    compile_setting = False if spec.detect_anomaly else resolve_compile(spec.compile, device, ranks.enabled)
    batch_loss = BatchLoss(step_model, preprocess, settings.precision, spec.label_smoothing, augment)
    return Training(
        model,
        compiled(batch_loss, compile_setting),
        preprocess,
        optimizer,
        scheduler,
        scaler,
        settings,
        spec.input_size,
        compile_setting,
        augment,
    )


def compiled(function: Callable, setting: bool | str) -> Callable:
    """`function` through torch.compile as a resolved `trainer.compile` says: false (as is), true
    (torch.compile's default mode), cudagraphs (that backend) or a mode name such as reduce-overhead."""
    if not setting:
        return function
    # Graphs of an earlier run in this process (a sweep's previous job) would only hold memory.
    torch.compiler.reset()
    # Static shapes: an epoch's last, smaller batch gets a graph of its own. (torch 2.11's CUDA-graph
    # trees fail on a graph made dynamic by that batch: "size of tensor a (64) must match ... (29)".)
    if setting == "cudagraphs":
        return torch.compile(function, backend="cudagraphs", dynamic=False)
    return torch.compile(function, mode=None if setting is True else setting, dynamic=False)
