"""Each multirun job's record on disk: its status and error, and which process ran it when.

Launchers run jobs in this process (basic), in worker processes (joblib) or on other machines
(submitit, SLURM), so a job's outcome cannot travel back in memory. Instead each job writes
`<sweep dir>/.jobs/<num>.json` itself: once when it starts (status running) and again when it ends
(finished, failed or interrupted, with the error's line); a job that failed before writing anything
else still has a record. A job killed on the way (out of memory, a time limit, kill -9) cannot write:
its record says running, and it is read as interrupted once its process is gone. A sweep plans its
jobs when it starts (status pending), so jobs never launched (a Ctrl-C, a crash) are listed too. A
resume of a job's run directory updates its record. A sweep launched again into its directory
(a resumed sweep) skips its finished jobs and runs the others again, counting each job's attempts.
"""

import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from hydra.core.hydra_config import HydraConfig

from cnnlab.console import write_json
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.runs.hparams import override_values

JOBS_DIR = ".jobs"


@dataclass
class JobRecord:
    """One multirun job: what it ran, where, and how it ended."""

    num: int
    label: str  # the job's overrides as one word, e.g. optimizer.lr=0.1,model=lenet
    overrides: list[str]
    directory: str  # the job's output directory, relative to the sweep directory
    status: str  # pending | running | finished | failed | interrupted
    error: str | None
    pid: int
    host: str
    started: float  # Unix time
    ended: float | None
    attempts: int = 1  # launches of the job, counting retries and resumed sweeps (0: pending)
    gpu: str | None = None  # the CUDA_VISIBLE_DEVICES of a joblib worker with a GPU of its own
    result: float | None = None  # the job's return value, if a number (train: the best val accuracy)

    @property
    def summary(self) -> str:
        """`job N (overrides): error`, the line a failed job is listed with."""
        default = "was never launched" if self.status == "pending" else "did not finish (killed?)"
        return f"job {self.num} ({self.label}): {self.error or default}"


@contextmanager
def recorded_job(earlier: JobRecord | None) -> Iterator[JobRecord]:
    """Record the current Hydra job: running now, then finished, or failed with the error's line;
    `earlier`: the job's record before this attempt (None: none)."""
    hydra = HydraConfig.get()
    sweep_dir = Path(hydra.sweep.dir).absolute()
    record = JobRecord(
        num=hydra.job.num,
        label=hydra.job.override_dirname or "defaults",
        overrides=list(hydra.overrides.task),
        directory=os.path.relpath(hydra.runtime.output_dir, sweep_dir),
        status="running",
        error=None,
        pid=os.getpid(),
        host=socket.gethostname(),
        started=time.time(),
        ended=None,
        attempts=(earlier.attempts if earlier else 0) + 1,
    )
    _write(sweep_dir, record)
    try:
        yield record
    except BaseException as error:
        message = str(error) if isinstance(error, CnnlabError) else f"{type(error).__name__}: {error}"
        stopped = isinstance(error, KeyboardInterrupt) or getattr(error, "exit_code", 0) >= 128
        record.status = "interrupted" if stopped else "failed"
        record.error = (message.strip().splitlines() or [""])[0]
        raise
    else:
        record.status = "finished"
    finally:
        record.ended = time.time()
        _write(sweep_dir, record)


def process_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def plan_jobs(sweep_dir: Path, jobs: list[list[str]], exclude: list[str]) -> None:
    """Record each job a sweep will launch as pending (a job's own record replaces its plan); its
    label is Hydra's override_dirname, without the `exclude`d keys."""
    for num, overrides in enumerate(jobs):
        if (sweep_dir / JOBS_DIR / f"{num}.json").exists():
            continue  # a sweep run again into its directory: the job's record stands
        label = ",".join(sorted(o for o in overrides if o.split("=", 1)[0] not in exclude)) or "defaults"
        record = JobRecord(
            num, label, overrides, f"{num}_{label}", "pending", None, 0, "", time.time(), None, attempts=0
        )
        _write(sweep_dir, record)


def same_job(record: JobRecord, overrides: list[str], exclude: list[str]) -> bool:
    """Whether `record` is of a job with these overrides (but for the `exclude`d keys, which name no
    setting: trainer.resume, sweep.retries)."""
    return override_values(record.overrides, exclude) == override_values(overrides, exclude)


def earlier_job(sweep_dir: Path, num: int, overrides: list[str], exclude: list[str]) -> JobRecord | None:
    """Job `num`'s record from an earlier launch of this sweep (None: none, or a plan not yet run)."""
    for record in read_jobs(sweep_dir):
        if record.num == num and record.status != "pending" and same_job(record, overrides, exclude):
            return record
    return None


def check_relaunch(sweep_dir: Path, jobs: list[list[str]], exclude: list[str]) -> None:
    """A sweep launched again into `sweep_dir` must be the same sweep, none of whose jobs still runs."""
    for record in read_jobs(sweep_dir):
        if record.num < len(jobs) and not same_job(record, jobs[record.num], exclude):
            raise ConfigError(
                f"hydra.sweep.dir={sweep_dir} holds a different sweep (its job {record.num} ran "
                f"{record.label}): resume it with the command that launched it, or choose a new "
                "hydra.sweep.dir"
            )
    check_none_running(sweep_dir)


def check_none_running(sweep_dir: Path) -> None:
    """No job of the sweep in `sweep_dir` may still run when the sweep is launched again."""
    for record in read_jobs(sweep_dir):
        if record.status == "running":
            raise ConfigError(
                f"job {record.num} of the sweep in {sweep_dir} is still running (PID {record.pid} on "
                f"{record.host}): wait for it to end, or stop it, before launching the sweep again"
            )


def read_jobs(sweep_dir: Path) -> list[JobRecord]:
    """The job records of one sweep directory, by job number (unreadable ones skipped); a running
    job whose process is gone is read as interrupted."""
    records = []
    for path in (sweep_dir / JOBS_DIR).glob("*.json"):
        try:
            record = JobRecord(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):  # half-copied or foreign file: not a job of ours
            continue
        if (
            record.status == "running"
            and record.host == socket.gethostname()
            and not process_alive(record.pid)
        ):
            record.status = "interrupted"
            record.error = (
                f"its process (PID {record.pid}) is gone: killed (out of memory, kill -9, a time limit?)"
            )
        records.append(record)
    return sorted(records, key=lambda record: record.num)


def update_resumed_job(run_dir: Path, status: str, error: str | None) -> None:
    """After a resume of `run_dir`: if it is a multirun job's directory, its record takes the outcome."""
    sweep_dir = run_dir.absolute().parent
    for record in read_jobs(sweep_dir):
        if (sweep_dir / record.directory).absolute() == run_dir.absolute():
            record.status, record.error, record.ended = status, error, time.time()
            record.pid, record.host = os.getpid(), socket.gethostname()
            _write(sweep_dir, record)


def _write(sweep_dir: Path, record: JobRecord) -> None:
    (sweep_dir / JOBS_DIR).mkdir(parents=True, exist_ok=True)
    write_json(sweep_dir / JOBS_DIR / f"{record.num}.json", asdict(record))
