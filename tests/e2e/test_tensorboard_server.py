"""A real viewer: `tensorboard --logdir <run>` on localhost lists a cnnlab run's scalars, images,
histograms, precision-recall curves and projector embeddings."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
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


def wait_for(url: str, server: subprocess.Popen):
    """Poll `url` until it answers something non-empty (TensorBoard loads runs in the background)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        assert server.poll() is None, server.communicate()[1][-2000:]
        try:
            answer = get_json(url)
            if answer:
                return answer
        except (urllib.error.URLError, ConnectionError):
            pass  # not listening yet
        time.sleep(0.5)
    raise AssertionError(f"TensorBoard answered nothing at {url} within {STARTUP_SECONDS} s")


def test_tensorboard_lists_the_runs_scalars_images_histograms_pr_curves_and_embeddings(tmp_path):
    run_dir = tmp_path / "run"
    args = ("trainer.epochs=2", "trainer.visual_every=1", f"hydra.run.dir={run_dir}")
    result = run_cli("train", *args, cwd=tmp_path)
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
        scalars, images, histograms, pr_curves = (
            wait_for(f"{base}/data/plugin/{plugin}/tags", server)
            for plugin in ("scalars", "images", "histograms", "pr_curves")
        )
        (projector_run,) = wait_for(f"{base}/data/plugin/projector/runs", server)
        projector = get_json(f"{base}/data/plugin/projector/info?run={projector_run}")
        # the first embedding's points, as the projector's browser code fetches them (float32 bytes)
        first = projector["embeddings"][0]["tensorName"]
        query = urllib.parse.urlencode({"run": projector_run, "name": first, "num_rows": 1000})
        with urllib.request.urlopen(f"{base}/data/plugin/projector/tensor?{query}", timeout=5) as response:
            points = len(response.read()) // 4
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
    parameters = ("features.0.weight", "features.1.weight", "features.1.bias")  # the first conv, its BN
    assert {tag.split("/")[0] for tag in histograms[run]} == {"weights", "gradients"}
    assert {f"{kind}/{name}" for kind in ("weights", "gradients") for name in parameters} <= set(
        histograms[run]
    ), sorted(histograms[run])
    assert set(pr_curves[run]) == {f"pr_curve/{digit}" for digit in range(10)}
    embeddings = projector["embeddings"]
    assert [e["tensorName"] for e in embeddings] == ["penultimate:00001", "penultimate:00002"]
    shapes = [e["tensorShape"] for e in embeddings]
    assert shapes == [[142, 128]] * 2  # digits' 142 validation images, lenet_modern's 128 features
    assert points == 142 * 128
    assert images[run]["eval/confusion_matrix"]["samples"] == 1
