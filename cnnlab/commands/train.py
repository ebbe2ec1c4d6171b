"""`cnnlab train`: config → model and data → training loop → TensorBoard, checkpoints, metrics.json."""

import random
import shlex
import time
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cnnlab.commands import checks
from cnnlab.commands.hydra_app import HydraCommand
from cnnlab.commands.resume import find_run_to_resume, resume_overrides
from cnnlab.data.batches import Preprocess, channel_stats
from cnnlab.data.sources import SOURCES, Dataset, Split, load_dataset
from cnnlab.errors import ConfigError, DataError
from cnnlab.models import create_model
from cnnlab.training.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from cnnlab.training.device import PRECISIONS, check_precision, resolve_device
from cnnlab.training.logging import RunLogger, console, print_summary, write_json
from cnnlab.training.loop import Diverged, Interrupted, LoopSettings, RunState, fit
from cnnlab.training.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler


def check(cfg: DictConfig) -> None:
    """Validate the whole config before any work: types, ranges, choices, device, input size."""
    checks.integer(cfg, "trainer.epochs", 1, 10)
    checks.integer(cfg, "trainer.batch_size", 1, 64)
    checks.integer(cfg, "trainer.eval_batch_size", 1, 1024)
    checks.integer(cfg, "trainer.seed", 0, 0)
    checks.integer(cfg, "trainer.checkpoint_every_steps", 0, 100)
    device = resolve_device(str(checks.value(cfg, "trainer.device")))
    check_precision(checks.choice(cfg, "trainer.precision", PRECISIONS), device)
    checks.choice(cfg, "optimizer.name", tuple(OPTIMIZERS))
    checks.number(cfg, "optimizer.lr", 0.01, allow_minimum=False)
    checks.number(cfg, "optimizer.weight_decay", 0.0)
    if "momentum" in cfg.optimizer:
        checks.number(cfg, "optimizer.momentum", 0.9, maximum=1.0)
    checks.choice(cfg, "scheduler.name", SCHEDULERS)
    for key in ("step_epochs", "gamma", "min_lr", "max_lr", "pct_start"):
        if key in cfg.scheduler:
            checks.number(cfg, f"scheduler.{key}", 0.1)
    checks.choice(cfg, "dataset.name", tuple(SOURCES))
    checks.value(cfg, "dataset.loader")  # every loader option set (imagefolder's root is required)
    if "test_fraction" in cfg.dataset.loader:
        checks.number(cfg, "dataset.loader.test_fraction", 0.2, maximum=0.9, allow_minimum=False)
    checks.check_model(cfg)


def run(cfg: DictConfig) -> float:
    """Train one run; return the best validation accuracy (the objective of sweepers like Optuna)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    trainer = cfg.trainer
    settings = LoopSettings(
        epochs=trainer.epochs,
        batch_size=trainer.batch_size,
        eval_batch_size=trainer.eval_batch_size,
        seed=trainer.seed,
        precision=str(trainer.precision),
        checkpoint_every_steps=trainer.checkpoint_every_steps,
    )
    device = resolve_device(trainer.device)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    torch.manual_seed(settings.seed)

    name, in_channels, num_classes, options = checks.model_spec(cfg)
    size = checks.input_size(cfg)
    model = create_model(name, in_channels, num_classes, size, **options).to(device)
    data = _load_data(cfg, device)
    preprocess = Preprocess(
        size, *(channel_stats(data.train.images.cpu()) if cfg.dataset.normalize else ())
    ).to(device)
    optimizer_options = OmegaConf.to_container(cfg.optimizer, resolve=True)
    optimizer = build_optimizer(model.parameters(), **optimizer_options)
    steps_per_epoch = -(-len(data.train) // settings.batch_size)
    scheduler_options = OmegaConf.to_container(cfg.scheduler, resolve=True)
    scheduler = build_scheduler(
        optimizer, steps_per_epoch=steps_per_epoch, epochs=settings.epochs, **scheduler_options
    )
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "16")

    config = OmegaConf.to_container(cfg, resolve=True)
    state = RunState()
    resumed = cfg.trainer.resume is not None
    if resumed:
        payload = load_checkpoint(run_dir / "last.pt")
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        scaler.load_state_dict(payload["scaler"])
        state = RunState(**payload["state"])
        set_rng_state(payload["rng"])
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(config))
    wall_start = time.perf_counter() - state.wall_seconds

    def save(kind: str, state: RunState) -> None:
        state.wall_seconds = time.perf_counter() - wall_start
        save_checkpoint(
            run_dir / f"{kind}.pt",
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "state": state.as_dict(),
                "rng": rng_state(),
                "config": config,
            },
        )

    logger = RunLogger(run_dir, settings.epochs, purge_step=state.epoch + 1 if resumed else None)
    parameters = sum(p.numel() for p in model.parameters())
    action = f"resuming at epoch {state.epoch + 1}" if resumed else "training"
    logger.info(
        f"{action} {name} ({parameters:,} parameters) on {cfg.dataset.name} "
        f"({len(data.train):,} train / {len(data.test):,} test, {size[0]}×{size[1]}) "
        f"on {_describe(device)}, precision {settings.precision}"
    )
    logger.text("config", f"```\n{OmegaConf.to_yaml(config)}```")
    status, error = "finished", None
    try:
        state = fit(model, data, preprocess, optimizer, scheduler, scaler, settings, state, logger, save)
    except (Diverged, Interrupted) as stop:
        status = "failed" if isinstance(stop, Diverged) else "interrupted"
        error = str(stop)
        if isinstance(stop, Interrupted):
            command = f"cnnlab train trainer.resume={shlex.quote(str(run_dir))}"
            stop.args = (
                f"interrupted by {stop}; last.pt saved at epoch {state.epoch + 1}, "
                f"step {state.step}. Resume with: {command}",
            )
        raise
    finally:
        logger.close()
        _write_metrics(run_dir, state, settings, status, error, str(device), time.perf_counter() - wall_start)
    _print_result(run_dir, state, settings)
    return state.best_val_acc


def _load_data(cfg: DictConfig, device: torch.device) -> Dataset:
    loader_options = OmegaConf.to_container(cfg.dataset.loader, resolve=True)
    data = load_dataset(cfg.dataset.name, **loader_options)
    if len(data.classes) != cfg.dataset.num_classes:
        raise DataError(
            f"dataset {cfg.dataset.name} has {len(data.classes)} classes but dataset.num_classes="
            f"{cfg.dataset.num_classes}; set dataset.num_classes={len(data.classes)}"
        )
    channels = data.train.images.shape[1]
    if channels != cfg.dataset.in_channels:
        raise ConfigError(
            f"dataset {cfg.dataset.name} has {channels}-channel images but dataset.in_channels="
            f"{cfg.dataset.in_channels}; set dataset.in_channels={channels}"
        )

    # The whole dataset moves to the device once, as uint8: batches never cross host↔device again.
    def move(split: Split) -> Split:
        return Split(split.images.to(device), split.labels.to(device))

    return Dataset(move(data.train), move(data.test), data.classes)


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _write_metrics(
    run_dir: Path,
    state: RunState,
    settings: LoopSettings,
    status: str,
    error: str | None,
    device: str,
    wall_seconds: float,
) -> None:
    trained = len(state.history)
    final = state.history[-1] if state.history else {}
    write_json(
        run_dir / "metrics.json",
        {
            "status": status,
            "error": error,
            "epochs": trained,
            "epochs_planned": settings.epochs,
            "steps": state.step,
            "final": final,
            "best": {"val/acc": state.best_val_acc, "epoch": state.best_epoch},
            "wall_time_s": round(wall_seconds, 3),
            "images_per_s": state.train_images / state.train_seconds if state.train_seconds else 0.0,
            "device": device,
            "history": state.history,
        },
    )


def _print_result(run_dir: Path, state: RunState, settings: LoopSettings) -> None:
    final = state.history[-1]
    print_summary(
        [
            ("final val acc", f"{final['val/acc']:.4f}"),
            ("best val acc", f"{state.best_val_acc:.4f} (epoch {state.best_epoch})"),
            ("final train loss", f"{final['train/loss']:.4f}"),
            ("epochs", str(settings.epochs)),
            ("images/s (train)", f"{state.train_images / max(state.train_seconds, 1e-9):,.0f}"),
        ],
        title="cnnlab train: done",
    )
    console.print(f"run directory: {run_dir}")
    console.print(f"view it:       tensorboard --logdir {shlex.quote(str(run_dir))}")


def prepare(overrides: list[str]) -> list[str]:
    """`trainer.resume=<run dir|checkpoint|latest>`: continue that run with its own overrides."""
    resume = [o for o in overrides if o.startswith("trainer.resume=")]
    if not resume or resume[-1].split("=", 1)[1] in ("null", ""):
        return overrides
    others = [o for o in overrides if not o.startswith("trainer.resume=")]
    target = resume[-1].split("=", 1)[1].strip("'\"")
    run_dir = find_run_to_resume(COMMAND, others) if target == "latest" else Path(target)
    return resume_overrides(run_dir, others)


COMMAND = HydraCommand("train", "train", check=check, run=run, prepare=prepare)
