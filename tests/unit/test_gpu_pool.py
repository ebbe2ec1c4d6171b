"""The GPU places of a joblib sweep: their order, n_jobs, and one worker process per place."""

import os
import subprocess
import sys

import pytest

from cnnlab.errors import ConfigError
from cnnlab.runs import gpu_pool

# A worker process: claim a place, print its device, hold it until stdin closes.
WORKER = (
    "import sys; from pathlib import Path; from cnnlab.runs.gpu_pool import claim_gpu\n"
    "try:\n    print(claim_gpu(Path(sys.argv[1])), flush=True)\n"
    "except Exception as error:\n    print(type(error).__name__, error, flush=True)\n"
    "sys.stdin.read()"
)


def test_each_gpu_gets_a_first_job_before_any_gets_a_second():
    assert gpu_pool.slots(["0", "1"], 1) == ["0", "1"]
    assert gpu_pool.slots(["0", "1"], 2) == ["0", "1", "0", "1"]


def test_visible_devices_keep_the_users_choice(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert gpu_pool.visible_devices(3) == ["0", "1", "2"]
    assert gpu_pool.visible_devices(0) == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5, 7")
    assert gpu_pool.visible_devices(2) == ["5", "7"]


def test_n_jobs_defaults_to_the_places_and_may_be_lower_but_not_higher():
    pool = gpu_pool.slots(["0", "1"], 2)
    assert gpu_pool.concurrent_jobs(None, pool) == 4
    assert gpu_pool.concurrent_jobs(-1, pool) == 4  # joblib's "all cores" means all places here
    assert gpu_pool.concurrent_jobs(3, pool) == 3
    with pytest.raises(
        ConfigError, match=r"n_jobs=5 runs 5 jobs at once, but 2 GPU\(s\) × sweep\.jobs_per_gpu=2"
    ):
        gpu_pool.concurrent_jobs(5, pool)
    with pytest.raises(ConfigError, match=r"sweep\.jobs_per_gpu=3"):
        gpu_pool.concurrent_jobs(3, ["0"])


def test_concurrent_workers_claim_different_places_and_a_worker_keeps_its_own(tmp_path):
    env_pool = {"CNNLAB_GPU_POOL": "4,6"}
    workers, answers = [], []
    try:
        for _ in range(3):
            worker = subprocess.Popen(
                [sys.executable, "-c", WORKER, str(tmp_path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env={**os.environ, **env_pool},
            )
            workers.append(worker)
            answers.append(worker.stdout.readline().strip())
        assert answers[:2] == ["4", "6"]
        assert answers[2].startswith("ConfigError all 2 GPU places of the sweep are taken")
        workers[0].communicate("")  # a worker that ends frees its place for the next one
        late = subprocess.run(
            [sys.executable, "-c", WORKER, str(tmp_path)],
            input="",
            capture_output=True,
            text=True,
            env={**os.environ, **env_pool},
        )
        assert late.stdout.strip() == "4"
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.communicate("")


def test_outside_a_gpu_pool_nothing_is_claimed(tmp_path, monkeypatch):
    monkeypatch.delenv("CNNLAB_GPU_POOL", raising=False)
    assert gpu_pool.claim_gpu(tmp_path) is None
    assert not (tmp_path / ".jobs").exists()
