"""Optimizers and learning-rate schedules by name; every schedule is stepped once per batch."""

import torch
from torch.optim import lr_scheduler

from cnnlab.errors import ConfigError, unknown

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}
SCHEDULERS = ("none", "step", "cosine", "onecycle")


def _unknown(kind: str, name: str, known) -> ConfigError:
    known = sorted(known)
    return ConfigError(unknown(kind, name, known))


def build_optimizer(params, name: str, **options) -> torch.optim.Optimizer:
    """torch.optim.SGD / Adam / AdamW with the config's options (lr, momentum, weight_decay, …)."""
    if name not in OPTIMIZERS:
        raise _unknown("optimizer", name, OPTIMIZERS)
    try:
        return OPTIMIZERS[name](params, **options)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"optimizer {name}: {error}") from None


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    steps_per_epoch: int,
    epochs: int,
    warmup_epochs: float,
    **options,
) -> lr_scheduler.LRScheduler:
    """The named schedule over `epochs × steps_per_epoch` steps ('none' keeps the lr constant), after
    a linear warm-up from lr / (warm-up steps + 1) to lr over the first `warmup_epochs` epochs (at
    most the whole run: a one-epoch run with a one-epoch warm-up only ramps up)."""
    total = steps_per_epoch * epochs
    warmup = min(round(warmup_epochs * steps_per_epoch), total)
    if warmup and name == "onecycle":
        raise ConfigError(
            "scheduler=onecycle warms up by itself (scheduler.pct_start); set scheduler.warmup_epochs=0"
        )
    if not warmup:
        return _schedule(optimizer, name, steps_per_epoch, total, **options)
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1 / (warmup + 1), total_iters=warmup)
    if warmup == total:
        return ramp
    main = _schedule(optimizer, name, steps_per_epoch, total - warmup, **options)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _schedule(
    optimizer: torch.optim.Optimizer, name: str, steps_per_epoch: int, total: int, **options
) -> lr_scheduler.LRScheduler:
    """The named schedule over `total` steps."""
    if name == "none":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if name == "step":
        return lr_scheduler.StepLR(
            optimizer, step_size=options["step_epochs"] * steps_per_epoch, gamma=options["gamma"]
        )
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=options["min_lr"])
    if name == "onecycle":
        return lr_scheduler.OneCycleLR(
            optimizer, max_lr=options["max_lr"], total_steps=total, pct_start=options["pct_start"]
        )
    raise _unknown("scheduler", name, SCHEDULERS)
