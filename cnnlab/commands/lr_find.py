"""`cnnlab lr-find`: the learning-rate range test on the run `cnnlab train` would make from the same
overrides → a suggested optimizer.lr, lr_find.png, lr_find.json and TensorBoard events."""

import os
import shlex
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cnnlab.app import checks
from cnnlab.app.plans import data_spec, training_spec
from cnnlab.app.training_checks import check_training
from cnnlab.console import console, print_summary, write_json
from cnnlab.errors import ConfigError
from cnnlab.runs.curves import add_to_tensorboard, lr_curve_png
from cnnlab.training.build import build_training, load_data
from cnnlab.training.device import resolve_device, set_up_process
from cnnlab.training.distributed import SINGLE_PROCESS
from cnnlab.training.logging import decoding_bar, progress_bar
from cnnlab.training.lr_find import LrCurve, NoSuggestion, lr_range_test, suggest

PNG, JSON = "lr_find.png", "lr_find.json"
TAGS = ("lr_find/lr", "lr_find/loss", "lr_find/smoothed_loss")  # per step


def check(cfg: DictConfig) -> DictConfig:
    """The training config as `cnnlab train` checks it, and the range test's options."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("cnnlab lr-find runs in one process: start it without torchrun")
    check_training(cfg)
    min_lr = checks.number(cfg, "lr_find.min_lr", allow_minimum=False, example=1e-7)
    checks.number(cfg, "lr_find.max_lr", min_lr, allow_minimum=False, example=10)
    checks.integer(cfg, "lr_find.steps", 2, example=100)
    checks.number(cfg, "lr_find.smoothing", maximum=0.999, example=0.98)
    checks.number(cfg, "lr_find.explode", 1.0, allow_minimum=False, example=4)
    return cfg


def run(cfg: DictConfig) -> float:
    """Run the range test; print and record the suggested lr, which it returns."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    options = cfg.lr_find
    device = resolve_device(cfg.trainer.device, "trainer.device")
    device = set_up_process(device, SINGLE_PROCESS, cfg.trainer.threads, cfg.trainer.seed)
    data = load_data(data_spec(cfg), device, decoding_bar)
    training = build_training(training_spec(cfg), data, SINGLE_PROCESS)
    console.print(
        f"lr-find: {cfg.model.name} on {cfg.dataset.name}, lr {options.min_lr:g} → {options.max_lr:g} "
        f"over at most {options.steps} steps of {cfg.trainer.batch_size} images, "
        f"precision {training.settings.precision}"
    )
    with progress_bar(options.steps, "lr-find") as advance:
        curve = lr_range_test(
            training,
            data.train,
            options.min_lr,
            options.max_lr,
            options.steps,
            options.smoothing,
            options.explode,
            advance,
        )
    suggested, rule, failure = None, None, None
    try:
        suggested, rule = suggest(curve)
    except NoSuggestion as error:
        failure = error
    _record(run_dir, curve, suggested, rule)
    if failure is not None:
        raise failure
    rows = [
        ("steps", f"{len(curve.lrs)} (lr {curve.lrs[0]:.3g} → {curve.lrs[-1]:.3g}; {curve.stopped})"),
        ("suggested", f"optimizer.lr={suggested:.3g}"),
        ("rule", rule),
    ]
    print_summary(rows, title="cnnlab lr-find: done")
    overrides = [
        o for o in HydraConfig.get().overrides.task if not o.startswith(("lr_find.", "optimizer.lr="))
    ]
    console.print(f"train with:    cnnlab train {shlex.join([f'optimizer.lr={suggested:.3g}', *overrides])}")
    console.print(f"plot:          {run_dir / PNG}")
    console.print(f"view it:       tensorboard --logdir {shlex.quote(str(run_dir))}")
    return suggested


def _record(run_dir: Path, curve: LrCurve, suggested: float | None, rule: str | None) -> None:
    """lr_find.json (every step), lr_find.png (the curve, the suggestion marked), and TensorBoard: the
    smoothed and raw loss per step with the step's lr, and the figure."""
    from torch.utils.tensorboard import SummaryWriter

    write_json(
        run_dir / JSON,
        {
            "suggested_lr": suggested,
            "rule": rule,
            "stopped": curve.stopped,
            "lrs": curve.lrs,
            "losses": curve.losses,
            "smoothed": curve.smoothed,
        },
    )
    lr_curve_png(curve.lrs, curve.losses, curve.smoothed, suggested, run_dir / PNG)
    with SummaryWriter(log_dir=str(run_dir)) as writer:
        for step, values in enumerate(zip(curve.lrs, curve.losses, curve.smoothed, strict=True)):
            for tag, value in zip(
                ("lr_find/lr", "lr_find/loss", "lr_find/smoothed_loss"), values, strict=True
            ):
                writer.add_scalar(tag, value, step)
    add_to_tensorboard(run_dir / PNG, run_dir, "lr_find/curve", len(curve.lrs))
