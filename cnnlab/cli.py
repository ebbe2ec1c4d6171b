"""`cnnlab <command> [overrides]`: picks the command and hands the rest to it (and so to Hydra)."""

import importlib
import sys

from cnnlab import __version__
from cnnlab.errors import did_you_mean
from cnnlab.training.logging import print_error

# name → (module exposing COMMAND, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("cnnlab.commands.train", "train a model on a dataset (Hydra overrides; -m sweeps)"),
    "summary": ("cnnlab.commands.summary", "per-layer output shapes, parameters and mult-adds of a model"),
    "kernel-learn": ("cnnlab.commands.kernel_learn", "learn a convolution kernel from data (d2l 7.2.4)"),
    "evaluate": ("cnnlab.commands.evaluate", "loss, accuracy, per-class table, confusion matrix of a run"),
    "predict": ("cnnlab.commands.predict", "top-k classes of image files with a trained run"),
    "activations": ("cnnlab.commands.activations", "PNG of a trained run's feature maps for one input"),
    "report": ("cnnlab.commands.report", "compare runs: a table of a sweep's or all runs' results"),
}


def usage() -> str:
    """The top-level help text."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: cnnlab <command> [overrides] [hydra flags]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()),
        "",
        "`cnnlab <command> --help` shows a command's config groups and options.",
        "example: cnnlab train model=lenet dataset=fashion_mnist optimizer.lr=0.1",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cnnlab` console script; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"cnnlab {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        known = list(COMMANDS)
        print_error(
            "cnnlab",
            f"unknown command {name!r}{did_you_mean(name, known)}; choose one of: {', '.join(known)}",
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return module.COMMAND.main(rest)
