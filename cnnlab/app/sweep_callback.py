"""Hydra callback (configs/hydra/cnnlab.yaml): after every multirun, its report and its failed jobs.

It runs in the process that launched the sweep, whichever launcher ran the jobs (in process, joblib
workers, submitit or SLURM), and learns how each job ended from the job records on disk
(cnnlab.runs.jobs), never from memory.
"""

import os
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict, read_write

from cnnlab.console import console, print_error
from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.runs import gpu_pool, report
from cnnlab.runs.jobs import check_none_running, check_relaunch, plan_jobs, read_jobs

# The jobs of this process's multirun that did not finish, one line each: HydraCommand empties the
# list before it runs Hydra and exits 1 when the multirun leaves any.
failed_jobs: list[str] = []
# The multirun in progress in this process: [sweep directory, command name] (empty: none).
active: list = []


class SweepReport(Callback):
    """Prints `cnnlab report <sweep dir>` and collects the failed jobs when a multirun ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse a SLURM launch on a machine that is not part of a SLURM cluster; quiet Optuna's
        info lines; plan the jobs (a grid sweep launched again into its directory: check it is the same);
        give each concurrent joblib job its own GPU."""
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if launcher.endswith(".SlurmLauncher") and shutil.which("srun") is None:
            print_error(
                f"cnnlab {config.hydra.job.name}",
                "this SLURM launcher submits jobs with sbatch/srun, which this machine lacks: run the sweep "
                "on the cluster's login node (hydra/launcher=submitit_local runs the same jobs here)",
            )
            raise SystemExit(2)  # as HydraCommand does: past Hydra's error report, which prints a traceback
        sweeper = str(config.hydra.sweeper.get("_target_", ""))
        if "optuna" in sweeper.lower() and not config.hydra.verbose:
            import optuna  # its own coloured handler, outside Hydra's logging config

            optuna.logging.set_verbosity(optuna.logging.WARNING)
        sweep_dir = Path(config.hydra.sweep.dir)
        command = f"cnnlab {config.hydra.job.name}"
        try:
            if sweeper.endswith(".BasicSweeper"):
                jobs = planned_jobs(list(config.hydra.overrides.task))
                exclude = list(config.hydra.job.config.override_dirname.exclude_keys)
                check_relaunch(sweep_dir, jobs, exclude)
                plan_jobs(sweep_dir, jobs, exclude)
            elif sweeper.endswith(".ContinuedOptunaSweeper") and config.hydra.sweeper.storage:
                check_none_running(sweep_dir)  # its study is kept: the search continues (optuna_study)
            elif read_jobs(sweep_dir):
                raise ConfigError(
                    f"hydra.sweep.dir={sweep_dir} holds an earlier sweep, and only a grid sweep or an "
                    "Optuna search whose study is kept (hparams_search=optuna hydra.sweeper.storage="
                    "sqlite:///optuna.db) can be launched again into its directory: choose a new "
                    "hydra.sweep.dir"
                )
            if launcher.endswith(".JoblibLauncher"):
                share_gpus(config)
        except ConfigError as error:
            print_error(command, str(error))
            raise SystemExit(2) from None
        active[:] = [sweep_dir, config.hydra.job.name]

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Report the sweep's runs (if it made any) and note which jobs failed."""
        os.environ.pop(gpu_pool.POOL_VARIABLE, None)
        report_sweep(Path(config.hydra.sweep.dir), config.hydra.job.name)


def share_gpus(config: DictConfig) -> None:
    """On a machine with GPUs, joblib's workers get one GPU place each (sweep.jobs_per_gpu places a
    GPU) and n_jobs defaults to the number of places; without GPUs, joblib's core split stands."""
    import torch  # only here: a CPU sweep's launcher never needs it

    devices = gpu_pool.visible_devices(torch.cuda.device_count())
    if not devices:
        return
    jobs_per_gpu = config.sweep.jobs_per_gpu if "sweep" in config else 1  # checked with each job's config
    pool = gpu_pool.slots(devices, jobs_per_gpu)
    n_jobs = gpu_pool.concurrent_jobs(config.hydra.launcher.get("n_jobs"), pool)  # joblib's -1: all places
    with read_write(config.hydra), open_dict(config.hydra.launcher):
        config.hydra.launcher.n_jobs = n_jobs  # read when Hydra makes the launcher, after this callback
    os.environ[gpu_pool.POOL_VARIABLE] = ",".join(pool)
    console.print(
        f"GPUs {','.join(devices)}: {n_jobs} job(s) at once, {jobs_per_gpu} a GPU "
        "(CUDA_VISIBLE_DEVICES per worker)"
    )


def report_sweep(sweep_dir: Path, command: str) -> None:
    """Print the sweep's report and collect its jobs that did not finish into `failed_jobs`."""
    active.clear()
    failed_jobs[:] = [job.summary for job in read_jobs(sweep_dir) if job.status != "finished"]
    try:
        runs = report.collect(sweep_dir)
        if runs:  # a sweep of `cnnlab summary`, say, trains nothing
            report.publish(runs, sweep_dir)
    except (CnnlabError, OSError) as error:
        print_error(f"cnnlab {command}", f"no sweep report: {error}")


def report_stopped_sweep() -> None:
    """The report of a multirun stopped before its end (Ctrl-C, SIGTERM): its runs so far."""
    if active:
        report_sweep(*active)


def planned_jobs(overrides: list[str]) -> list[list[str]]:
    """Each job's overrides, as the basic sweeper will launch them (in its order)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
