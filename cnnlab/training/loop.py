"""The training loop: `fit` trains epoch by epoch, `evaluate` measures a split. One function each."""

import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data.batches import Preprocess, batches, epoch_order
from cnnlab.data.sources import AnySplit, Dataset
from cnnlab.errors import CnnlabError
from cnnlab.training.device import autocast
from cnnlab.training.distributed import SINGLE_PROCESS, Distributed
from cnnlab.training.logging import RunLogger


class Diverged(CnnlabError):
    """The loss became non-finite; the last good checkpoints are left untouched."""

    exit_code = 3


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
    train_images: int = 0  # all finished epochs, for images/s
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # since the run began, across resumes
    best_val_acc: float = -1.0
    best_epoch: int = 0
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


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps, so no step is cut in half."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        # Under torchrun the ranks would stop at different steps and deadlock: keep torchrun's handling.
        for signum in (signal.SIGINT, signal.SIGTERM) if self.enabled else ():
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        self.signum = signum

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
) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of `model` on `split` (each rank takes its shard)."""
    model.eval()
    distributed.sync_buffers(model)
    batch_loss = BatchLoss(model, preprocess, precision)  # the same computation as a training step's
    sums = torch.zeros(2, device=split.device)  # summed loss, correct
    order = distributed.shard(torch.arange(len(split)), pad=False) if distributed.enabled else None
    for images, labels in batches(split, batch_size, order):
        loss, hits = batch_loss(images, labels)
        sums[0] += loss * len(labels)
        sums[1] += hits
    loss_sum, correct = distributed.sum(sums).tolist()
    return loss_sum / len(split), correct / len(split)


def steps_per_epoch(num_samples: int, batch_size: int, ranks: Distributed) -> int:
    """Optimizer steps in one epoch: each rank takes ceil(n / world) samples in batches of batch / world."""
    per_rank = -(-num_samples // ranks.world_size)
    return -(-per_rank // (batch_size // ranks.world_size))


class BatchLoss(nn.Module):
    """uint8 batch → preprocess → model → mean cross-entropy loss and correct count: the forward half of
    a training step, and the whole of an evaluation step.

    One module, so `torch.compile` puts preprocessing and the loss into the model's graph (measured on
    an H100 with reduce-overhead: LeNet 1.5×, ResNet-18@96 1.05× the model compiled alone).
    """

    def __init__(self, model: nn.Module, preprocess: Preprocess, precision: str) -> None:
        super().__init__()
        self.model = model
        self.preprocess = preprocess
        self.precision = precision

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy loss and the number of correct predictions of a uint8 batch."""
        with autocast(images.device, self.precision):
            logits = self.model(self.preprocess(images))
            loss = F.cross_entropy(logits.float(), labels)
        return loss, (logits.argmax(dim=1) == labels).sum()


def train_step(
    forward: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a uint8 batch through `forward` (a BatchLoss, perhaps compiled);
    returns its summed loss and correct count, on the device."""
    loss, hits = forward(images, labels)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    return loss.detach() * len(labels), hits


def fit(
    forward: nn.Module,
    model: nn.Module,
    data: Dataset,
    preprocess: Preprocess,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    settings: LoopSettings,
    state: RunState,
    logger: RunLogger,
    save: Callable[[RunState, bool], None],
    after_epoch: Callable[[RunState], None] = lambda state: None,
) -> RunState:
    """Train from `state` to `settings.epochs`; `save(state, best)` writes last.pt (and best.pt).

    `forward` (a BatchLoss, perhaps compiled or around DDP) takes the steps; `model` is the plain
    module inside it, which `evaluate` runs.

    `after_epoch(state)` runs once each epoch is logged (e.g. to draw TensorBoard images).
    """
    train = data.train
    device = train.device
    ranks = settings.distributed
    batch_size = settings.batch_size // ranks.world_size
    with StopSignals(enabled=not ranks.enabled) as stop:
        while state.epoch < settings.epochs:
            epoch = state.epoch
            model.train()
            order = ranks.shard(epoch_order(len(train), settings.seed, epoch), pad=True)
            # Per-step losses stay on the device: no synchronization until the epoch's end.
            losses = torch.zeros(steps_per_epoch(len(train), settings.batch_size, ranks), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            lrs: list[float] = [0.0] * state.batch  # batches already done when resuming mid-epoch
            logger.start_epoch(epoch + 1, len(order), done=state.epoch_seen)
            tic = time.perf_counter()
            for images, labels in batches(train, batch_size, order, start=state.batch):
                loss_sum, hits = train_step(forward, images, labels, optimizer, scheduler, scaler)
                losses[state.batch] = loss_sum
                correct += hits
                lrs.append(optimizer.param_groups[0]["lr"])  # the rate this step used, for errors
                state.batch += 1
                state.step += 1
                state.epoch_seen += len(labels)
                logger.advance(len(labels))
                every = settings.checkpoint_every_steps
                if stop.signum is not None or (every and state.step % every == 0):
                    _settle(state, losses, correct, tic, lrs, ranks)
                    correct.zero_()
                    tic = time.perf_counter()
                    save(state, False)
                    if stop.signum is not None:
                        logger.close()
                        raise Interrupted(stop.signum)
            _settle(state, losses, correct, tic, lrs, ranks)
            val_loss, val_acc = evaluate(
                model, data.test, preprocess, settings.eval_batch_size, settings.precision, ranks
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
            state.train_images += seen
            state.train_seconds += state.epoch_seconds
            state.history.append(metrics)
            state.epoch, state.batch = epoch + 1, 0
            state.epoch_losses, state.epoch_correct = [], 0
            state.epoch_seen, state.epoch_seconds = 0, 0.0
            improved = val_acc > state.best_val_acc
            if improved:
                state.best_val_acc, state.best_epoch = val_acc, epoch + 1
            save(state, improved)
            logger.scalars({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch + 1)
            logger.end_epoch(epoch + 1, metrics)
            after_epoch(state)
    return state


def _settle(
    state: RunState,
    losses: torch.Tensor,
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
            f"(lr {lrs[done + bad[0]]:g}); last.pt and best.pt keep the last good "
            "state: lower optimizer.lr (or use a scheduler with warm-up) and start again"
        )
    state.epoch_losses.extend(step_losses)
    state.epoch_correct += int(correct.item())
    state.epoch_seconds += time.perf_counter() - tic
