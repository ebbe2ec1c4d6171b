"""One GPU per concurrent job of a joblib sweep, on a machine whose GPU count the test sets (the jobs
themselves train on the CPU): n_jobs, each worker's CUDA_VISIBLE_DEVICES, and the refusals."""

import os
import subprocess
import sys

from helpers import job_records, one_error_line, sweep_dir

QUICK = ["trainer.epochs=1", "trainer.device=cpu", "trainer.visual_every=null"]
# The sweep's own process counts this many GPUs; its joblib workers are fresh interpreters.
FAKE_GPUS = """import sys, torch
gpus = int(sys.argv.pop(1))
torch.cuda.device_count = lambda: gpus
from cnnlab.cli import main
raise SystemExit(main())"""


def sweep_with_gpus(cwd, gpus: int, *args: str, visible: str | None = None) -> subprocess.CompletedProcess:
    """`cnnlab train -m hydra/launcher=joblib ARGS` where torch counts `gpus` GPUs."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CNNLAB_DATA_DIR": str(cwd / "data")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        env["CUDA_VISIBLE_DEVICES"] = visible
    argv = [sys.executable, "-c", FAKE_GPUS, str(gpus), "train", "-m", "hydra/launcher=joblib", *args]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def overlapping(a: dict, b: dict) -> bool:
    return a["started"] < b["ended"] and b["started"] < a["ended"]


def test_each_concurrent_job_has_its_own_gpu_and_n_jobs_is_the_gpu_count(tmp_path):
    result = sweep_with_gpus(tmp_path, 2, "trainer.seed=0,1,2,3", *QUICK)
    assert result.returncode == 0, result.stderr
    assert "Joblib.Parallel(n_jobs=2," in result.stdout + result.stderr
    assert "GPUs 0,1: 2 job(s) at once, 1 a GPU" in result.stdout
    records = job_records(sweep_dir(tmp_path))
    assert [r["status"] for r in records] == ["finished"] * 4
    assert {r["gpu"] for r in records} == {"0", "1"}
    gpu_of_worker = {}
    for record in records:  # a worker keeps its GPU for all its jobs
        assert gpu_of_worker.setdefault(record["pid"], record["gpu"]) == record["gpu"]
    assert len(gpu_of_worker) == 2
    for a in records:
        for b in records:
            if a["num"] < b["num"] and overlapping(a, b):
                assert a["gpu"] != b["gpu"], (a, b)


def test_small_jobs_share_a_gpu_when_asked_and_the_users_devices_are_kept(tmp_path):
    args = ["trainer.seed=0,1", "sweep.jobs_per_gpu=2", *QUICK]
    result = sweep_with_gpus(tmp_path, 1, *args, visible="3")
    assert result.returncode == 0, result.stderr
    assert "Joblib.Parallel(n_jobs=2," in result.stdout + result.stderr
    records = job_records(sweep_dir(tmp_path))
    assert [r["gpu"] for r in records] == ["3", "3"]
    assert len({r["pid"] for r in records}) == 2  # two workers on the one GPU


def test_more_jobs_at_once_than_gpu_places_is_refused_in_one_line(tmp_path):
    result = sweep_with_gpus(tmp_path, 2, "hydra.launcher.n_jobs=3", "trainer.seed=0,1,2", *QUICK)
    assert result.returncode == 2
    assert one_error_line(result.stderr) == (
        "cnnlab train: error: hydra.launcher.n_jobs=3 runs 3 jobs at once, but 2 GPU(s) × "
        "sweep.jobs_per_gpu=1 give 2 places: lower hydra.launcher.n_jobs, or let small jobs share a GPU "
        "with sweep.jobs_per_gpu=2"
    )


def test_without_gpus_the_sweep_keeps_joblibs_core_split(tmp_path):
    result = sweep_with_gpus(tmp_path, 0, "hydra.launcher.n_jobs=2", "trainer.seed=0,1", *QUICK)
    assert result.returncode == 0, result.stderr
    assert "GPUs" not in result.stdout
    assert "Joblib.Parallel(n_jobs=2," in result.stdout + result.stderr
    assert {r["gpu"] for r in job_records(sweep_dir(tmp_path))} == {None}
