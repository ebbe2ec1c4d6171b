"""`cnnlab predict run=<run dir> input=<image or directory>`: the top-k classes of each image.

Each image is decoded as the run's training images were (grayscale or RGB by the model's input
channels, resized to the dataset's native size), then goes through the run's own preprocessing
(resize to the model's input, normalization by the training split's statistics): see cnnlab.runs.finished.
"""

import json
from pathlib import Path

import torch
from omegaconf import DictConfig
from rich.table import Table
from rich.text import Text

from cnnlab.app import checks
from cnnlab.console import console
from cnnlab.errors import ConfigError
from cnnlab.runs import finished
from cnnlab.training.device import resolve_device
from cnnlab.training.visuals import logits_of

FORMATS = ("table", "json")


def check(cfg: DictConfig) -> DictConfig:
    """Validate before any work: run directory, checkpoint, input files and options.

    Returns the plan: the checked config itself."""
    finished.check_run(cfg, "predict.checkpoint")
    finished.image_files(str(checks.value(cfg, "input")), "input")
    checks.integer(cfg, "predict.top_k", 1, example=3)
    checks.integer(cfg, "predict.batch_size", 1, example=256)
    checks.choice(cfg, "predict.format", FORMATS)
    resolve_device(str(checks.value(cfg, "predict.device")), "predict.device")
    return cfg


def run(cfg: DictConfig) -> list[dict]:
    """Classify the images; print a table or JSON; return the predictions."""
    options = cfg.predict
    trained = finished.open_run(
        finished.check_run(cfg, "predict.checkpoint"), resolve_device(options.device, "predict.device")
    )
    data = trained.load_data()
    if options.top_k > len(data.classes):
        raise ConfigError(
            f"predict.top_k={options.top_k} is more than the run's {len(data.classes)} classes; "
            f"give 1 to {len(data.classes)}, e.g. predict.top_k={min(3, len(data.classes))}"
        )
    preprocess = trained.preprocess(data)
    files = finished.image_files(str(cfg.input), "input")
    split = finished.read_images(files, trained.in_channels, trained.native_size).to(trained.device)
    logits = logits_of(trained.model, split, preprocess, options.batch_size, "32")  # float32: a few images
    top = torch.softmax(logits, dim=1).topk(options.top_k, dim=1)
    results = [
        {
            "image": str(path),
            "top_k": [
                {"class": data.classes[index], "index": index, "probability": probability}
                for probability, index in zip(probs.tolist(), indices.tolist(), strict=True)
            ],
        }
        for path, probs, indices in zip(files, top.values, top.indices, strict=True)
    ]
    if options.format == "json":
        console.out(json.dumps(results, indent=2), highlight=False)
    else:
        target = Path(str(cfg.input))
        if target.is_dir():
            console.print(f"{len(results)} images in {target}:", markup=False)
        console.print(_table(results, target))
    return results


def _table(results: list[dict], target: Path) -> Table:
    """One row per image, a column per rank (named relative to the input directory; long names wrap,
    never cut); where that is wider than the terminal, one row per image and rank."""
    paths = [Path(result["image"]) for result in results]
    names = [Text(str(path.relative_to(target) if target.is_dir() else path)) for path in paths]
    table = Table(box=None)
    table.add_column("image", overflow="fold", min_width=min(20, max(len(name) for name in names)))
    for rank in range(len(results[0]["top_k"])):
        table.add_column(f"top {rank + 1}", no_wrap=True)
    for name, result in zip(names, results, strict=True):
        table.add_row(name, *(Text(f"{p['class']} {p['probability']:.1%}") for p in result["top_k"]))
    unbounded = console.options.update(width=10_000, max_width=10_000)  # the table's natural width
    if console.measure(table, options=unbounded).maximum <= console.width:
        return table
    long = Table(box=None)
    for column in ("image", "rank", "class", "probability"):
        long.add_column(column, overflow="fold", justify="left" if column == "image" else "right")
    for name, result in zip(names, results, strict=True):
        for rank, p in enumerate(result["top_k"], 1):
            long.add_row(name if rank == 1 else "", str(rank), p["class"], f"{p['probability']:.1%}")
    return long
