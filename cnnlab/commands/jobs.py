"""Each multirun job's record on disk: its status and error, and which process ran it when.

Launchers run jobs in this process (basic), in worker processes (joblib) or on other machines
(submitit, SLURM), so a job's outcome cannot travel back in memory. Instead each job writes
`<sweep dir>/.jobs/<num>.json` itself: once when it starts (status running) and again when it ends
(finished or failed, with the error's line). A job killed on the way (out of memory, a cluster's
time limit) keeps status running; a job that failed before writing anything else still has a record.
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

from cnnlab.errors import CnnlabError
from cnnlab.training.logging import write_json

JOBS_DIR = ".jobs"


@dataclass
class JobRecord:
    """One multirun job: what it ran, where, and how it ended."""

    num: int
    label: str  # the job's overrides as one word, e.g. optimizer.lr=0.1,model=lenet
    overrides: list[str]
    directory: str  # the job's output directory, relative to the sweep directory
    status: str  # running | finished | failed
    error: str | None
    pid: int
    host: str
    started: float  # Unix time
    ended: float | None

    @property
    def summary(self) -> str:
        """`job N (overrides): error`, the line a failed job is listed with."""
        return f"job {self.num} ({self.label}): {self.error or 'did not finish (killed?)'}"


@contextmanager
def recorded_job() -> Iterator[JobRecord]:
    """Record the current Hydra job: running now, then finished, or failed with the error's line."""
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
    )
    _write(sweep_dir, record)
    try:
        yield record
    except BaseException as error:
        message = str(error) if isinstance(error, CnnlabError) else f"{type(error).__name__}: {error}"
        record.status, record.error = "failed", (message.strip().splitlines() or [""])[0]
        raise
    else:
        record.status = "finished"
    finally:
        record.ended = time.time()
        _write(sweep_dir, record)


def read_jobs(sweep_dir: Path) -> list[JobRecord]:
    """The job records of one sweep directory, by job number (unreadable ones skipped)."""
    records = []
    for path in (sweep_dir / JOBS_DIR).glob("*.json"):
        try:
            records.append(JobRecord(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):  # half-copied or foreign file: not a job of ours
            continue
    return sorted(records, key=lambda record: record.num)


def _write(sweep_dir: Path, record: JobRecord) -> None:
    (sweep_dir / JOBS_DIR).mkdir(parents=True, exist_ok=True)
    write_json(sweep_dir / JOBS_DIR / f"{record.num}.json", asdict(record))
