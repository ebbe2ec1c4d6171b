"""A real viewer: `tensorboard --logdir <run>` on localhost lists a cnnlab run's scalar and image tags."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from helpers import run_cli

STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def wait_for_tags(base: str, plugin: str, server: subprocess.Popen) -> dict:
    """Poll the plugin's tags endpoint until the run appears (TensorBoard loads events in the background)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[1][-2000:]
        try:
            tags = get_json(f"{base}/data/plugin/{plugin}/tags")
            if tags:
                return tags
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"TensorBoard listed no {plugin} tags within {STARTUP_SECONDS} s")


def test_tensorboard_lists_the_runs_scalars_and_images(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli("train", "trainer.epochs=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr

    port = free_port()
    tensorboard = Path(sys.executable).parent / "tensorboard"
    server = subprocess.Popen(
        [str(tensorboard), "--logdir", str(run_dir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: stopped below with everything it started
    )
    try:
        base = f"http://127.0.0.1:{port}"
        scalars = wait_for_tags(base, "scalars", server)
        images = wait_for_tags(base, "images", server)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

    (run,) = scalars  # the logdir is the run itself: one run, named "."
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr"} <= set(scalars[run])
    assert {f"class_acc/{d}" for d in range(10)} <= set(scalars[run])
    assert set(images[run]) == {
        "kernels/first_conv",
        "features/stage1",
        "features/stage2",
        "eval/confusion_matrix",
        "eval/misclassified",
    }
    assert images[run]["eval/confusion_matrix"]["samples"] == 1
