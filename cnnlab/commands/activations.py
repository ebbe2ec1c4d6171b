"""`cnnlab activations run=<run dir> input=<image|noise>`: a PNG of each convolutional stage's feature maps.

d2l exercises 7.6.4–5: what do LeNet's layers respond to, for a digit, a sweater, a cat, or noise?
The input is decoded and preprocessed exactly as `cnnlab predict` does (see cnnlab.runs.finished);
`input=noise` draws uniform random pixels at the dataset's native size (seeded by activations.seed).
"""

from pathlib import Path

import torch
from omegaconf import DictConfig

from cnnlab.app import checks
from cnnlab.console import console
from cnnlab.errors import ConfigError
from cnnlab.runs import finished
from cnnlab.training.device import resolve_device
from cnnlab.training.visuals import activation_figure, describe, save_png, stage_outputs

NOISE = "noise"


def check(cfg: DictConfig) -> DictConfig:
    """Validate before any work: run directory, checkpoint, input and options.

    Returns the plan: the checked config itself."""
    finished.check_run(cfg, "activations.checkpoint")
    target = str(checks.value(cfg, "input"))
    if target != NOISE:
        finished.image_files(target, "input")
        if Path(target).is_dir():
            raise ConfigError(f"input={target} is a directory; give one image file (or input={NOISE})")
    checks.integer(cfg, "activations.max_channels", 1, example=64)
    checks.integer(cfg, "activations.columns", 1, example=16)
    checks.integer(cfg, "activations.seed", 0, example=0)
    resolve_device(str(checks.value(cfg, "activations.device")), "activations.device")
    output = checks.value(cfg, "activations.output")
    if output is not None and Path(str(output)).suffix.lower() != ".png":
        raise ConfigError(f"activations.output={output} must end in .png")
    return cfg


def run(cfg: DictConfig) -> Path:
    """Draw the feature maps of every stage for the input; print one line per stage; return the PNG."""
    options = cfg.activations
    trained = finished.open_run(
        finished.check_run(cfg, "activations.checkpoint"),
        resolve_device(options.device, "activations.device"),
    )
    preprocess = trained.preprocess(trained.load_data())
    target = str(cfg.input)
    if target == NOISE:
        generator = torch.Generator().manual_seed(options.seed)
        shape = (1, trained.in_channels, *trained.native_size)
        image = torch.randint(0, 256, shape, generator=generator, dtype=torch.uint8)
        name, title = NOISE, f"input: uniform noise (seed {options.seed})"
    else:
        path = finished.image_files(target, "input")[0]
        image = finished.read_images([path], trained.in_channels, trained.native_size).images
        name, title = path.stem, f"input: {path.name}"
    stages = [maps[0] for maps in stage_outputs(trained.model, preprocess(image.to(trained.device)))]
    if not stages:
        raise ConfigError(f"the run's model ({trained.config.model.name}) has no convolutional layer")
    for number, maps in enumerate(stages, start=1):
        active = (maps.flatten(1).amax(dim=1) > 0).sum()
        console.print(
            f"stage {number}: {describe(maps)}  mean {float(maps.mean()):.3f}  max {float(maps.max()):.3f}  "
            f"zeros {float((maps == 0).float().mean()):.0%}  channels active {int(active)}/{len(maps)}"
        )
    output = (
        Path(options.output) if options.output is not None else trained.directory / f"activations-{name}.png"
    )
    save_png(activation_figure(image[0], title, stages, options.max_channels, options.columns), output)
    console.print(f"feature maps: {output}", markup=False)
    return output
