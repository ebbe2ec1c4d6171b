"""One GPU per concurrent job of a joblib sweep.

The process that launches the sweep counts the GPUs, makes `jobs_per_gpu` slots of each and hands
them to its workers in an environment variable (`POOL_VARIABLE`, inherited by joblib's worker
processes). A worker claims a free slot with an exclusive lock on the slot's file in the sweep's
.jobs/gpus/ and holds it for as long as it lives: joblib reuses its workers for later jobs, and a
process whose CUDA has started cannot switch devices through CUDA_VISIBLE_DEVICES, so the device
belongs to the worker, not to the job. A killed worker's lock goes with it.
"""

import fcntl
import os
from pathlib import Path

from cnnlab.errors import ConfigError
from cnnlab.runs.jobs import JOBS_DIR

POOL_VARIABLE = "CNNLAB_GPU_POOL"  # the slots' devices, e.g. "0,1,0,1": 2 GPUs × 2 jobs per GPU
_held: list = []  # [the slot's open lock file, its device] once this process claimed one


def visible_devices(count: int) -> list[str]:
    """The ids CUDA_VISIBLE_DEVICES takes for the `count` GPUs this process sees (its own
    CUDA_VISIBLE_DEVICES, if set, already chose them)."""
    chosen = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return chosen[:count] if chosen else [str(index) for index in range(count)]


def slots(devices: list[str], jobs_per_gpu: int) -> list[str]:
    """Each slot's device, the first slot of every GPU before any second one."""
    return [device for _ in range(jobs_per_gpu) for device in devices]


def concurrent_jobs(typed: int | None, pool: list[str]) -> int:
    """joblib's n_jobs: one job per slot, or the `typed` hydra.launcher.n_jobs when the slots allow it."""
    if typed is None or typed == -1:
        return len(pool)
    if typed > len(pool):
        gpus = len(set(pool))
        raise ConfigError(
            f"hydra.launcher.n_jobs={typed} runs {typed} jobs at once, but {gpus} GPU(s) × "
            f"sweep.jobs_per_gpu={len(pool) // gpus} give {len(pool)} places: lower hydra.launcher.n_jobs, "
            f"or let small jobs share a GPU with sweep.jobs_per_gpu={-(-typed // gpus)}"
        )
    return typed


def claim_gpu(sweep_dir: Path) -> str | None:
    """This worker's GPU (its CUDA_VISIBLE_DEVICES set to it); None outside a GPU pool."""
    pool = [device for device in os.environ.get(POOL_VARIABLE, "").split(",") if device]
    if not pool:
        return None
    if not _held:
        folder = sweep_dir / JOBS_DIR / "gpus"
        folder.mkdir(parents=True, exist_ok=True)
        for number, device in enumerate(pool):
            lock = open(folder / f"slot-{number}.lock", "w")  # noqa: SIM115 (held for the process's life)
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            _held[:] = [lock, device]
            os.environ["CUDA_VISIBLE_DEVICES"] = device
            break
        else:
            raise ConfigError(
                f"all {len(pool)} GPU places of the sweep are taken (more joblib workers than places): "
                "lower hydra.launcher.n_jobs or raise sweep.jobs_per_gpu"
            )
    return _held[1]
