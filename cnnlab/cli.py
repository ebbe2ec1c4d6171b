"""`cnnlab <command> [overrides]`: picks the command and hands the rest to it (and so to Hydra)."""

import importlib
import os
import signal
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
    argv_given = argv is not None
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
    # Ctrl-C or SIGTERM while starting (importing torch takes seconds) end in one line, not a traceback
    # or a silent kill; training replaces this with its own handling (an orderly stop at a step's end).
    signal.signal(signal.SIGTERM, _stop_starting)
    try:
        module = importlib.import_module(COMMANDS[name][0])
        return module.COMMAND.main(rest)
    except KeyboardInterrupt as stop:  # SIGTERM too: _Stopped
        code = _stopped(f"cnnlab {name}", getattr(stop, "signum", signal.SIGINT))
        if argv_given:
            return code
        # The program itself: exit at once. (CPython kills itself with SIGINT at exit when a Ctrl-C
        # interrupted Python code run from C, as torch's import does, even once it was caught.)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _Stopped(KeyboardInterrupt):
    """SIGTERM outside training's own handling: a KeyboardInterrupt (no `except Exception` swallows it,
    and a sweep records the job as interrupted) that remembers its signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop_starting(signum: int, frame) -> None:
    raise _Stopped(signum)


def _stopped(prog: str, signum: int) -> int:
    print_error(
        prog, f"interrupted by {signal.Signals(signum).name}; nothing was saved: run the command again"
    )
    return 128 + signum
