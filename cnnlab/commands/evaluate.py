"""`cnnlab evaluate run=<run dir>`: a trained run's loss, accuracy, per-class table and confusion matrix.

The run is opened by cnnlab.runs.finished (its docstring explains how the command's config, the
run's saved config.yaml and a `dataset=` override fit together). Loss and accuracy come from the
training loop's own `evaluate` with the run's batch size and precision, so best.pt on the test split
reproduces the run's test/acc, and last.pt on the val split its final val/acc, exactly.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.table import Table

from cnnlab.app import checks
from cnnlab.app.plans import data_spec
from cnnlab.console import console
from cnnlab.data.sources import SOURCES
from cnnlab.errors import ConfigError
from cnnlab.runs import finished
from cnnlab.training.build import load_data
from cnnlab.training.device import PRECISIONS, check_precision, resolve_device, resolve_precision
from cnnlab.training.loop import evaluate
from cnnlab.training.visuals import class_accuracies, confusion_figure, confusion_matrix, logits_of, save_png

SPLITS = ("test", "val", "train")


def _device_and_precision(cfg: DictConfig, run_config: DictConfig) -> tuple[torch.device, str]:
    """evaluate.device / evaluate.precision, or the run's trainer settings where they are null."""
    device_name = checks.value(cfg, "evaluate.device")
    # Named evaluate.device even when it is the run's: that is the key that changes it.
    name = device_name if device_name is not None else run_config.trainer.device
    device = resolve_device(str(name), "evaluate.device")
    precision = checks.value(cfg, "evaluate.precision")
    precision = str(precision if precision is not None else run_config.trainer.precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"evaluate.precision={precision!r} is not one of: {', '.join(PRECISIONS)}")
    check_precision(precision, device)
    return device, resolve_precision(precision, device)


@dataclass(frozen=True)
class Plan:
    """What `cnnlab evaluate` measures, parsed and checked once."""

    checkpoint: Path
    run_config: DictConfig  # the run's saved config (read once)
    split: str
    device: torch.device
    precision: str
    dataset: DictConfig | None  # a dataset=<name> override, evaluated instead of the run's own
    data_dir: str | None


def check(cfg: DictConfig) -> Plan:
    """Validate before any work: the run directory and checkpoint exist, the options are valid."""
    checkpoint = finished.check_run(cfg, "evaluate.checkpoint")
    split = checks.choice(cfg, "evaluate.split", SPLITS)
    run_config = finished.saved_config(checkpoint.parent)
    device, precision = _device_and_precision(cfg, run_config)
    if "dataset" in cfg:
        checks.choice(cfg, "dataset.name", tuple(SOURCES))
        checks.dataset_loader(cfg)
    dataset = cfg.dataset if "dataset" in cfg else None
    return Plan(checkpoint, run_config, split, device, precision, dataset, cfg.data_dir)


def run(plan: Plan) -> float:
    """Evaluate the run; print the results, save the confusion matrix PNG; return the accuracy."""
    checkpoint, split_name, device, precision = plan.checkpoint, plan.split, plan.device, plan.precision
    trained = finished.open_run(checkpoint, device, plan.run_config)
    own = trained.load_data()
    preprocess = trained.preprocess(own)
    config = (
        trained.config
        if plan.dataset is None
        else finished.with_dataset(trained, plan.dataset, plan.data_dir)
    )
    data = own if config is trained.config else load_data(data_spec(config), device)
    split = getattr(data, split_name)
    if split is None:
        raise ConfigError(
            f"evaluate.split={split_name}: {config.dataset.name} has no {split_name} split (no {split_name}/ "
            "folder); use evaluate.split=val"
        )
    dataset = config.dataset.name
    batch_size = trained.config.trainer.eval_batch_size

    console.print(
        f"evaluating {checkpoint} (epoch {trained.epoch}) on {dataset}, {split_name} split "
        f"({len(split):,} images), {device}, precision {precision}",
        markup=False,
    )
    loss, accuracy = evaluate(trained.model, split, preprocess, batch_size, precision)
    predicted = logits_of(trained.model, split, preprocess, batch_size, precision).argmax(dim=1)
    matrix = confusion_matrix(predicted, split.labels, len(data.classes))
    correct = int(matrix.diag().sum())
    console.print(
        f"{split_name} loss {loss:.4f}  accuracy {accuracy:.4f} ({correct:,}/{len(split):,})", markup=False
    )
    console.print(_class_table(matrix, data.classes))
    path = trained.directory / f"confusion-{dataset}-{split_name}-{checkpoint.stem}.png"
    save_png(confusion_figure(matrix, data.classes), path)
    console.print(f"confusion matrix: {path}", markup=False)
    return accuracy


def _class_table(matrix: torch.Tensor, classes: list[str]) -> Table:
    """Per class: images, correct, accuracy, and the class it is most often mistaken for."""
    table = Table(box=None, title_justify="left")
    for header in ("class", "images", "correct", "accuracy", "most often predicted instead"):
        table.add_column(
            header, justify="left" if header in ("class", "most often predicted instead") else "right"
        )
    for i, (name, acc) in enumerate(zip(classes, class_accuracies(matrix).tolist(), strict=True)):
        wrong = matrix[i].clone()
        wrong[i] = 0
        confused = f"{classes[int(wrong.argmax())]} ({int(wrong.max())})" if wrong.max() > 0 else "—"
        table.add_row(
            name,
            f"{int(matrix[i].sum()):,}",
            f"{int(matrix[i, i]):,}",
            "—" if math.isnan(acc) else f"{acc:.4f}",
            confused,
        )
    return table
