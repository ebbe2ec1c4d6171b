"""The learning-rate range test (Smith 2017; fastai's lr finder): the run's own training step under an
exponentially rising learning rate, its loss smoothed, stopped when that loss explodes; and the rule
that reads a suggestion off the curve."""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from cnnlab.data.batches import batches, epoch_order
from cnnlab.data.sources import AnySplit
from cnnlab.errors import CnnlabError
from cnnlab.training.loop import Training, batch_draws, epoch_draws, train_step

# The suggestion is this share of the lr where the smoothed loss is lowest: at the minimum the loss has
# stopped falling, so the lr that trains fastest and stays stable lies about a decade below it.
BELOW_MINIMUM = 0.1
# A curve whose smoothed minimum is not this much below its start never learned: no suggestion.
LEAST_DROP = 0.05


_WIDEN = (
    "no learning rate in that range trains this model; change the range (lr_find.min_lr, lr_find.max_lr, "
    "lr_find.steps) or check that the model can fit its data (debug=overfit)"
)


class NoSuggestion(CnnlabError):
    """The loss never fell on the way up: no learning rate in the range trains this model."""

    exit_code = 4


@dataclass
class LrCurve:
    """What the range test measured, one entry per step taken."""

    lrs: list[float]
    losses: list[float]  # each step's mean training loss
    smoothed: list[float]  # their exponential moving average, bias-corrected
    stopped: str  # why the ramp ended
    exploded: bool  # it ended because the loss exploded (else: at max_lr)


def lr_range_test(
    training: Training,
    train: AnySplit,
    min_lr: float,
    max_lr: float,
    steps: int,
    smoothing: float,
    explode: float,
    advance: Callable[[int], None] = lambda steps: None,
) -> LrCurve:
    """Train from `training`'s fresh state for up to `steps` steps with the lr rising exponentially from
    `min_lr` to `max_lr`, through its own step (precision, channels-last, augmentation, clipping as
    configured); stop early once the smoothed loss is above `explode` × its lowest, or non-finite.
    `advance(1)` is called after each step (a progress bar)."""
    settings, optimizer = training.settings, training.optimizer
    for group in optimizer.param_groups:  # the ramp replaces the run's schedule
        group["lr"] = group["initial_lr"] = min_lr
    ramp = torch.optim.lr_scheduler.ExponentialLR(optimizer, (max_lr / min_lr) ** (1 / max(steps - 1, 1)))
    curve = LrCurve([], [], [], f"reached lr_find.max_lr={max_lr:g}", exploded=False)
    average, epoch = 0.0, 0
    training.model.train()
    while len(curve.lrs) < steps:
        order = epoch_order(len(train), settings.seed, epoch)
        drawn = epoch_draws(training.augment, len(order), settings.seed, epoch, 0, train.device)
        for batch, (images, labels) in enumerate(batches(train, settings.batch_size, order)):
            if len(curve.lrs) == steps:
                break
            draws = batch_draws(drawn, batch, settings.batch_size, len(labels))
            lr = optimizer.param_groups[0]["lr"]
            loss_sum, _, _ = train_step(
                training.forward,
                images,
                labels,
                optimizer,
                ramp,
                training.scaler,
                settings.clip_grad_norm,
                draws,
            )
            loss = float(loss_sum) / len(labels)
            if not math.isfinite(loss):
                curve.stopped, curve.exploded = f"the loss became non-finite at lr {lr:.3g}", True
                return curve
            average = smoothing * average + (1 - smoothing) * loss
            advance(1)
            curve.lrs.append(lr)
            curve.losses.append(loss)
            curve.smoothed.append(average / (1 - smoothing ** len(curve.lrs)))
            if curve.smoothed[-1] > explode * min(curve.smoothed):
                curve.stopped = f"the smoothed loss passed {explode:g}× its lowest at lr {lr:.3g}"
                curve.exploded = True
                return curve
        epoch += 1
    return curve


def suggest(curve: LrCurve) -> tuple[float, str]:
    """The suggested lr and the rule that chose it: a tenth of the lr at the smoothed loss's minimum."""
    if len(curve.smoothed) < 2:
        raise NoSuggestion(
            f"the range test ended after {len(curve.smoothed)} step(s) ({curve.stopped}): {_WIDEN}"
        )
    lowest = min(range(len(curve.smoothed)), key=curve.smoothed.__getitem__)
    start, bottom = curve.smoothed[0], curve.smoothed[lowest]
    if bottom > (1 - LEAST_DROP) * start:
        raise NoSuggestion(
            f"the smoothed training loss never fell more than {LEAST_DROP:.0%} below its start ({start:.3f}) "
            f"between lr {curve.lrs[0]:.3g} and {curve.lrs[-1]:.3g} ({curve.stopped}): {_WIDEN}"
        )
    rule = (
        f"{BELOW_MINIMUM:g} × the lr where the smoothed loss is lowest "
        f"({bottom:.3f} at lr {curve.lrs[lowest]:.3g})"
    )
    if lowest == len(curve.lrs) - 1 and not curve.exploded:
        rule += "; it was still falling at the ramp's end: a higher lr_find.max_lr may find more"
    return BELOW_MINIMUM * curve.lrs[lowest], rule
