"""`cnnlab kernel-learn`: learn a convolution kernel from (image, corr2d(image, target)) — d2l 7.2.4."""

import math
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from cnnlab.app import checks
from cnnlab.console import console, write_json
from cnnlab.errors import ConfigError, did_you_mean
from cnnlab.kernels import (
    FIXED_TARGETS,
    IMAGES,
    TARGETS,
    Identifiability,
    directional_edge_kernel,
    embed,
    gaussian_kernel,
    identifiability,
    read_grayscale,
    synthetic_image,
)
from cnnlab.ops import Conv2D, corr2d
from cnnlab.training.logging import RunLogger
from cnnlab.training.loop import Diverged
from cnnlab.training.optim import build_optimizer

IMPLS = ("scratch", "torch")
OPTIMS = ("gd", "sgd", "adam")
DIVERGENCE_FACTOR = 100  # a loss this many times its first value counts as divergence


@dataclass(frozen=True)
class Problem:
    """What to learn: the image, the target kernel (at the learned kernel's shape) and the start."""

    image: Tensor
    image_name: str
    target: Tensor
    target_name: str
    initial: Tensor  # the starting kernel


def check(cfg: DictConfig) -> DictConfig:
    """Validate every option before any work (building the problem checks the image and shapes).

    Returns the plan: the checked config itself."""
    _problem(cfg)
    checks.choice(cfg, "impl", IMPLS)
    checks.choice(cfg, "optim", OPTIMS)
    checks.number(cfg, "lr", allow_minimum=False, example=0.03)
    checks.number(cfg, "momentum", maximum=0.999, example=0.9)
    checks.integer(cfg, "epochs", 1, example=10)
    checks.integer(cfg, "log_every", 1, example=2)
    checks.number(cfg, "tolerance", allow_minimum=False, example=0.1)
    return cfg


def run(cfg: DictConfig) -> bool:
    """Learn the kernel; print the log, the learned kernel beside the target and the verdict."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    problem = _problem(cfg)
    analysis = identifiability(problem.image, problem.target, cfg.bias)
    logger = RunLogger(run_dir, cfg.epochs)
    logger.text("config", f"```\n{OmegaConf.to_yaml(cfg)}```")
    logger.info(_describe(cfg, problem))
    for warning in _warnings(cfg, problem, analysis):
        logger.info(f"warning: {warning}")

    layer, forward = _layer(cfg.impl, problem.initial, cfg.bias)
    optimizer = _optimizer(cfg, layer.parameters())
    target_output = corr2d(problem.image, problem.target)
    losses: list[float] = []
    try:
        for epoch in range(1, cfg.epochs + 1):
            loss = ((forward(problem.image) - target_output) ** 2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            logger.scalars({"loss": losses[-1]}, epoch)
            if epoch % cfg.log_every == 0:
                logger.info(f"epoch {epoch}, loss {losses[-1]:.3f}")
            if not math.isfinite(losses[-1]) or 0 < DIVERGENCE_FACTOR * losses[0] < losses[-1]:
                raise Diverged(_divergence_message(cfg, epoch, losses, analysis))
    except Diverged as error:
        _write_result(run_dir, cfg, problem, analysis, layer, losses, "diverged", str(error))
        raise
    finally:
        _log_kernels(logger, layer.weight.detach().reshape(problem.target.shape), problem.target)
        logger.close()

    learned = layer.weight.detach().reshape(problem.target.shape)
    error, allowed = _max_error(layer, problem.target), cfg.tolerance * _scale(problem.target)
    recovered = error <= allowed
    _write_result(
        run_dir, cfg, problem, analysis, layer, losses, "recovered" if recovered else "not recovered"
    )
    for left, right in _side_by_side("learned kernel", learned, "target kernel", problem.target):
        console.print(left + "   " + right)
    if layer.bias is not None:
        console.print(f"learned bias {layer.bias.item():.4f} (target 0)")
    verdict = f"max |learned − target| = {error:.4f}"
    allowance = f"{allowed:.4g} (tolerance {cfg.tolerance:g} × max |target|)"
    if recovered:
        console.print(f"{verdict} ≤ {allowance}: recovered")
    else:
        if not analysis.identifiable:
            why = "the image does not determine the kernel (see the warning above)"
        elif losses[-1] > losses[0]:
            why = f"the loss grew from {losses[0]:.4g} to {losses[-1]:.4g}: use a smaller lr"
        else:
            why = "train longer (epochs=…)" + (" or try optim=adam" if cfg.optim != "adam" else "")
        console.print(f"{verdict} > {allowance}: not recovered — {why}")
    console.print(f"run directory: {run_dir}")
    console.print(f"view it:       tensorboard --logdir {shlex.quote(str(run_dir))}")
    return recovered


def _problem(cfg: DictConfig) -> Problem:
    """Build (and so validate) the target, the image and the starting kernel from the config."""
    target_name, target = _target(cfg)
    shape = _kernel_shape(cfg, target)
    checks.integer(cfg, "seed", 0, example=0)
    if not isinstance(checks.value(cfg, "bias"), bool):
        raise ConfigError(f"bias must be true or false, got {checks.value(cfg, 'bias')!r}; e.g. bias=true")
    generator = torch.Generator().manual_seed(cfg.seed)
    # Drawn like nn.Conv2d's default init (uniform ±1/√fan_in), before the image, so that the
    # starting kernel depends only on the seed and the kernel shape.
    bound = 1 / math.sqrt(shape[0] * shape[1])
    initial = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    image_name, image = _image(cfg, generator)
    if shape[0] > image.shape[0] or shape[1] > image.shape[1]:
        raise ConfigError(
            f"the {shape[0]}×{shape[1]} kernel is larger than the {image.shape[0]}×{image.shape[1]} image; "
            "use a smaller kernel_shape or target, or a larger image_size"
        )
    return Problem(image, image_name, embed(target, shape), target_name, initial)


def _target(cfg: DictConfig) -> tuple[str, Tensor]:
    """(name, kernel) of `target`: a named kernel or a custom matrix (every target option is checked)."""
    size = checks.integer(cfg, "gaussian.size", 1, example=3)
    sigma = checks.number(cfg, "gaussian.sigma", allow_minimum=False, example=1.0)
    v = checks.value(cfg, "direction")
    if not (_is_numbers(v) and len(v) == 2 and any(v)):
        raise ConfigError(f"direction must be a nonzero vector [x, y], got {v!r}; e.g. direction=[1,1]")
    got = checks.value(cfg, "target")
    if isinstance(got, list):
        return "custom", _matrix(got)
    name = str(got)
    if name in FIXED_TARGETS:
        return name, torch.tensor(FIXED_TARGETS[name])
    if name == "gaussian":
        return name, gaussian_kernel(size, sigma)
    if name == "directional":
        return name, directional_edge_kernel((float(v[0]), float(v[1])))
    raise ConfigError(
        f"unknown target {name!r}{did_you_mean(name, list(TARGETS))}; choose one of: {', '.join(TARGETS)}, "
        "or give a matrix such as 'target=[[1,0],[0,-1]]'"
    )


def _is_numbers(values: Any) -> bool:
    return isinstance(values, list) and all(
        isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x) for x in values
    )


def _matrix(got: list) -> Tensor:
    """A custom kernel: a list of equal-length rows of numbers (a flat list is one row)."""
    rows = [got] if _is_numbers(got) else got
    if not rows or not all(_is_numbers(row) and row and len(row) == len(rows[0]) for row in rows):
        raise ConfigError(
            f"target={got!r} is not a matrix: give equal-length rows of numbers, e.g. 'target=[[1,0],[0,-1]]'"
        )
    return torch.tensor(rows, dtype=torch.float32)


def _kernel_shape(cfg: DictConfig, target: Tensor) -> tuple[int, int]:
    """The learned kernel's shape: `kernel_shape`, or the target's when null; never smaller than it."""
    got = checks.value(cfg, "kernel_shape")
    if got is None:
        return (target.shape[0], target.shape[1])
    if not (isinstance(got, list) and len(got) == 2 and all(type(x) is int and x > 0 for x in got)):
        raise ConfigError(f"kernel_shape must be [height, width] of positive ints or null, got {got!r}")
    if got[0] < target.shape[0] or got[1] < target.shape[1]:
        raise ConfigError(
            f"kernel_shape={got} cannot hold the {target.shape[0]}×{target.shape[1]} target; "
            f"use kernel_shape=[{max(got[0], target.shape[0])},{max(got[1], target.shape[1])}] or null"
        )
    return (got[0], got[1])


def _image(cfg: DictConfig, generator: torch.Generator) -> tuple[str, Tensor]:
    """(description, pixels) of `image`: a generated image or a PNG/JPEG file read as grayscale."""
    name = str(checks.value(cfg, "image"))
    size = checks.image_size(cfg, "image_size")
    if size is None:
        raise ConfigError("image_size must be [height, width] for the generated images, got null")
    if name in IMAGES:
        return f"{size[0]}×{size[1]} {name}", synthetic_image(name, size, generator)
    path = Path(name).expanduser()
    if path.is_dir():
        raise ConfigError(f"image {name!r} is a directory; give the path of a PNG/JPEG file")
    if not path.is_file():
        if path.suffix or "/" in name:
            raise ConfigError(f"image file {name!r} not found; give an existing PNG/JPEG path")
        raise ConfigError(
            f"unknown image {name!r}{did_you_mean(name, list(IMAGES))}; choose one of: {', '.join(IMAGES)}, "
            "or give the path of a PNG/JPEG file"
        )
    try:
        image = read_grayscale(path)
    except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError is an OSError
        raise ConfigError(f"cannot read image {name!r} as PNG/JPEG: {str(error).splitlines()[0]}") from None
    return f"{image.shape[0]}×{image.shape[1]} {path.name}", image


def _layer(impl: str, initial: Tensor, bias: bool) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    """The layer to train, started at `initial`, and its forward on an (h, w) image."""
    if impl == "scratch":
        layer = Conv2D(initial.shape, bias=bias)
        forward = layer
    else:
        layer = nn.Conv2d(1, 1, tuple(initial.shape), bias=bias)

        def forward(image: Tensor) -> Tensor:
            return layer(image[None, None])[0, 0]

    with torch.no_grad():
        layer.weight.copy_(initial.reshape(layer.weight.shape))
        if layer.bias is not None:
            layer.bias.zero_()
    return layer, forward


def _momentum(cfg: DictConfig) -> float:
    return cfg.momentum if cfg.optim == "sgd" else 0.0


def _optimizer(cfg: DictConfig, parameters) -> torch.optim.Optimizer:
    """gd is SGD without momentum: exactly the book's `w -= lr * grad`."""
    if cfg.optim == "adam":
        return build_optimizer(parameters, "adam", lr=cfg.lr)
    return build_optimizer(parameters, "sgd", lr=cfg.lr, momentum=_momentum(cfg))


def _describe(cfg: DictConfig, problem: Problem) -> str:
    shape = "×".join(map(str, problem.target.shape))
    momentum = f" momentum {cfg.momentum:g}" if cfg.optim == "sgd" else ""
    return (
        f"learning a {shape} kernel{' and a bias' if cfg.bias else ''} from the {problem.image_name} image, "
        f"target {problem.target_name} {_compact(problem.target)}; {cfg.optim}{momentum} lr {cfg.lr:g}, "
        f"{cfg.epochs} epochs, impl {cfg.impl}"
    )


def _warnings(cfg: DictConfig, problem: Problem, analysis: Identifiability) -> list[str]:
    """Predictions before training: an image that cannot determine the kernel, a rate that must diverge."""
    warnings = []
    if not analysis.identifiable:
        shape = "×".join(map(str, problem.target.shape))
        zero = (
            "corr2d(image, target) is all zeros (nothing in the image makes the target respond); "
            if analysis.target_output_zero
            else ""
        )
        warnings.append(
            f"{zero}the {problem.image_name} image cannot determine a {shape} kernel"
            f"{' and bias' if cfg.bias else ''}: its patches span only {analysis.rank} of "
            f"{analysis.unknowns} dimensions, so many kernels give the same output and the learned one "
            "need not be the target (image=noise shows every direction)"
        )
    if cfg.optim != "adam":
        stable = analysis.stable_lr(_momentum(cfg))
        if cfg.lr >= stable:
            warnings.append(
                f"lr={cfg.lr:g} is above {stable:.3g}, the largest rate at which {cfg.optim} converges on "
                f"this image with this kernel shape; expect divergence — try lr={_below(stable):g}"
            )
    return warnings


def _below(limit: float) -> float:
    """A round learning rate safely under `limit` (one significant digit, ≤ 0.9 × limit)."""
    scale = 10 ** math.floor(math.log10(0.9 * limit))
    return math.floor(0.9 * limit / scale) * scale


def _divergence_message(cfg: DictConfig, epoch: int, losses: list[float], analysis: Identifiability) -> str:
    stable = analysis.stable_lr(_momentum(cfg))
    suggestion = _below(stable) if cfg.optim != "adam" and stable <= cfg.lr else _below(cfg.lr / 10)
    return (
        f"diverged at epoch {epoch}: loss {losses[-1]:.4g} (first {losses[0]:.4g}) — the learning rate "
        f"{cfg.lr:g} overshoots; use a smaller one, e.g. lr={suggestion:g}"
    )


def _max_error(layer: nn.Module, target: Tensor) -> float:
    """Largest absolute difference to the target, counting the bias (whose target is 0)."""
    error = (layer.weight.detach().reshape(target.shape) - target).abs().max().item()
    return max(error, abs(layer.bias.item())) if layer.bias is not None else error


def _scale(target: Tensor) -> float:
    """The target's largest entry in size: tolerances are relative to it (1 for an all-zero target)."""
    return target.abs().max().item() or 1.0


def _compact(kernel: Tensor) -> str:
    return "[" + ", ".join("[" + ", ".join(f"{v:.4g}" for v in row) + "]" for row in kernel.tolist()) + "]"


def _side_by_side(left_title: str, left: Tensor, right_title: str, right: Tensor) -> list[tuple[str, str]]:
    """Rows of two kernels printed next to each other under their titles."""

    def rows(kernel: Tensor) -> list[str]:
        return ["[" + " ".join(f"{v:8.4f}" for v in row) + " ]" for row in kernel.tolist()]

    lines = rows(left)
    width = max(len(left_title), len(lines[0]))
    return [(left_title.ljust(width), right_title)] + [
        (a.ljust(width), b) for a, b in zip(lines, rows(right), strict=True)
    ]


def _log_kernels(logger: RunLogger, learned: Tensor, target: Tensor) -> None:
    """Both kernels as grayscale images on the target's scale (mid-gray 0, white +max, black −max)."""
    scale = _scale(target)
    for tag, kernel in (("kernel/learned", learned), ("kernel/target", target)):
        pixels = (0.5 + torch.nan_to_num(kernel) / (2 * scale)).clamp(0, 1)
        # 16×16 screen pixels per kernel entry: a 1×2 kernel is otherwise two dots.
        pixels = pixels.repeat_interleave(16, dim=0).repeat_interleave(16, dim=1)
        logger.writer.add_image(tag, pixels, 0, dataformats="HW")


def _write_result(
    run_dir: Path,
    cfg: DictConfig,
    problem: Problem,
    analysis: Identifiability,
    layer: nn.Module,
    losses: list[float],
    status: str,
    error: str | None = None,
) -> None:
    def finite(x: float) -> float | None:  # JSON has no NaN or infinity
        return x if math.isfinite(x) else None

    learned = layer.weight.detach().reshape(problem.target.shape)
    stable = analysis.stable_lr(_momentum(cfg))
    write_json(
        run_dir / "result.json",
        {
            "status": status,
            "error": error,
            "target": problem.target_name,
            "target_kernel": problem.target.tolist(),
            "learned_kernel": [[finite(v) for v in row] for row in learned.tolist()],
            "learned_bias": finite(layer.bias.item()) if layer.bias is not None else None,
            "max_abs_error": finite(_max_error(layer, problem.target)),
            "allowed_error": cfg.tolerance * _scale(problem.target),
            "losses": [finite(loss) for loss in losses],
            "image": problem.image_name,
            "identifiable": analysis.identifiable,
            "patch_rank": analysis.rank,
            "unknowns": analysis.unknowns,
            "target_output_zero": analysis.target_output_zero,
            "stable_lr": finite(stable) if cfg.optim != "adam" else None,
            "config": OmegaConf.to_container(cfg, resolve=True),
        },
    )
