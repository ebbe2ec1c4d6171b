"""The checks of a training config, shared by `cnnlab train` and `cnnlab lr-find` (which trains with
the same overrides): types, ranges, choices, device, input size, each refusal one line naming the key."""

import os

from omegaconf import DictConfig

from cnnlab.app import checks
from cnnlab.data.sources import SOURCES
from cnnlab.errors import ConfigError
from cnnlab.training.device import (
    COMPILE_CHOICES,
    PRECISIONS,
    check_compile,
    check_precision,
    resolve_device,
)
from cnnlab.training.optim import OPTIMIZERS, SCHEDULERS

LOSSES = ("cross_entropy",)


def check_training(cfg: DictConfig) -> DictConfig:
    """Validate a whole training config before any work; return it (checked)."""
    checks.integer(cfg, "trainer.epochs", 1, example=10)
    batch_size = checks.integer(cfg, "trainer.batch_size", 1, example=64)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if batch_size % world_size:
        raise ConfigError(
            f"trainer.batch_size={batch_size} is the global batch and must divide evenly among the "
            f"{world_size} torchrun processes; e.g. trainer.batch_size={world_size * 32}"
        )
    checks.integer(cfg, "trainer.eval_batch_size", 1, example=1024)
    checks.integer(cfg, "trainer.seed", 0, example=0)
    checks.integer(cfg, "trainer.checkpoint_every_steps", 0, example=100)
    if checks.value(cfg, "trainer.visual_every") is not None:
        checks.integer(cfg, "trainer.visual_every", 0, example=5)
    _check_limit(cfg)
    checks.integer(cfg, "trainer.overfit_batches", 0, example=4)
    device = resolve_device(str(checks.value(cfg, "trainer.device")), "trainer.device")
    check_precision(checks.choice(cfg, "trainer.precision", PRECISIONS), device)
    checks.choice(cfg, "trainer.channels_last", ("auto", "True", "False"))
    check_compile(checks.choice(cfg, "trainer.compile", ("False", "True", *COMPILE_CHOICES)), device)
    if checks.value(cfg, "trainer.threads") is not None:
        checks.integer(cfg, "trainer.threads", 1, example=2)
    checks.choice(cfg, "optimizer.name", tuple(OPTIMIZERS))
    checks.number(cfg, "optimizer.lr", allow_minimum=False, example=0.01)
    checks.number(cfg, "optimizer.weight_decay", example=0.0)
    if "momentum" in cfg.optimizer:
        checks.number(cfg, "optimizer.momentum", maximum=1.0, example=0.9)
    checks.choice(cfg, "scheduler.name", SCHEDULERS)
    # Each schedule's own options: (key, minimum, maximum, minimum allowed, example).
    rules = {
        "step_epochs": (0.0, None, False, 5),
        "gamma": (0.0, None, False, 0.1),
        "min_lr": (0.0, None, True, 0.0),
        "max_lr": (0.0, None, False, 0.1),
        "pct_start": (0.0, 1.0, False, 0.3),
    }
    for key, (low, high, inclusive, example) in rules.items():
        if key in cfg.scheduler:
            checks.number(cfg, f"scheduler.{key}", low, high, inclusive, example=example)
    checks.number(cfg, "scheduler.warmup_epochs", example=1)
    checks.choice(cfg, "loss.name", LOSSES)
    checks.number(cfg, "loss.label_smoothing", maximum=1.0, example=0.1)
    if checks.value(cfg, "trainer.clip_grad_norm") is not None:
        checks.number(cfg, "trainer.clip_grad_norm", allow_minimum=False, example=1.0)
    checks.integer(cfg, "trainer.early_stopping.patience", 0, example=5)
    checks.number(cfg, "trainer.early_stopping.min_delta", example=0.001)
    if checks.value(cfg, "trainer.early_stopping.target") is not None:
        checks.number(cfg, "trainer.early_stopping.target", maximum=1.0, allow_minimum=False, example=0.99)
    checks.number(cfg, "trainer.health_check", maximum=1.0, example=0.5)
    checks.boolean(cfg, "trainer.stop_if_stuck")
    checks.boolean(cfg, "trainer.detect_anomaly")
    checks.boolean(cfg, "trainer.profile")
    checks.choice(cfg, "dataset.name", tuple(SOURCES))
    checks.number(cfg, "dataset.val_fraction", maximum=0.9, example=0.1)
    checks.integer(cfg, "dataset.split_seed", 0, example=0)
    checks.dataset_loader(cfg)
    _check_book(cfg)
    checks.check_model(cfg)
    checks.check_augment(cfg)
    return cfg


def _check_limit(cfg: DictConfig) -> None:
    """trainer.limit_batches is null, a count of batches (an int ≥ 1) or a share of them (in (0, 1])."""
    limit = checks.value(cfg, "trainer.limit_batches")
    if isinstance(limit, float):
        checks.number(cfg, "trainer.limit_batches", maximum=1.0, allow_minimum=False, example=0.1)
    elif limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(
            "trainer.limit_batches must be null (all batches), a count of batches ≥ 1 or a share in "
            f"(0, 1], got {limit!r}; e.g. trainer.limit_batches=2 or trainer.limit_batches=0.1"
        )


def _check_book(cfg: DictConfig) -> None:
    """`book` is null or {test_acc: a figure in [0, 1] or null, section: text}."""
    book = checks.value(cfg, "book")
    if book is None:
        return
    if not isinstance(book, dict) or set(book) != {"test_acc", "section"}:
        raise ConfigError(
            "book must be null or {test_acc: <a figure or null>, section: <d2l.ai section>}, "
            f"got {book!r}; e.g. 'book={{test_acc: 0.78, section: \"7.6\"}}', or book=null"
        )
    if book["test_acc"] is not None:
        checks.number(cfg, "book.test_acc", maximum=1.0, example=0.78)
