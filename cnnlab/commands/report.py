"""`cnnlab report <dir>`: print and write the report of a sweep's runs, or of every run under outputs/."""

import argparse
from pathlib import Path
from typing import NoReturn

from cnnlab.console import print_error
from cnnlab.errors import CnnlabError, ConfigError, file_error
from cnnlab.runs.report import HINT, collect, publish


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message}; usage: cnnlab report <directory> [--by KEY,…] ({HINT})")


def main(argv: list[str]) -> int:
    """Print and write the report of the directory in `argv`; return the exit code."""
    parser = _Parser(
        prog="cnnlab report",
        description="Compare runs: one table of a sweep's (or all runs') settings and results, "
        "best validation accuracy first; also written as report.csv and report.md in the directory.",
    )
    parser.add_argument("directory", type=Path, help=f"the runs to compare: {HINT}")
    parser.add_argument(
        "--by",
        metavar="KEY[,KEY…]",
        help="group the runs by these settings (mean ± std and n per group); default: runs that differ "
        "only in trainer.seed form a group",
    )
    try:
        args = parser.parse_args(argv)
        root = args.directory.expanduser()
        if not root.is_dir():
            raise ConfigError(f"{root} {'is a file' if root.exists() else 'does not exist'}; {HINT}")
        runs = collect(root)
        if not runs:
            raise ConfigError(f"no cnnlab runs (metrics.json) under {root}; {HINT}")
        publish(runs, root, args.by.split(",") if args.by else None)
    except CnnlabError as error:
        print_error("cnnlab report", str(error))
        return 2
    except OSError as error:  # report.md and report.csv go into the directory: it may be read-only
        print_error("cnnlab report", file_error(error))
        return 2
    return 0
