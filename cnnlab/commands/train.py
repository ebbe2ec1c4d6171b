"""`cnnlab train`: config → model and data → training loop → TensorBoard, checkpoints, metrics.json."""

import os
import random
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from cnnlab.commands import checks
from cnnlab.commands.hparams import hparam_metrics, job_hparams
from cnnlab.commands.hydra_app import HydraCommand
from cnnlab.commands.jobs import update_resumed_job
from cnnlab.commands.resume import find_run_to_resume, reconcile, resume_overrides
from cnnlab.commands.run_lock import RunLock, refuse_if_locked
from cnnlab.data.augment import Augment
from cnnlab.data.batches import Preprocess, epoch_order, split_stats
from cnnlab.data.sources import SOURCES, AnySplit, Dataset, load_dataset
from cnnlab.errors import CheckpointError, CnnlabError, ConfigError, DataError, first_line
from cnnlab.files import atomic_write
from cnnlab.models import create_model
from cnnlab.training import distributed
from cnnlab.training.checkpoint import (
    copy_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from cnnlab.training.device import (
    PRECISIONS,
    check_compile,
    check_precision,
    resolve_channels_last,
    resolve_compile,
    resolve_device,
    resolve_precision,
)
from cnnlab.training.logging import (
    QuietLogger,
    RunLogger,
    console,
    decoding_bar,
    print_summary,
    write_json,
)
from cnnlab.training.loop import (
    BatchLoss,
    Interrupted,
    LoopSettings,
    RunState,
    StopSignals,
    Stuck,
    evaluate,
    fit,
    steps_per_epoch,
)
from cnnlab.training.optim import OPTIMIZERS, SCHEDULERS, build_optimizer, build_scheduler
from cnnlab.training.visuals import augmented_grid, write_visuals

LOSSES = ("cross_entropy",)

# trainer.compile's choices besides true/false: `auto`, torch.compile's modes, and `cudagraphs` (its
# backend that records CUDA graphs without generating code).
COMPILE_CHOICES = (
    "auto",
    "cudagraphs",
    "default",
    "reduce-overhead",
    "max-autotune",
    "max-autotune-no-cudagraphs",
)


def check(cfg: DictConfig) -> None:
    """Validate the whole config before any work: types, ranges, choices, device, input size."""
    checks.integer(cfg, "trainer.epochs", 1, 10)
    batch_size = checks.integer(cfg, "trainer.batch_size", 1, 64)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if batch_size % world_size:
        raise ConfigError(
            f"trainer.batch_size={batch_size} is the global batch and must divide evenly among the "
            f"{world_size} torchrun processes; e.g. trainer.batch_size={world_size * 32}"
        )
    checks.integer(cfg, "trainer.eval_batch_size", 1, 1024)
    checks.integer(cfg, "trainer.seed", 0, 0)
    checks.integer(cfg, "trainer.checkpoint_every_steps", 0, 100)
    checks.integer(cfg, "trainer.visual_every", 0, 5)
    device = resolve_device(str(checks.value(cfg, "trainer.device")))
    check_precision(checks.choice(cfg, "trainer.precision", PRECISIONS), device)
    checks.choice(cfg, "trainer.channels_last", ("auto", "True", "False"))
    check_compile(checks.choice(cfg, "trainer.compile", ("False", "True", *COMPILE_CHOICES)), device)
    if checks.value(cfg, "trainer.threads") is not None:
        checks.integer(cfg, "trainer.threads", 1, 2)
    checks.choice(cfg, "optimizer.name", tuple(OPTIMIZERS))
    checks.number(cfg, "optimizer.lr", 0.01, allow_minimum=False)
    checks.number(cfg, "optimizer.weight_decay", 0.0)
    if "momentum" in cfg.optimizer:
        checks.number(cfg, "optimizer.momentum", 0.9, maximum=1.0)
    checks.choice(cfg, "scheduler.name", SCHEDULERS)
    for key in ("step_epochs", "gamma", "min_lr", "max_lr", "pct_start"):
        if key in cfg.scheduler:
            checks.number(cfg, f"scheduler.{key}", 0.1)
    checks.number(cfg, "scheduler.warmup_epochs", 1)
    checks.choice(cfg, "loss.name", LOSSES)
    checks.number(cfg, "loss.label_smoothing", 0.1, maximum=1.0)
    if checks.value(cfg, "trainer.clip_grad_norm") is not None:
        checks.number(cfg, "trainer.clip_grad_norm", 1.0, allow_minimum=False)
    checks.integer(cfg, "trainer.early_stopping.patience", 0, 5)
    checks.number(cfg, "trainer.early_stopping.min_delta", 0.001)
    checks.number(cfg, "trainer.health_check", 0.5, maximum=1.0)
    checks.boolean(cfg, "trainer.stop_if_stuck")
    checks.choice(cfg, "dataset.name", tuple(SOURCES))
    checks.number(cfg, "dataset.val_fraction", 0.1, maximum=0.9)
    checks.integer(cfg, "dataset.split_seed", 0, 0)
    checks.dataset_loader(cfg)
    checks.check_model(cfg)
    checks.check_augment(cfg)


def run(cfg: DictConfig) -> float:
    """Train one run; return the best validation accuracy (the objective of sweepers like Optuna)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    payload, changes = None, {}
    if cfg.trainer.resume is not None:
        payload = load_checkpoint(Path(cfg.trainer.resume))
        done = int(payload["state"].get("epoch", 0))
        cfg, changes = reconcile(cfg, payload["config"], list(HydraConfig.get().overrides.task), done)
        check(cfg)  # the config the resume runs with, allowed changes applied
    device = resolve_device(cfg.trainer.device)
    ranks = distributed.from_environment(device.type)
    lock = RunLock(run_dir)
    if ranks.is_main:
        stale = lock.acquire()
        if payload is None and (run_dir / "last.pt").exists():
            lock.release()
            raise _occupied(run_dir)
        if stale:
            console.print(stale)
    try:
        return _train(cfg, run_dir, device, ranks, payload, changes)
    finally:
        lock.release()


def _train(
    cfg: DictConfig,
    run_dir: Path,
    device: torch.device,
    ranks: distributed.Distributed,
    payload: dict | None,
    changes: dict[str, list],
) -> float:
    """`run` once the run directory is this process's: set up, fit, test best.pt, write the records."""
    trainer = cfg.trainer
    status, error, test, state, settings = "failed", None, None, RunState(), None
    wall_start, logger = time.perf_counter(), QuietLogger()
    resumed, started = payload is not None, False  # started: set up, about to fit
    # No step to finish while setting up or testing: Ctrl-C or SIGTERM stop at once, as an orderly
    # stop; `fit` defers them to the end of the step in progress.
    with StopSignals(enabled=not ranks.enabled, defer=False):
        try:
            if ranks.enabled and device.type == "cuda":
                device = torch.device("cuda", ranks.local_rank)  # one GPU per rank
                torch.cuda.set_device(device)
            if trainer.threads is not None:
                torch.set_num_threads(trainer.threads)
            random.seed(trainer.seed)
            np.random.seed(trainer.seed)
            torch.manual_seed(trainer.seed)
            data = load_data(cfg, device)
            parts = build_training(cfg, data, ranks)
            settings = parts.settings
            if resumed:
                state = _restore(parts, payload, Path(trainer.resume), changes)
            config = OmegaConf.to_container(cfg, resolve=True)
            if ranks.is_main:
                atomic_write(
                    run_dir / "config.yaml", lambda file: file.write(OmegaConf.to_yaml(config).encode())
                )
            wall_start = time.perf_counter() - state.wall_seconds
            if ranks.is_main:  # rank 0 alone logs and prints
                logger = RunLogger(run_dir, settings.epochs, purge_step=state.epoch + 1 if resumed else None)
            _announce(cfg, parts, data, device, state, resumed, changes, logger)
            logger.text("config", f"```\n{OmegaConf.to_yaml(config)}```")
            if ranks.is_main and parts.augment is not None and state.step == 0:
                _log_augmented(logger, parts, data, ranks)
            started = True

            def save(state: RunState, best: bool) -> None:
                state.wall_seconds = time.perf_counter() - wall_start
                if not ranks.is_main:
                    return
                save_checkpoint(
                    run_dir / "last.pt",
                    {
                        "model": parts.model.state_dict(),
                        "optimizer": parts.optimizer.state_dict(),
                        "scheduler": parts.scheduler.state_dict(),
                        "scaler": parts.scaler.state_dict(),
                        "state": state.as_dict(),
                        "rng": rng_state(),
                        "config": config,
                    },
                )
                if best:  # the same bytes: copied, not serialized a second time
                    copy_checkpoint(run_dir / "last.pt", run_dir / "best.pt")

            def after_epoch(state: RunState) -> None:
                # Images every `visual_every` epochs and always after the last one (with the model graph).
                final = state.epoch == settings.epochs
                if not ranks.is_main:
                    return
                if final or (trainer.visual_every and state.epoch % trainer.visual_every == 0):
                    write_visuals(
                        logger.writer,
                        parts.model,
                        data,
                        parts.preprocess,
                        state.epoch,
                        settings.eval_batch_size,
                        settings.precision,
                        graph=final,
                    )

            state = fit(
                parts.forward,
                parts.model,
                data,
                parts.preprocess,
                parts.optimizer,
                parts.scheduler,
                parts.scaler,
                settings,
                state,
                logger,
                save,
                after_epoch,
                parts.augment,
            )
            if data.test is not None:
                test = _test_best(parts, run_dir / "best.pt", data.test, state.best_epoch, ranks)
                logger.scalars(
                    {"test/loss": test["test/loss"], "test/acc": test["test/acc"]}, step=state.epoch
                )
            logger.hparams(job_hparams(cfg), hparam_metrics(state, test), state.epoch)
            status = "finished"
        except Interrupted as stop:
            status = "interrupted"
            command = f"cnnlab train trainer.resume={shlex.quote(str(run_dir))}"
            if started:
                kept = f"last.pt saved at epoch {state.epoch + 1}, step {state.step}. Resume with: {command}"
            elif resumed:
                kept = f"stopped while setting up the resume: the run is as it was; resume it with: {command}"
            else:
                kept = "stopped while setting up, before any step: nothing to resume; run the command again"
            stop.args = (f"interrupted by {stop}; {kept}",)
            error = str(stop)
            raise
        except Stuck as stop:
            status, error = "stuck", str(stop)
            raise
        except Exception as failure:
            error = (
                str(failure) if isinstance(failure, CnnlabError) else f"{type(failure).__name__}: {failure}"
            )
            raise
        finally:
            logger.close()
            # A resume that failed before it began leaves the run's records as they were.
            if ranks.is_main and (started or not resumed):
                wall = time.perf_counter() - wall_start
                try:
                    _write_metrics(run_dir, state, trainer.epochs, status, error, test, str(device), wall)
                except OSError as failure:  # a full or read-only disk: the run's own error is the one to see
                    console.print(f"metrics.json not written: {failure.strerror or failure}")
                if resumed:  # a sweep job's run resumed on its own: its job record takes the new outcome
                    update_resumed_job(run_dir, status, error)
            distributed.shutdown()
    if ranks.is_main:
        _print_result(run_dir, state, settings, test)
    return state.best_val_acc


def _restore(parts: "Training", payload: dict, checkpoint: Path, changes: dict[str, list]) -> RunState:
    """Load a checkpoint's model, optimizer, schedule, scaler and RNG states into `parts`: the run
    continues exactly where `checkpoint` was written. Allowed config `changes` are recorded."""
    try:
        parts.model.load_state_dict(payload["model"])
        parts.optimizer.load_state_dict(payload["optimizer"])
        parts.scheduler.load_state_dict(payload["scheduler"])
        parts.scaler.load_state_dict(payload["scaler"])
        state = RunState(**payload["state"])
        set_rng_state(payload["rng"])
    except (KeyError, ValueError, IndexError, RuntimeError, TypeError) as error:
        reason = first_line(error, 160)
        raise CheckpointError(
            f"{checkpoint} does not fit the run's model, optimizer or schedule ({reason}); resume with the "
            "run's own config, or start a new run"
        ) from None
    if changes:
        state.resumes.append({"epoch": state.epoch, "step": state.step, "changes": changes})
    return state


def _log_augmented(
    logger: RunLogger, parts: "Training", data: Dataset, ranks: distributed.Distributed
) -> None:
    """TensorBoard's inputs/augmented: this rank's first training batch as the model will be fed it."""
    settings = parts.settings
    order = ranks.shard(epoch_order(len(data.train), settings.seed, 0), pad=True)
    first = order[: settings.batch_size // ranks.world_size]
    draws = parts.augment.draw(len(first), settings.seed, 0, 0, ranks.rank)
    labels = data.train.labels[first.to(data.train.device)]
    grid = augmented_grid(
        data.train.take(first), labels, parts.preprocess, parts.augment, draws, data.classes
    )
    logger.writer.add_image("inputs/augmented", grid, 0)


def _announce(
    cfg: DictConfig,
    parts: "Training",
    data: Dataset,
    device: torch.device,
    state: RunState,
    resumed: bool,
    changes: dict[str, list],
    logger: RunLogger | QuietLogger,
) -> None:
    """The run's first lines: what trains on what, where; the protocol; what a resume changed."""
    size = parts.input_size
    parameters = sum(p.numel() for p in parts.model.parameters())
    action = f"resuming at epoch {state.epoch + 1}" if resumed else "training"
    logger.info(
        f"{action} {cfg.model.name} ({parameters:,} parameters) on {cfg.dataset.name} "
        f"({_describe_splits(data)}, {size[0]}×{size[1]}) "
        f"on {_describe(device)}, precision {parts.settings.precision}"
        + (f", compile {parts.compile}" if parts.compile else "")
    )
    for note in data.notes:
        logger.info(note)
    if changes:
        logger.info(
            "resume changes: " + ", ".join(f"{key} {old!r} → {new!r}" for key, (old, new) in changes.items())
        )
    if data.val is data.test:
        logger.info(
            "dataset.val_fraction=0: validating on the test split (the book's protocol), so best.pt and "
            "the best figures are chosen on test and are not an unbiased estimate"
        )
    elif data.test is None:
        logger.info(f"no test split ({cfg.dataset.name} has no test/ folder): only validation figures")


def _test_best(
    parts: "Training", best: Path, test: AnySplit, best_epoch: int, ranks: distributed.Distributed
) -> dict[str, float | int]:
    """The loss and accuracy on `test` of best.pt's weights (loaded into the run's model): the run's
    one look at the test split, after every choice was made on validation."""
    ranks.barrier()  # rank 0 has written best.pt
    parts.model.load_state_dict(load_checkpoint(best)["model"])
    settings = parts.settings
    loss, accuracy = evaluate(
        parts.model, test, parts.preprocess, settings.eval_batch_size, settings.precision, ranks
    )
    return {"test/loss": loss, "test/acc": accuracy, "epoch": best_epoch}


@dataclass
class Training:
    """Everything one training run steps: built by `build_training` for `run` and the benchmark alike."""

    model: nn.Module  # the plain module: checkpoints save it (no module./_orig_mod. keys)
    forward: nn.Module  # what trains: a BatchLoss around the model (in DDP), compiled if configured
    preprocess: Preprocess
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    settings: LoopSettings
    input_size: tuple[int, int]
    compile: bool | str  # trainer.compile with 'auto' resolved for the device
    augment: Augment | None  # the training batches' augmentation (inside `forward`); None: none


def build_training(cfg: DictConfig, data: Dataset, ranks: distributed.Distributed) -> Training:
    """The model, its wrappers, preprocessing, optimizer, schedule and scaler for `data`'s device."""
    trainer = cfg.trainer
    device = data.train.device
    settings = LoopSettings(
        epochs=trainer.epochs,
        batch_size=trainer.batch_size,
        eval_batch_size=trainer.eval_batch_size,
        seed=trainer.seed,
        precision=resolve_precision(str(trainer.precision), device),
        checkpoint_every_steps=trainer.checkpoint_every_steps,
        distributed=ranks,
        num_classes=len(data.classes),
        clip_grad_norm=trainer.clip_grad_norm,
        early_stopping_patience=trainer.early_stopping.patience,
        early_stopping_min_delta=trainer.early_stopping.min_delta,
        health_check=trainer.health_check,
        stop_if_stuck=trainer.stop_if_stuck,
    )
    name, in_channels, num_classes, options = checks.model_spec(cfg)
    size = checks.input_size(cfg)
    model = create_model(name, in_channels, num_classes, size, **options).to(device)
    if resolve_channels_last(trainer.channels_last, device):
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
    optimizer = build_optimizer(model.parameters(), **OmegaConf.to_container(cfg.optimizer, resolve=True))
    scheduler = build_scheduler(
        optimizer,
        steps_per_epoch=steps_per_epoch(len(data.train), settings.batch_size, ranks),
        epochs=settings.epochs,
        **OmegaConf.to_container(cfg.scheduler, resolve=True),
    )
    scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "16")
    preprocess = make_preprocess(cfg, data, size).to(device)
    compile_setting = resolve_compile(trainer.compile, device, ranks.enabled)
    options = checks.check_augment(cfg)
    options.update(scale=tuple(options["scale"]), ratio=tuple(options["ratio"]))
    augment = Augment(size, settings.num_classes, **options)
    augment = augment if augment.active else None
    batch_loss = BatchLoss(step_model, preprocess, settings.precision, cfg.loss.label_smoothing, augment)
    forward = compiled(batch_loss, compile_setting)
    return Training(
        model, forward, preprocess, optimizer, scheduler, scaler, settings, size, compile_setting, augment
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


def make_preprocess(cfg: DictConfig, data: Dataset, size: tuple[int, int]) -> Preprocess:
    """Resize to the model's input `size`, normalized by the training split's statistics if configured
    (of a fixed sample of at most STATS_SAMPLE images when the split is streamed from files)."""
    return Preprocess(size, *(split_stats(data.train) if cfg.dataset.normalize else ()))


def load_data(cfg: DictConfig, device: torch.device) -> Dataset:
    """The configured dataset's three splits, checked against dataset.num_classes/in_channels, moved to
    `device`."""
    loader_options = OmegaConf.to_container(cfg.dataset.loader, resolve=True)
    dataset = cfg.dataset
    data = load_dataset(dataset.name, loader_options, dataset.val_fraction, dataset.split_seed, decoding_bar)
    if len(data.classes) != cfg.dataset.num_classes:
        raise DataError(
            f"dataset {cfg.dataset.name} has {len(data.classes)} classes but dataset.num_classes="
            f"{cfg.dataset.num_classes}; set dataset.num_classes={len(data.classes)}"
        )
    channels = data.train.channels
    if channels != cfg.dataset.in_channels:
        raise ConfigError(
            f"dataset {cfg.dataset.name} has {channels}-channel images but dataset.in_channels="
            f"{cfg.dataset.in_channels}; set dataset.in_channels={channels}"
        )

    # In memory, the whole dataset moves to the device once, as uint8: batches never cross host↔device
    # again. Streamed from files, only the labels move; each decoded batch is sent there.
    return data.to(device)


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _describe_splits(data: Dataset) -> str:
    """e.g. '1,295 train / 142 val / 360 test'; no test part when validation is the test split."""
    parts = [f"{len(data.train):,} train", f"{len(data.val):,} val"]
    if data.test is not None and data.test is not data.val:
        parts.append(f"{len(data.test):,} test")
    return " / ".join(parts)


def _write_metrics(
    run_dir: Path,
    state: RunState,
    epochs_planned: int,
    status: str,
    error: str | None,
    test: dict[str, float | int] | None,
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
            "epochs_planned": epochs_planned,
            "steps": state.step,
            "final": final,
            "best": {"val/acc": state.best_val_acc, "epoch": state.best_epoch},
            # best.pt on the test split, once: {"test/loss", "test/acc", "epoch"} (null: none measured)
            "test": test,
            "stopped_early": state.stopped_early,
            "warnings": [warning["message"] for warning in state.warnings],
            # each resume that changed the config: {"epoch", "step", "changes": {key: [before, after]}}
            "resumes": state.resumes,
            "wall_time_s": round(wall_seconds, 3),
            "images_per_s": state.train_images / state.train_seconds if state.train_seconds else 0.0,
            "device": device,
            "history": state.history,
        },
    )


def _print_result(
    run_dir: Path, state: RunState, settings: LoopSettings, test: dict[str, float | int] | None
) -> None:
    final = state.history[-1]
    rows = [
        ("final val acc", f"{final['val/acc']:.4f}"),
        ("best val acc", f"{state.best_val_acc:.4f} (epoch {state.best_epoch})"),
    ]
    if test is not None:
        rows.append(("test acc (best.pt)", f"{test['test/acc']:.4f} (loss {test['test/loss']:.4f})"))
    rows += [
        ("final train loss", f"{final['train/loss']:.4f}"),
        (
            "epochs",
            f"{len(state.history)}"
            + ("" if len(state.history) == settings.epochs else f" of {settings.epochs}"),
        ),
    ]
    if state.stopped_early:
        rows.append(("stopped early", state.stopped_early))
    rows.append(("images/s (train)", f"{state.train_images / max(state.train_seconds, 1e-9):,.0f}"))
    print_summary(rows, title="cnnlab train: done")
    console.print(f"run directory: {run_dir}")
    console.print(f"view it:       tensorboard --logdir {shlex.quote(str(run_dir))}")


def prepare(overrides: list[str]) -> list[str]:
    """`trainer.resume=<run dir|checkpoint|latest>`: continue that run in its own directory; a run
    directory another process is training in is refused before anything is written to it."""
    rank = int(os.environ.get("RANK", "0"))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not any(
        o.startswith("hydra.run.dir=") for o in overrides
    ):
        raise ConfigError(
            "under torchrun all ranks must share one run directory: add hydra.run.dir=outputs/train/<name>"
        )
    resume = [o for o in overrides if o.startswith("trainer.resume=")]
    if resume and resume[-1].split("=", 1)[1] not in ("null", ""):
        others = [o for o in overrides if not o.startswith("trainer.resume=")]
        target = resume[-1].split("=", 1)[1].strip("'\"")
        run_dir = find_run_to_resume(COMMAND, others) if target == "latest" else Path(target)
        overrides = resume_overrides(run_dir, others)
    run_dirs = [o.split("=", 1)[1].strip("'\"") for o in overrides if o.startswith("hydra.run.dir=")]
    if run_dirs and rank == 0:  # rank 0 takes the lock for all ranks
        run_dir = Path(run_dirs[-1])
        refuse_if_locked(run_dir)
        if not resume and (run_dir / "last.pt").exists():
            raise _occupied(run_dir)
    return overrides


def _occupied(run_dir: Path) -> ConfigError:
    return ConfigError(
        f"{run_dir} already holds a run (its last.pt); continue it with "
        f"trainer.resume={shlex.quote(str(run_dir))}, or train into another hydra.run.dir"
    )


COMMAND = HydraCommand("train", "train", check=check, run=run, prepare=prepare)
