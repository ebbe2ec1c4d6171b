"""`cnnlab train`: config → model and data → training loop → TensorBoard, checkpoints, metrics.json."""

import os
import shlex
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from functools import partial
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cnnlab.app import checks
from cnnlab.app.plans import data_spec, training_spec
from cnnlab.app.training_checks import check_training
from cnnlab.commands import COMMANDS
from cnnlab.console import console, print_summary, write_json
from cnnlab.data.batches import epoch_order
from cnnlab.data.sources import AnySplit, Dataset, FileSplit
from cnnlab.data.splits import fixed_sample
from cnnlab.errors import CheckpointError, CnnlabError, ConfigError, first_line
from cnnlab.files import atomic_write
from cnnlab.runs.hparams import hparam_metrics, job_hparams
from cnnlab.runs.jobs import update_resumed_job
from cnnlab.runs.layout import RunDir
from cnnlab.runs.lock import RunLock, refuse_if_locked
from cnnlab.runs.report import book_result
from cnnlab.runs.resume import (
    check_work_left,
    find_run_to_resume,
    reconcile,
    resume_overrides,
    sweep_resume_overrides,
)
from cnnlab.training import distributed
from cnnlab.training.build import build_training, load_data
from cnnlab.training.checkpoint import Checkpointer, load_checkpoint, set_rng_state
from cnnlab.training.device import resolve_device, set_up_process
from cnnlab.training.logging import QuietLogger, RunLogger, decoding_bar
from cnnlab.training.loop import (
    Interrupted,
    LoopSettings,
    RunState,
    StopSignals,
    Stuck,
    Training,
    batch_draws,
    evaluate,
    fit,
    steps_per_epoch,
)
from cnnlab.training.profiling import step_profiler, steps_needed
from cnnlab.training.visuals import augmented_grid, write_visuals


def check(cfg: DictConfig) -> DictConfig:
    """Validate the whole config before any work; the plan is the checked config itself."""
    checks.integer(cfg, "sweep.retries", 0, example=2)
    checks.boolean(cfg, "sweep.retry_diverged")
    checks.integer(cfg, "sweep.jobs_per_gpu", 1, example=2)
    return check_training(cfg)


def continue_job(cfg: DictConfig) -> DictConfig:
    """A sweep job run again (a resumed sweep, a retry): its run continues from its last.pt, exactly as
    a resume does; without one it starts again."""
    last = RunDir(Path(HydraConfig.get().runtime.output_dir)).last
    if last.is_file():
        cfg.trainer.resume = str(last)
    return cfg


def run(cfg: DictConfig) -> float:
    """Train one run; return the best validation accuracy (the objective of sweepers like Optuna)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    files = RunDir(run_dir)
    payload, changes = None, {}
    if cfg.trainer.resume is not None:
        payload = load_checkpoint(Path(cfg.trainer.resume))
        done = int(payload["state"].get("epoch", 0))
        typed = list(HydraConfig.get().overrides.task)
        cfg, changes = reconcile(cfg, payload["config"], typed, done)
        if any(o.startswith("trainer.resume=") for o in typed):  # a sweep job's retry may have no epoch left
            check_work_left(run_dir, done, cfg.trainer.epochs, cfg.scheduler.name)
        check_training(cfg)  # the config the resume runs with, allowed changes applied
    device = resolve_device(cfg.trainer.device, "trainer.device")
    ranks = distributed.from_environment(device.type)
    with _owning(run_dir, ranks, resuming=payload is not None):
        record = _Record(run_dir, cfg.trainer.epochs, ranks, resumed=payload is not None)
        record.book = checks.value(cfg, "book")
        # No step to finish while setting up or testing: Ctrl-C or SIGTERM stop at once, as an orderly
        # stop; `fit` defers them to the end of the step in progress.
        with StopSignals(enabled=not ranks.enabled, defer=False), record:
            device = set_up_process(device, ranks, cfg.trainer.threads, cfg.trainer.seed)
            data = load_data(data_spec(cfg), device, decoding_bar)
            if cfg.trainer.overfit_batches:
                data = _overfit_sample(data, cfg.trainer.overfit_batches * cfg.trainer.batch_size, cfg)
            if cfg.dataset.loader.get("stream") == "auto":  # the run records what auto decided
                cfg.dataset.loader.stream = isinstance(data.train, FileSplit)
            training = build_training(training_spec(cfg), data, ranks)
            if payload is not None:
                record.state = _restore(training, payload, Path(cfg.trainer.resume), changes)
            config = OmegaConf.to_container(cfg, resolve=True)
            if ranks.is_main:  # rank 0 alone writes the records, logs and prints
                record.logger = _open_run(run_dir, config, cfg, training, data, record.state, changes)
            record.start(str(device))
            checkpointer = Checkpointer(
                RunDir(run_dir).last, RunDir(run_dir).best, config, write=ranks.is_main
            )
            draw = partial(_draw_visuals, record.logger, training, data, cfg.trainer.visual_every, ranks)
            profiler = step_profiler(run_dir, device, record.logger.info) if cfg.trainer.profile else None
            first_step = record.state.step
            with profiler or nullcontext():
                after_step = profiler.step if profiler is not None else lambda: None
                record.state = fit(
                    training, data, record.state, record.logger, checkpointer, draw, after_step
                )
            if profiler is not None and record.state.step - first_step < steps_needed():
                record.logger.warn(
                    f"trainer.profile: the run took {record.state.step - first_step} steps, fewer than the "
                    f"{steps_needed()} a profile needs: no trace was written",
                    step=record.state.step,
                )
            if cfg.trainer.overfit_batches:
                record.overfit = _judge_overfit(record.state, len(data.train), record.logger)
            if data.test is not None:
                record.test = _test_best(training, files.best, data.test, record.state, record.logger)
            results = hparam_metrics(record.state.best_val_acc, record.state.history[-1], record.test)
            record.logger.hparams(job_hparams(cfg), results, record.state.epoch)
            record.status = "finished"
    if ranks.is_main:
        _print_result(run_dir, record.state, training.settings, record.test, record.book, record.overfit)
    return record.state.best_val_acc


def _overfit_sample(data: Dataset, count: int, cfg: DictConfig) -> Dataset:
    """trainer.overfit_batches: train and validate on the same fixed sample of `count` training images."""
    sample = data.train.subset(fixed_sample(len(data.train), count, cfg.dataset.split_seed))
    return replace(data, train=sample, val=sample)


def _judge_overfit(state: RunState, images: int, logger: RunLogger | QuietLogger) -> str:
    """trainer.overfit_batches' verdict: whether the model fitted its sample (accuracy 1.0 on it, in eval
    mode), said as a warning when it did not; returns it for the end-of-run table."""
    fitted = [metrics["epoch"] for metrics in state.history if metrics["val/acc"] >= 1.0]
    if fitted:
        verdict = f"fits its {images:,} training images (accuracy 1.0 from epoch {fitted[0]})"
        logger.info(f"overfit: the model {verdict}")
        return verdict
    message = (
        f"overfit: the model cannot fit its {images:,} training images: its best accuracy on them is "
        f"{state.best_val_acc:.4f} after {state.epoch} epochs, and a model that cannot learn a handful "
        "of batches by heart has a bug or too little capacity: check the labels and the preprocessing, "
        "raise trainer.epochs or optimizer.lr, or lower optimizer.weight_decay and loss.label_smoothing"
    )
    warning = {"kind": "cannot_overfit", "epoch": state.epoch, "step": state.step, "message": message}
    state.warnings.append(warning)
    logger.warn(message, step=state.step)
    return f"cannot fit its {images:,} training images (best accuracy {state.best_val_acc:.4f})"


@contextmanager
def _owning(run_dir: Path, ranks: distributed.Distributed, resuming: bool):
    """Hold the run directory's lock (rank 0, for all ranks) while training; a new run never trains
    over an earlier run's last.pt."""
    lock = RunLock(run_dir)
    if ranks.is_main:
        stale = lock.acquire()
        if not resuming and RunDir(run_dir).last.exists():
            lock.release()
            raise _occupied(run_dir)
        if stale:
            console.print(stale)
    try:
        yield
    finally:
        lock.release()


def _open_run(
    run_dir: Path,
    config: dict,
    cfg: DictConfig,
    training: Training,
    data: Dataset,
    state: RunState,
    changes: dict[str, list],
) -> RunLogger:
    """Write the run's config.yaml, open its TensorBoard log, say what trains on what (and what a
    resume changed) and show the first augmented batch."""
    text = OmegaConf.to_yaml(config)
    atomic_write(RunDir(run_dir).config, lambda file: file.write(text.encode()))
    resumed = cfg.trainer.resume is not None
    # A resume drops the events logged after its checkpoint; a job started again drops its earlier try's.
    again = not resumed and any(run_dir.glob("events.out.tfevents.*"))
    purge_step = state.epoch + 1 if resumed else 0 if again else None
    logger = RunLogger(run_dir, training.settings.epochs, purge_step=purge_step)
    _announce(cfg, training, data, state, resumed, changes, logger)
    logger.text("config", f"```\n{text}```")
    if training.augment is not None and state.step == 0 and cfg.trainer.visual_every is not None:
        _log_augmented(logger, training, data)
    return logger


class _Record:
    """A run's outcome — status, error, test figures, the loop's state — and, when the run ends however
    it ends, its metrics.json (a resume that failed before it began leaves the records as they were)."""

    def __init__(self, run_dir: Path, epochs: int, ranks: distributed.Distributed, resumed: bool) -> None:
        self.run_dir, self.epochs, self.ranks, self.resumed = run_dir, epochs, ranks, resumed
        self.status, self.error, self.test, self.state = "failed", None, None, RunState()
        self.book: dict | None = None  # the book's result for a book run (config key `book`)
        self.overfit: str | None = None  # trainer.overfit_batches' verdict
        self.logger: RunLogger | QuietLogger = QuietLogger()
        self.started = False  # set up, about to fit
        self.device = ""  # where it trains
        self.wall_start = time.perf_counter()

    def start(self, device: str) -> None:
        """Training begins on `device` (from the restored state's wall time, on a resume)."""
        self.started, self.device = True, device
        self.wall_start = time.perf_counter() - self.state.wall_seconds

    def __enter__(self) -> "_Record":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if isinstance(error, Interrupted):
            self.status = "interrupted"
            command = f"cnnlab train trainer.resume={shlex.quote(str(self.run_dir))}"
            if self.started and self.state.epoch >= self.epochs:  # stopped while testing best.pt
                test = f"cnnlab evaluate run={shlex.quote(str(self.run_dir))}"
                kept = f"training had ended (last.pt and best.pt are saved): test best.pt with: {test}"
            elif self.started:
                where = f"epoch {self.state.epoch + 1}, step {self.state.step}"
                kept = f"last.pt saved at {where}. Resume with: {command}"
            elif self.resumed:
                kept = f"stopped while setting up the resume: the run is as it was; resume it with: {command}"
            else:
                kept = "stopped while setting up, before any step: nothing to resume; run the command again"
            error.args = (f"interrupted by {error}; {kept}",)
        elif isinstance(error, Stuck):
            self.status = "stuck"
        if error is not None:
            self.error = str(error) if isinstance(error, CnnlabError) else f"{type(error).__name__}: {error}"
        self.logger.close()
        if self.ranks.is_main and (self.started or not self.resumed):
            wall = time.perf_counter() - self.wall_start
            try:
                _write_metrics(
                    self.run_dir,
                    self.state,
                    self.epochs,
                    self.status,
                    self.error,
                    self.test,
                    self.book,
                    self.device,
                    wall,
                )
            except OSError as failure:  # a full or read-only disk: the run's own error is the one to see
                console.print(f"metrics.json not written: {failure.strerror or failure}")
            if self.resumed:  # a sweep job's run resumed on its own: its job record takes the new outcome
                update_resumed_job(self.run_dir, self.status, self.error)
        distributed.shutdown()


def _restore(training: Training, payload: dict, checkpoint: Path, changes: dict[str, list]) -> RunState:
    """Load a checkpoint's model, optimizer, schedule, scaler and RNG states into `training`: the run
    continues exactly where `checkpoint` was written. Allowed config `changes` are recorded."""
    try:
        training.model.load_state_dict(payload["model"])
        training.optimizer.load_state_dict(payload["optimizer"])
        training.scheduler.load_state_dict(payload["scheduler"])
        training.scaler.load_state_dict(payload["scaler"])
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


def _draw_visuals(
    logger: RunLogger,
    training: Training,
    data: Dataset,
    every: int | None,
    ranks: distributed.Distributed,
    state: RunState,
) -> None:
    """TensorBoard images every `every` epochs and always after the last one (with the model graph);
    None: none."""
    settings = training.settings
    final = state.epoch == settings.epochs
    if ranks.is_main and every is not None and (final or (every and state.epoch % every == 0)):
        write_visuals(
            logger.writer,
            training.model,
            data,
            training.preprocess,
            state.epoch,
            settings.eval_batch_size,
            settings.precision,
            graph=final,
            # Clipping unscales the gradients in place; otherwise float16's still carry the loss scale.
            gradient_scale=1.0 if settings.clip_grad_norm is not None else training.scaler.get_scale(),
        )


def _log_augmented(logger: RunLogger, training: Training, data: Dataset) -> None:
    """TensorBoard's inputs/augmented: this rank's first training batch as the model will be fed it."""
    settings = training.settings
    ranks = settings.distributed
    order = ranks.shard(epoch_order(len(data.train), settings.seed, 0), pad=True)
    first = order[: settings.batch_size // ranks.world_size]
    drawn = training.augment.draw(len(order), settings.seed, 0, ranks.rank)  # the epoch's, as `fit` draws
    draws = batch_draws(drawn, 0, len(first), len(first))
    labels = data.train.labels[first.to(data.train.device)]
    grid = augmented_grid(
        data.train.take(first), labels, training.preprocess, training.augment, draws, data.classes
    )
    logger.writer.add_image("inputs/augmented", grid, 0)


def _announce(
    cfg: DictConfig,
    training: Training,
    data: Dataset,
    state: RunState,
    resumed: bool,
    changes: dict[str, list],
    logger: RunLogger,
) -> None:
    """The run's first lines: what trains on what, where; the protocol; what a resume changed."""
    size = training.input_size
    parameters = sum(p.numel() for p in training.model.parameters())
    action = f"resuming at epoch {state.epoch + 1}" if resumed else "training"
    if resumed and state.epoch >= training.settings.epochs:  # a sweep job that failed after training
        action = f"resuming after its last epoch ({state.epoch})"
    logger.info(
        f"{action} {cfg.model.name} ({parameters:,} parameters) on {cfg.dataset.name} "
        f"({_describe_splits(data)}, {size[0]}×{size[1]}) "
        f"on {_describe(data.train.device)}, precision {training.settings.precision}"
        + (f", compile {training.compile}" if training.compile else "")
    )
    for note in data.notes:
        logger.info(note)
    batch_size, images = training.settings.batch_size, len(data.train)
    if cfg.trainer.overfit_batches:
        logger.info(
            f"trainer.overfit_batches={cfg.trainer.overfit_batches}: training and validating on the same "
            f"{images:,} training images, to see whether the model can fit them (val acc: accuracy on them)"
        )
    if training.settings.detect_anomaly:
        logger.info(
            "trainer.detect_anomaly=true: every module's output (and, but for precision 16, its gradients) "
            "is checked for non-finite values at each step: slower, and not compiled"
        )
    limit = training.settings.limit_batches
    if limit is not None:
        steps = steps_per_epoch(images, batch_size, training.settings.distributed, limit)
        logger.info(
            f"trainer.limit_batches={limit}: each epoch takes {steps} batches, validation and test their "
            "first batches only: the figures are not the dataset's"
        )
    if batch_size > images:
        logger.warn(
            f"trainer.batch_size={batch_size} is more than the {images:,} training images: every epoch is "
            f"one step on a batch of {images:,}; a smaller trainer.batch_size gives more steps per epoch",
            state.epoch,
        )
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
    training: Training, best: Path, test: AnySplit, state: RunState, logger: RunLogger | QuietLogger
) -> dict[str, float | int]:
    """The loss and accuracy on `test` of best.pt's weights (loaded into the run's model), logged at the
    last epoch: the run's one look at the test split, after every choice was made on validation."""
    settings = training.settings
    settings.distributed.barrier()  # rank 0 has written best.pt
    training.model.load_state_dict(load_checkpoint(best)["model"])
    loss, accuracy = evaluate(
        training.model,
        test,
        training.preprocess,
        settings.eval_batch_size,
        settings.precision,
        settings.distributed,
        settings.limit_batches,
    )
    logger.scalars({"test/loss": loss, "test/acc": accuracy}, step=state.epoch)
    return {"test/loss": loss, "test/acc": accuracy, "epoch": state.best_epoch}


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
    book: dict | None,
    device: str,
    wall_seconds: float,
) -> None:
    trained = len(state.history)
    final = state.history[-1] if state.history else {}
    write_json(
        RunDir(run_dir).metrics,
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
            # a book run's published result: {"test_acc": figure or null (not reported), "section"}
            "book": book,
            "stopped_early": state.stopped_early,
            "warnings": [warning["message"] for warning in state.warnings],
            # each resume that changed the config: {"epoch", "step", "changes": {key: [before, after]}}
            "resumes": state.resumes,
            "wall_time_s": round(wall_seconds, 3),
            "images_per_s": state.train_images / state.train_seconds if state.train_seconds else 0.0,
            "device": device,
            # on CPU the arithmetic, hence every figure, depends on the thread count
            "threads": torch.get_num_threads(),
            "history": state.history,
        },
    )


def _print_result(
    run_dir: Path,
    state: RunState,
    settings: LoopSettings,
    test: dict[str, float | int] | None,
    book: dict | None,
    overfit: str | None,
) -> None:
    final = state.history[-1]
    rows = [
        ("final val acc", f"{final['val/acc']:.4f}"),
        ("best val acc", f"{state.best_val_acc:.4f} (epoch {state.best_epoch})"),
    ]
    if test is not None:
        rows.append(("test acc (best.pt)", f"{test['test/acc']:.4f} (loss {test['test/loss']:.4f})"))
    if book is not None:
        rows.append(("book test acc", book_result(book)))
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
    if overfit is not None:
        rows.append(("overfit", overfit))
    rows.append(("images/s (train)", f"{state.train_images / max(state.train_seconds, 1e-9):,.0f}"))
    print_summary(rows, title="cnnlab train: done")
    console.print(f"run directory: {run_dir}")
    console.print(f"view it:       tensorboard --logdir {shlex.quote(str(run_dir))}")


def prepare(overrides: list[str], multirun: bool) -> list[str]:
    """`trainer.resume=<run dir|checkpoint|latest>`: continue that run in its own directory; a run
    directory another process is training in is refused before anything is written to it.
    `sweep.resume=<sweep dir|latest>` (with -m): launch the sweep again into that directory."""
    overrides = _sweep_to_resume(overrides, multirun)
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
        run_dir = find_run_to_resume(COMMANDS["train"], others) if target == "latest" else Path(target)
        overrides = resume_overrides(run_dir, others)
    run_dirs = [o.split("=", 1)[1].strip("'\"") for o in overrides if o.startswith("hydra.run.dir=")]
    if run_dirs and rank == 0:  # rank 0 takes the lock for all ranks
        run_dir = Path(run_dirs[-1])
        refuse_if_locked(run_dir)
        if not resume and RunDir(run_dir).last.exists():
            raise _occupied(run_dir)
    return overrides


def _occupied(run_dir: Path) -> ConfigError:
    return ConfigError(
        f"{run_dir} already holds a run (its last.pt); continue it with "
        f"trainer.resume={shlex.quote(str(run_dir))}, or train into another hydra.run.dir"
    )


def _sweep_to_resume(overrides: list[str], multirun: bool) -> list[str]:
    """sweep.resume=<dir|latest> as the hydra.sweep.dir it names (with -m only)."""
    typed = [o.split("=", 1)[1].strip("'\"") for o in overrides if o.startswith("sweep.resume=")]
    if not typed or typed[-1] in ("null", ""):
        return overrides
    if not multirun:
        raise ConfigError(
            f"sweep.resume={typed[-1]} resumes a sweep: add -m and the sweep's own overrides "
            f"(cnnlab train -m <the sweep's overrides> sweep.resume={typed[-1]})"
        )
    return sweep_resume_overrides(typed[-1], [o for o in overrides if not o.startswith("sweep.resume=")])
