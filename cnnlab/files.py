"""Atomic file writes, shared by checkpoints, metrics.json and images (torch-free: the CLI imports it
before any command needs torch)."""

import os
import shutil
import tempfile
from pathlib import Path


def atomic_write(path: Path, write) -> None:
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Temporary files of a writer that was killed mid-write (the run directory has one writer: its lock).
    for orphan in path.parent.glob(f".{path.name}.*.tmp"):
        orphan.unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide results from the user's other tools
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_copy(source: Path, target: Path) -> None:
    """Copy `source` over `target` atomically (the target is never half-written)."""
    with source.open("rb") as src:
        atomic_write(target, lambda file: shutil.copyfileobj(src, file))
