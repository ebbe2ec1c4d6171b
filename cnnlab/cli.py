"""`cnnlab <command> [overrides]`: picks the command and hands the rest to it (and so to Hydra)."""

import os
import signal
import sys

from cnnlab import __version__
from cnnlab.app.command import HydraCommand
from cnnlab.commands import COMMANDS
from cnnlab.console import print_error
from cnnlab.errors import unknown


def usage() -> str:
    """The top-level help text."""
    width = max(len(name) for name in COMMANDS)
    lines = [
        "usage: cnnlab <command> [overrides] [hydra flags]",
        "",
        "commands:",
        *(f"  {name:<{width}}  {command.about}" for name, command in COMMANDS.items()),
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
    if argv[0] in ("-sc", "--shell-completion"):
        return _complete(argv[1:])
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        known = list(COMMANDS)
        print_error(
            "cnnlab",
            unknown("command", name, known),
        )
        return 2
    # Ctrl-C or SIGTERM while starting (importing torch takes seconds) end in one line, not a traceback
    # or a silent kill; training replaces this with its own handling (an orderly stop at a step's end).
    signal.signal(signal.SIGTERM, _stop_starting)
    try:
        return COMMANDS[name].main(rest)
    except BrokenPipeError:  # `cnnlab … | head`: the reader has all it wants
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    except KeyboardInterrupt as stop:  # SIGTERM too: _Stopped
        code = _stopped(f"cnnlab {name}", getattr(stop, "signum", signal.SIGINT))
        if argv_given:
            return code
        # The program itself: exit at once. (CPython kills itself with SIGINT at exit when a Ctrl-C
        # interrupted Python code run from C, as torch's import does, even once it was caught.)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _complete(flags: list[str]) -> int:
    """Shell completion (`eval "$(cnnlab train -sc install=bash)"` installs it): the script it installs
    asks `cnnlab -sc query=bash` with the line typed so far in COMP_LINE; cnnlab completes the command,
    then hands the rest of the line to that command's Hydra completion (groups, options, keys)."""
    line = os.environ.get("COMP_LINE", "")
    words = line.split()
    if not any(flag.startswith("query=") for flag in flags):  # install= / uninstall=: the same script
        return COMMANDS["train"].main(["-sc", *flags])
    if len(words) < 2 or (len(words) == 2 and not line.endswith(" ")):
        typed = words[1] if len(words) == 2 else ""
        print(" ".join(name for name in COMMANDS if name.startswith(typed)))
        return 0
    command = COMMANDS.get(words[1])
    if not isinstance(command, HydraCommand):  # report takes a directory: the shell's own completion
        return 0
    os.environ["COMP_LINE"] = line.replace(f" {words[1]}", "", 1)
    return command.main(["-sc", *flags])


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
