"""A run directory's lock: one writer per run (a second `cnnlab train` on it is refused in one line).

The lock is an advisory `flock` on `<run>/.cnnlab.lock`, which also records the holder's PID and host
for the message: the kernel releases it when the process ends however it ends (kill -9 included),
so a lock file nobody holds is stale by construction, whatever PID it names.
"""

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from cnnlab.errors import ConfigError

LOCK_NAME = ".cnnlab.lock"


def _read_holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _held(path: Path) -> bool:
    """Whether a live process holds the lock at `path` (probed without taking it for long)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the probe's shared lock
    return False


def _in_use(directory: Path) -> ConfigError:
    holder = _read_holder(directory / LOCK_NAME)
    since = holder.get("since")
    when = "?"
    if isinstance(since, int | float):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since))
    return ConfigError(
        f"{directory} is in use by another cnnlab train (PID {holder.get('pid', '?')} on "
        f"{holder.get('host', '?')}, since {when}); wait for it to end or use another run directory"
    )


def refuse_if_locked(directory: Path) -> None:
    """Raise ConfigError naming the holder if a live process holds `directory`'s lock."""
    if _held(directory / LOCK_NAME):
        raise _in_use(directory)


def lock_holder(directory: Path) -> dict | None:
    """The lock record of `directory` ({"pid", "host", "since"}) with "alive" added; None: no lock file."""
    path = directory / LOCK_NAME
    if not path.exists():
        return None
    return {**_read_holder(path), "alive": _held(path)}


class RunLock:
    """Held for the life of a training process; released (and its file removed) by `release`."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock, or raise ConfigError naming its live holder. Returns a note when it replaces
        the lock file of a process that is gone."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _in_use(self.path.parent) from None
        stale = _read_holder(self.path)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        if stale:
            return (
                f"replaced the stale lock of {self.path.parent} (PID {stale.get('pid', '?')} on "
                f"{stale.get('host', '?')} ended without releasing it)"
            )
        return None

    def release(self) -> None:
        """Remove the lock file and release the lock, if this process holds it."""
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
