"""The training loop: `fit` trains epoch by epoch, `evaluate` measures a split. One function each."""

import math
import signal
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.augment import Augment
from cnnlab.data.batches import Preprocess, batches, epoch_order
from cnnlab.data.sources import AnySplit, Dataset
from cnnlab.errors import CnnlabError
from cnnlab.training.anomaly import Anomaly, watch_for_anomalies
from cnnlab.training.checkpoint import Checkpointer
from cnnlab.training.device import autocast
from cnnlab.training.distributed import SINGLE_PROCESS, Distributed
from cnnlab.training.logging import RunLogger

# The learning-health check's tolerance: a training loss above (1 − this) × ln(C) is "not learning"
# ("still at" chance up to (1 + this) × ln(C), "above" it past that).
STUCK_MARGIN = 0.1
# A model whose training accuracy is more than this share of the way from chance (1/C) to 1 is learning.
STUCK_ACCURACY = 0.25
# The check waits for this many steps: a small dataset's first epoch (a 240-image folder at batch 64
# takes 4 steps) is all warm-up, and a loss still at chance there says nothing about the learning rate.
# Past the first epoch it is judged at the end of the epoch this step falls in.
HEALTH_MIN_STEPS = 20
# The judged loss is the mean over the last quarter of the epoch's steps so far, and over this many images
# at least (the whole epoch's, if it has fewer): a few small batches' losses swing far above chance.
HEALTH_MIN_IMAGES = 256


class Diverged(CnnlabError):
    """The loss became non-finite; the last good checkpoints are left untouched."""

    exit_code = 3


class Stuck(CnnlabError):
    """trainer.stop_if_stuck: the training loss stayed at chance level; `last.pt` holds the state."""

    exit_code = 4


class Interrupted(CnnlabError):
    """SIGINT or SIGTERM arrived; `last.pt` holds the state after the last finished step."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


@dataclass
class RunState:
    """Where a run stands; saved in every checkpoint so a resumed run continues exactly."""

    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # batches finished within it
    step: int = 0  # optimizer steps since the run began
    # The epoch in progress: per-batch summed losses (summed in one order at the epoch's end, so
    # interrupted and uninterrupted runs give bit-identical metrics), correct count, seen, seconds.
    epoch_losses: list[float] = field(default_factory=list)
    epoch_correct: int = 0
    epoch_seen: int = 0
    epoch_seconds: float = 0.0
    epoch_grad_norms: list[float] = field(default_factory=list)  # per step, like epoch_losses
    train_images: int = 0  # all finished epochs, for images/s
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # since the run began, across resumes
    best_val_acc: float = -1.0
    best_val_loss: float = math.inf  # breaks ties of accuracy (small validation splits have many)
    best_epoch: int = 0
    health_checked: bool = False  # the learning-health check has run
    warnings: list[dict[str, Any]] = field(default_factory=list)
    # Early stopping: the best val acc that counted as an improvement (by more than min_delta), the
    # epochs since it, and why the run stopped before its last epoch (None: it did not).
    early_stopping_best: float = -1.0
    epochs_without_improvement: int = 0
    stopped_early: str | None = None
    resumes: list[dict[str, Any]] = field(default_factory=list)  # config changes applied by resumes
    history: list[dict[str, float]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """A plain dict for the checkpoint."""
        return asdict(self)


@dataclass(frozen=True)
class LoopSettings:
    """What `fit` needs from the trainer config."""

    epochs: int
    batch_size: int
    eval_batch_size: int
    seed: int
    precision: str
    checkpoint_every_steps: int  # 0: only at the end of each epoch
    distributed: Distributed  # under torchrun: this rank's place; batch_size stays the global batch
    num_classes: int  # chance-level loss is ln(num_classes)
    clip_grad_norm: float | None  # None: gradients are neither clipped nor measured
    early_stopping_patience: int  # 0: never stop early
    early_stopping_min_delta: float
    early_stopping_target: float | None  # stop once val acc reaches it; None: never
    health_check: float  # share of the first epoch (HEALTH_MIN_STEPS at least) to judge; 0: off
    stop_if_stuck: bool  # the health check stops the run instead of warning
    detect_anomaly: bool  # name the module whose forward or backward first goes non-finite (slow)
    limit_batches: int | float | None  # per epoch and evaluation: N batches, a share, or (None) all


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so no step is cut in half; with
    `defer=False` (setting up, where there is no step to finish) they raise Interrupted at once."""

    def __init__(self, enabled: bool, defer: bool = True) -> None:
        self.enabled = enabled
        self.defer = defer
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        # Under torchrun the ranks would stop at different steps and deadlock: keep torchrun's handling.
        for signum in (signal.SIGINT, signal.SIGTERM) if self.enabled else ():
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum
        if not self.defer:
            raise Interrupted(signum)

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    split: AnySplit,
    preprocess: Preprocess,
    batch_size: int,
    precision: str,
    distributed: Distributed = SINGLE_PROCESS,
    limit_batches: int | float | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of `model` on `split` (each rank takes its shard), or on its
    first batches under `limit_batches` (N batches or a share of them)."""
    model.eval()
    distributed.sync_buffers(model)
    # The same computation as a training step's, measuring the plain loss (no label smoothing).
    batch_loss = BatchLoss(model, preprocess, precision, label_smoothing=0.0)
    sums = torch.zeros(2, device=split.device)  # summed loss, correct
    count = min(len(split), limited(-(-len(split) // batch_size), limit_batches) * batch_size)
    order = None if count == len(split) and not distributed.enabled else torch.arange(count)
    if distributed.enabled:
        order = distributed.shard(order, pad=False)
    for images, labels in batches(split, batch_size, order):
        loss, hits = batch_loss(images, labels)
        sums[0] += loss * len(labels)
        sums[1] += hits
    loss_sum, correct = distributed.sum(sums).tolist()
    return loss_sum / count, correct / count


def limited(batches: int, limit: int | float | None) -> int:
    """How many of `batches` an epoch or evaluation takes under trainer.limit_batches: an int is a count
    of batches, a float a share of them (at least one), None all."""
    if limit is None:
        return batches
    if isinstance(limit, float):
        return max(1, math.ceil(limit * batches))
    return min(batches, limit)


def steps_per_epoch(
    num_samples: int, batch_size: int, ranks: Distributed, limit_batches: int | float | None = None
) -> int:
    """Optimizer steps in one epoch: each rank takes ceil(n / world) samples in batches of batch / world
    (the first of them only, under `limit_batches`)."""
    per_rank = -(-num_samples // ranks.world_size)
    return limited(-(-per_rank // (batch_size // ranks.world_size)), limit_batches)


class BatchLoss(nn.Module):
    """uint8 batch → preprocess → augment (training, when drawn) → model → mean cross-entropy loss and
    correct count: the forward half of a training step, and the whole of an evaluation step.

    One module, so `torch.compile` puts preprocessing, augmentation and the loss into the model's graph
    (measured on an H100 with reduce-overhead: LeNet 1.5×, ResNet-18@96 1.05× the model compiled alone).
    """

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocess,
        precision: str,
        label_smoothing: float,
        augment: Augment | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.precision = precision
        self.label_smoothing = label_smoothing  # training only: evaluation measures the plain loss
        self.augment = augment

    def forward(
        self, images: torch.Tensor, labels: torch.Tensor, draws: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy loss and the number of correct predictions of a uint8 batch, augmented
        with `draws` (Augment.draw) if given; mixed samples count as correct for their own label."""
        # Preprocessing and augmentation in float32, outside autocast: under bf16 the crops' sampling
        # grid would be rounded to neighbouring pixels.
        inputs, targets = self.preprocess(images), labels
        if draws is not None:
            inputs, targets = self.augment(inputs, labels, draws)
        with autocast(images.device, self.precision):
            logits = self.model(inputs)
            loss = F.cross_entropy(logits.float(), targets, label_smoothing=self.label_smoothing)
        return loss, (logits.argmax(dim=1) == labels).sum()


@dataclass
class Training:
    """Everything one training run steps (built by cnnlab.training.build)."""

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

    def states(self) -> dict[str, Any]:
        """The model's, optimizer's, schedule's and scaler's state dicts, as a checkpoint holds them."""
        parts = ("model", "optimizer", "scheduler", "scaler")
        return {name: getattr(self, name).state_dict() for name in parts}


def train_step(
    forward: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    clip_grad_norm: float | None,
    draws: dict[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One optimizer step on a uint8 batch through `forward` (a BatchLoss, perhaps compiled), augmented
    with `draws` if given, its gradients clipped to a global norm of `clip_grad_norm` if set; returns its
    summed loss, correct count and, when clipping, the gradient norm before clipping, on the device."""
    loss, hits = forward(images, labels, draws)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    grad_norm = None
    if clip_grad_norm is not None:  # no norm without clipping: the step stays as lean as the book's
        scaler.unscale_(optimizer)  # float16: the norm and the clipping see the true gradients
        parameters = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in parameters])
        # A norm past float32's range (huge but finite gradients, e.g. BatchNorm over 1×1 maps) would
        # zero the gradients, or make them NaN: that step goes unclipped, as it would without clipping.
        in_range = torch.nan_to_num(grad_norm, nan=0.0, posinf=0.0)
        torch.nn.utils.clip_grads_with_norm_(parameters, clip_grad_norm, in_range)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.detach() * len(labels), hits, grad_norm


def epoch_draws(
    augment: Augment | None, count: int, seed: int, epoch: int, rank: int, device: torch.device
) -> dict[str, torch.Tensor] | None:
    """The augmentation's random draws for the `count` samples a rank trains on in an epoch, in training
    order, on `device`: a pure function of (seed, epoch, rank); None without augmentation."""
    if augment is None:
        return None
    draws = augment.draw(count, seed, epoch, rank)
    return {key: value.to(device, non_blocking=True) for key, value in draws.items()}


def batch_draws(
    draws: dict[str, torch.Tensor] | None, batch: int, batch_size: int, count: int
) -> dict[str, torch.Tensor] | None:
    """The rows of an epoch's draws (`epoch_draws`) that its batch number `batch` of `count` samples takes."""
    if draws is None:
        return None
    start = batch * batch_size
    return {key: value[start : start + count] for key, value in draws.items()}


def fit(
    training: Training,
    data: Dataset,
    state: RunState,
    logger: RunLogger,
    checkpointer: Checkpointer,
    after_epoch: Callable[[RunState], None] = lambda state: None,
    after_step: Callable[[], None] = lambda: None,
) -> RunState:
    """Train from `state` to the settings' epochs (or an early stop), validating after each epoch;
    the checkpointer writes last.pt (and best.pt when the validation accuracy improved).

    `training.forward` (a BatchLoss, perhaps compiled or around DDP) takes the steps, its augmentation
    drawn once per epoch from (seed, epoch, rank), so a resumed run draws what an uninterrupted
    one would; `training.model` is the plain module inside it, which `evaluate` runs. `after_epoch(state)`
    runs once each epoch is logged (e.g. to draw TensorBoard images), `after_step()` after each training
    step (e.g. a profiler's).
    """
    settings, augment, optimizer = training.settings, training.augment, training.optimizer
    wall_start = time.perf_counter() - state.wall_seconds

    def save(best: bool) -> None:
        state.wall_seconds = time.perf_counter() - wall_start
        checkpointer.save(training.states(), state.as_dict(), best)

    train = data.train
    device = train.device
    ranks = settings.distributed
    batch_size = settings.batch_size // ranks.world_size
    steps = steps_per_epoch(len(train), settings.batch_size, ranks, settings.limit_batches)
    # The step after which the health check runs (a run with fewer steps is not judged).
    health_step = (
        max(math.ceil(settings.health_check * steps), HEALTH_MIN_STEPS) if settings.health_check else 0
    )
    if health_step > steps:  # past the first epoch: at the end of the epoch it falls in
        health_step = math.ceil(health_step / steps) * steps
    # Under float16 the gradient scaler expects overflowing gradients (it skips those steps): forwards only.
    watching = (
        watch_for_anomalies(training.model, backward=settings.precision != "16")
        if settings.detect_anomaly
        else nullcontext()
    )
    with StopSignals(enabled=not ranks.enabled) as stop, watching:
        while state.epoch < settings.epochs and state.stopped_early is None:
            epoch = state.epoch
            training.model.train()
            shard = ranks.shard(epoch_order(len(train), settings.seed, epoch), pad=True)
            # Drawn for the whole shard, so that limit_batches takes the same draws' first rows.
            drawn = epoch_draws(augment, len(shard), settings.seed, epoch, ranks.rank, device)
            order = shard[: steps * batch_size]
            # Per-step losses and gradient norms stay on the device: no synchronization until the
            # epoch's end.
            losses = torch.zeros(steps, device=device)
            grad_norms = torch.zeros(steps, device=device) if settings.clip_grad_norm is not None else None
            correct = torch.zeros((), device=device, dtype=torch.long)
            lrs: list[float] = [0.0] * state.batch  # batches already done when resuming mid-epoch
            running = partial(_running, state, losses, correct)  # read by a terminal's bar only
            logger.start_epoch(epoch + 1, len(order), done=state.epoch_seen, running=running)
            tic = time.perf_counter()
            for images, labels in batches(train, batch_size, order, start=state.batch):
                draws = batch_draws(drawn, state.batch, batch_size, len(labels))
                lrs.append(optimizer.param_groups[0]["lr"])  # the rate this step uses, for errors
                try:
                    loss_sum, hits, grad_norm = train_step(
                        training.forward,
                        images,
                        labels,
                        optimizer,
                        training.scheduler,
                        training.scaler,
                        settings.clip_grad_norm,
                        draws,
                    )
                except Anomaly as found:
                    raise Diverged(
                        f"{found.what} became non-finite at epoch {epoch + 1}, step {state.step + 1} "
                        f"(lr {lrs[-1]:g}) in the {found.phase} of {found.module}, from {found.source}; "
                        f"{_kept(state)}: {_REMEDIES}"
                    ) from None
                losses[state.batch] = loss_sum
                if grad_norms is not None:
                    grad_norms[state.batch] = grad_norm
                correct += hits
                after_step()
                state.batch += 1
                state.step += 1
                state.epoch_seen += len(labels)
                logger.advance(len(labels))
                every = settings.checkpoint_every_steps
                check_health = not state.health_checked and state.step == health_step
                checkpoint = every and state.step % every == 0
                if stop.signum is not None or check_health or checkpoint:
                    _settle(state, losses, grad_norms, correct, tic, lrs, ranks)
                    correct.zero_()
                    tic = time.perf_counter()
                    stuck = check_health and _check_health(state, settings, logger) and settings.stop_if_stuck
                    if stop.signum is not None or stuck or checkpoint:
                        save(False)
                    if stop.signum is not None:
                        logger.close()
                        raise Interrupted(stop.signum)
                    if stuck:
                        logger.close()
                        raise Stuck(f"{state.warnings[-1]['message']} (stopped: trainer.stop_if_stuck=true)")
            _settle(state, losses, grad_norms, correct, tic, lrs, ranks)
            logger.evaluating("validating")
            val_loss, val_acc = evaluate(
                training.model,
                data.val,
                training.preprocess,
                settings.eval_batch_size,
                settings.precision,
                ranks,
                settings.limit_batches,
            )
            if not math.isfinite(val_loss):
                raise Diverged(
                    f"the validation loss became non-finite ({val_loss}) after epoch {epoch + 1}; "
                    f"{_kept(state)}: {_REMEDIES}"
                )
            seen = state.epoch_seen * ranks.world_size  # all ranks (padding included)
            metrics = {
                "epoch": epoch + 1,
                "train/loss": sum(state.epoch_losses) / seen,
                "train/acc": state.epoch_correct / seen,
                "val/loss": val_loss,
                "val/acc": val_acc,
                "lr": optimizer.param_groups[0]["lr"],
                "throughput/images_per_s": seen / max(state.epoch_seconds, 1e-9),
            }
            if state.epoch_grad_norms:  # clipping: the norms before clipping
                metrics["grad_norm/mean"] = sum(state.epoch_grad_norms) / len(state.epoch_grad_norms)
                metrics["grad_norm/max"] = max(state.epoch_grad_norms)
            state.train_images += seen
            state.train_seconds += state.epoch_seconds
            state.history.append(metrics)
            state.epoch, state.batch = epoch + 1, 0
            state.epoch_losses, state.epoch_grad_norms, state.epoch_correct = [], [], 0
            state.epoch_seen, state.epoch_seconds = 0, 0.0
            improved = (val_acc, -val_loss) > (state.best_val_acc, -state.best_val_loss)
            if improved:
                state.best_val_acc, state.best_val_loss, state.best_epoch = val_acc, val_loss, epoch + 1
            _early_stopping(state, settings, val_acc)
            save(improved)
            logger.scalars({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch + 1)
            logger.end_epoch(epoch + 1, metrics)
            after_epoch(state)
            if state.stopped_early:
                logger.info(f"stopping early: {state.stopped_early}")
    return state


def _running(state: RunState, losses: torch.Tensor, correct: torch.Tensor) -> tuple[float, float]:
    """This rank's mean training loss and accuracy so far this epoch (for the progress bar)."""
    seen = max(state.epoch_seen, 1)
    folded = len(state.epoch_losses)  # as _settle: steps before `folded` are already in the state
    loss = sum(state.epoch_losses) + float(losses[folded : state.batch].sum())
    return loss / seen, (state.epoch_correct + int(correct)) / seen


def _kept(state: RunState) -> str:
    """What a diverged run leaves to go back to."""
    if state.best_epoch:
        return "last.pt and best.pt keep the last good state"
    return "there is no best.pt yet to go back to"


# What the user can change when the loss becomes non-finite: every name here is a config key.
_REMEDIES = (
    "lower optimizer.lr, lengthen scheduler.warmup_epochs or clip harder (trainer.clip_grad_norm, e.g. 1.0), "
    "and start again"
)
# Without the anomaly hooks the loss tells that something went non-finite, not where.
_FIND_IT = " (trainer.detect_anomaly=true names the layer that first goes non-finite)"


def _check_health(state: RunState, settings: LoopSettings, logger: RunLogger) -> bool:
    """Whether the recent training loss is still at chance level, ln(num_classes) — the model is not
    learning (lr far too high or too low, dead units, an init that saturates); if so, warn and record it."""
    state.health_checked = True
    done = len(state.epoch_losses)
    # The last quarter of the steps so far (past the first steps' transient), HEALTH_MIN_IMAGES at least.
    recent = min(done, max(1, done // 4, math.ceil(HEALTH_MIN_IMAGES / settings.batch_size)))
    # Every batch but an epoch's last is full, so the recent steps saw all images but the earlier ones'.
    images = state.epoch_seen * settings.distributed.world_size - (done - recent) * settings.batch_size
    loss = sum(state.epoch_losses[-recent:]) / images
    chance = math.log(settings.num_classes)
    # A model that classifies well above chance is learning, whatever its loss: with few classes, label
    # smoothing and augmentation a learning model's loss stays near ln C for a while.
    accuracy = state.epoch_correct / (state.epoch_seen * settings.distributed.world_size)
    guessing = 1 / settings.num_classes
    if loss < chance * (1 - STUCK_MARGIN) or accuracy > guessing + STUCK_ACCURACY * (1 - guessing):
        return False
    message = (
        f"after {state.step} steps (epoch {state.epoch + 1}) the training loss is {loss:.3f}, "
        f"{'still at' if loss < chance * (1 + STUCK_MARGIN) else 'above'} chance level "
        f"(ln {settings.num_classes} = {chance:.3f}), and the training accuracy {accuracy:.2f} "
        f"(chance: {guessing:.2f}): the model is not learning; try another "
        "optimizer.lr (lower if the loss rose, higher if it barely moved), a longer "
        "scheduler.warmup_epochs, or another model.init"
    )
    state.warnings.append(
        {"kind": "stuck", "epoch": state.epoch + 1, "step": state.step, "loss": loss, "message": message}
    )
    logger.warn(message, step=state.step)
    return True


def _early_stopping(state: RunState, settings: LoopSettings, val_acc: float) -> None:
    """Count the epochs without an improvement of more than min_delta; set stopped_early at patience, or
    once val acc reaches the target."""
    target = settings.early_stopping_target
    if target is not None and val_acc >= target and state.epoch < settings.epochs:
        state.stopped_early = f"val acc {val_acc:.4f} reached trainer.early_stopping.target={target:g}"
        return
    if not settings.early_stopping_patience:
        return
    if val_acc > state.early_stopping_best + settings.early_stopping_min_delta:
        state.early_stopping_best, state.epochs_without_improvement = val_acc, 0
        return
    state.epochs_without_improvement += 1
    if state.epochs_without_improvement >= settings.early_stopping_patience and state.epoch < settings.epochs:
        state.stopped_early = (
            f"val acc has not improved by more than {settings.early_stopping_min_delta:g} for "
            f"{state.epochs_without_improvement} epochs (best {state.best_val_acc:.4f} at epoch "
            f"{state.best_epoch}; trainer.early_stopping.patience={settings.early_stopping_patience})"
        )


def _settle(
    state: RunState,
    losses: torch.Tensor,
    grad_norms: torch.Tensor | None,
    correct: torch.Tensor,
    tic: float,
    lrs: list[float],
    ranks: Distributed,
) -> None:
    """Fold the device-side sums into `state` (one synchronization) and stop on a non-finite loss."""
    done = len(state.epoch_losses)
    step_losses = ranks.sum(losses[done : state.batch]).tolist()
    ranks.sum(correct)
    bad = [i for i, value in enumerate(step_losses) if not math.isfinite(value)]
    if bad:
        step = state.step - state.batch + done + bad[0] + 1
        raise Diverged(
            f"loss became non-finite at epoch {state.epoch + 1}, step {step} "
            f"(lr {lrs[done + bad[0]]:g}); {_kept(state)}: {_REMEDIES}{_FIND_IT}"
        )
    state.epoch_losses.extend(step_losses)
    if grad_norms is not None:  # equal on every rank: DDP averages the gradients
        state.epoch_grad_norms.extend(grad_norms[done : state.batch].tolist())
    state.epoch_correct += int(correct.item())
    state.epoch_seconds += time.perf_counter() - tic
