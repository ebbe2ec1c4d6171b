"""What cnnlab prints: the console, one-line errors, summary tables, JSON records. Torch-free, so the
CLI's help and errors need no heavy import."""

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from cnnlab.files import atomic_write

console = Console(highlight=False, soft_wrap=True)
error_console = Console(stderr=True, highlight=False, soft_wrap=True)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (readers never see half a file)."""
    data = (json.dumps(payload, indent=2, sort_keys=False) + "\n").encode()
    atomic_write(path, lambda file: file.write(data))


def print_summary(rows: list[tuple[str, str]], title: str) -> None:
    """Print a two-column summary table."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)


def print_warning(prefix: str, message: str) -> None:
    """One line on stderr: `<prefix>: warning: <message>`."""
    error_console.print(f"{prefix}: warning: {message}", markup=False, style="yellow")


def print_error(prefix: str, message: str) -> None:
    """One line on stderr: `<prefix>: error: <message>`."""
    error_console.print(f"{prefix}: error: {message}", markup=False)
    sys.stderr.flush()
