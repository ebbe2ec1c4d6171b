"""Shared helpers: run the CLI as a user does, and read what a run wrote."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None, **popen):
    """Run `python -m cnnlab ARGS` in `cwd`; return the CompletedProcess (text output)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "CNNLAB_DATA_DIR": str(cwd / "data"), **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "cnnlab", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        **popen,
    )


def run_dirs(root: Path, command: str = "train") -> list[Path]:
    """Run directories (those holding metrics.json) under root/outputs/<command>*, oldest first."""
    found = [p.parent for p in (root / "outputs").glob(f"{command}*/**/metrics.json")]
    return sorted(found, key=lambda p: str(p))


def metrics(run_dir: Path) -> dict:
    """The run's metrics.json."""
    return json.loads((run_dir / "metrics.json").read_text())


def learning_curves(run_dir: Path) -> list[dict]:
    """Per-epoch metrics without the timing fields (which legitimately differ between runs)."""
    return [
        {k: v for k, v in h.items() if not k.startswith("throughput")} for h in metrics(run_dir)["history"]
    ]


def wait_for_file(root: Path, pattern: str, timeout: float = 120) -> Path:
    """Wait until a file matching the glob `pattern` exists under `root`; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(pattern))
        if found:
            return found[0]
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} under {root} after {timeout:.0f} s")


def one_error_line(stderr: str) -> str:
    """Assert stderr is exactly one `cnnlab …: error: …` line with no traceback; return it."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert ": error: " in lines[0], stderr
    return lines[0]


@pytest.fixture
def cli(tmp_path):
    """`cli(*args)` runs cnnlab in a fresh directory (tmp_path)."""

    def call(*args: str, **kwargs):
        return run_cli(*args, cwd=tmp_path, **kwargs)

    call.cwd = tmp_path
    return call
