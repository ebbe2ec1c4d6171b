"""Runs a command as a Hydra app: every Hydra flag works, and every bad input is one line, exit 2."""

import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from omegaconf import DictConfig

from cnnlab.app.help import command_help
from cnnlab.console import console, print_error, print_warning
from cnnlab.errors import CnnlabError, ConfigError, did_you_mean, file_error, first_line, unknown

CONFIG_MODULE = "cnnlab.configs"
# Flags after which Hydra runs no job: nothing to validate first.
_NO_JOB_FLAGS = ("help", "hydra_help", "info", "shell_completion")


@dataclass
class HydraCommand:
    """A cnnlab command run as a Hydra app: its module (cnnlab.commands.<config name>) has `check(cfg)`,
    which validates before any work and returns the plan to run (the parsed values, or the config
    itself), `run(plan)`, which does the work, and optionally `prepare(overrides, multirun)`,
    which rewrites the user's overrides before composing (e.g. a resume adds the run's own), and
    `continue_job(cfg)`, which makes a sweep job run again continue its work. The module is imported
    only when a job runs: `--help` and shell completion never import torch."""

    name: str
    about: str  # one line, for `cnnlab --help`
    config_name: str
    unlisted_groups: tuple[str, ...] = ()  # composed for another group's sake, not options (help omits them)

    @property
    def commands(self) -> ModuleType:
        """The command's module, cnnlab.commands.<config name> (imported on first use)."""
        return importlib.import_module(f"cnnlab.commands.{self.config_name}")

    def check(self, cfg: DictConfig) -> Any:
        """Validate `cfg` as the command does before any work; return its plan."""
        return self.commands.check(cfg)

    def run(self, plan: Any) -> Any:
        """Do the command's work on the plan its check returned."""
        return self.commands.run(plan)

    def main(self, argv: list[str]) -> int:
        """Validate every job's config, then hand argv to Hydra; return the exit code."""
        import hydra
        from hydra._internal.utils import get_args_parser

        from cnnlab.app import sweep_callback

        args = get_args_parser().parse_args(argv)
        if args.help:
            print(command_help(self.name, self.config_name, self.unlisted_groups))
            return 0
        runs_a_job = not any(getattr(args, flag) for flag in _NO_JOB_FLAGS)
        if runs_a_job and not args.cfg and console.is_terminal:  # PyTorch takes seconds to import
            console.print(f"cnnlab {self.name}: starting…", style="dim")
        try:
            overrides = args.overrides
            if runs_a_job:
                prepare = getattr(self.commands, "prepare", lambda given, _: given)
                overrides = prepare(overrides, args.multirun)
                for number, job in enumerate(_expand_sweep(overrides) if args.multirun else [overrides]):
                    cfg = self.compose(job)
                    if not args.cfg:  # --cfg only prints the config: show it even when incomplete
                        self.check(cfg)
                    if number == 0:  # after the checks: a key they refuse is an error, not a warning
                        for key in _unread_keys(cfg, job):
                            print_warning(
                                f"cnnlab {self.name}",
                                f"+{key} adds a key cnnlab does not read: it changes "
                                f"nothing (`cnnlab {self.name} --cfg job` lists the keys it reads)",
                            )
        except CnnlabError as error:
            print_error(f"cnnlab {self.name}", str(error))
            return error.exit_code
        except OSError as error:
            print_error(f"cnnlab {self.name}", file_error(error))
            return 2
        failure = _unwritable_output_dir(overrides, args.multirun)
        if failure:
            print_error(f"cnnlab {self.name}", failure)
            return 2
        flags = [a for a in argv if a not in args.overrides]
        # Shell completion registers, and queries, the program itself (cnnlab.cli routes its queries here).
        program = "cnnlab" if args.shell_completion else f"cnnlab {self.name}"
        sys.argv = [program, *flags, *overrides]
        sweep_callback.failed_jobs.clear()
        try:
            hydra.main(
                config_path=f"pkg://{CONFIG_MODULE}", config_name=self.config_name, version_base="1.3"
            )(self._task)()
        except (SystemExit, KeyboardInterrupt):
            sweep_callback.report_stopped_sweep()  # a stopped multirun still reports its runs
            raise
        # A multirun's jobs may have run in other processes: the callback read how they ended from disk.
        failed = sweep_callback.failed_jobs
        if failed:
            print_error(f"cnnlab {self.name}", f"{len(failed)} job(s) failed:")
            for line in failed:
                print_error(f"cnnlab {self.name}", line)
            return 1
        return 0

    def compose(self, overrides: list[str]) -> DictConfig:
        """Compose the config for `overrides` (no Hydra run), as a one-line ConfigError on failure."""
        from hydra import compose, initialize_config_module

        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            try:
                return compose(self.config_name, overrides=overrides)
            except Exception as error:  # Hydra's composition errors share no narrower base
                failure = error
        raise _one_line(failure, self, overrides) from None

    def _task(self, cfg: DictConfig) -> Any:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.get().mode != RunMode.MULTIRUN:
            try:
                return self._work(cfg)
            except CnnlabError as error:
                print_error(f"cnnlab {self.name}", str(error))
                raise SystemExit(error.exit_code) from None
        return self._job(cfg)

    def _job(self, cfg: DictConfig) -> Any:
        """One job of a multirun, recorded; skipped when an earlier launch of the sweep finished it, run
        again (its command's `continue_job(cfg)` picks up its work) when it did not, and retried up to
        sweep.retries times when it fails."""
        from hydra.core.hydra_config import HydraConfig

        from cnnlab.runs.gpu_pool import claim_gpu
        from cnnlab.runs.jobs import earlier_job, recorded_job
        from cnnlab.training.loop import Diverged

        hydra = HydraConfig.get()
        exclude = list(hydra.job.config.override_dirname.exclude_keys)
        job = earlier_job(Path(hydra.sweep.dir), hydra.job.num, list(hydra.overrides.task), exclude)
        if job is not None and job.status == "finished":
            console.print(f"job {job.num} ({job.label}): finished when the sweep last ran: skipped")
            return None
        retries = cfg.sweep.retries if "sweep" in cfg else 0
        for attempt in range(retries + 1):
            if job is not None:  # an attempt before this one ran: the run continues from what it left
                cfg = getattr(self.commands, "continue_job", lambda cfg: cfg)(cfg)
            try:
                with recorded_job(job) as job:
                    job.gpu = claim_gpu(Path(hydra.sweep.dir))  # the worker's: claimed by its first job
                    if job.gpu is not None:
                        console.print(f"job {job.num}: GPU {job.gpu} (CUDA_VISIBLE_DEVICES={job.gpu})")
                    result = self._work(cfg)
                    job.result = float(result) if isinstance(result, int | float) else None
                    return result
            except CnnlabError as error:
                print_error(f"cnnlab {self.name}", job.summary)
                if error.exit_code >= 128:  # Ctrl-C or SIGTERM: the user stops the whole sweep
                    raise SystemExit(error.exit_code) from None
                if isinstance(error, Diverged) and not (retries and cfg.sweep.retry_diverged):
                    break  # a run diverges again where it did (exact resume), unless asked to try
            except Exception:  # not foreseen (a bug, a library's error): recorded, and the sweep goes on
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                print_error(f"cnnlab {self.name}", job.summary)
            if attempt < retries:
                console.print(f"job {job.num} ({job.label}): retrying (retry {attempt + 1} of {retries})")
        # The sweep goes on; Optuna's sweeper records a trial that returns None as failed.
        return None

    def _work(self, cfg: DictConfig) -> Any:
        plan = self.check(cfg)
        try:
            return self.run(plan)
        except OSError as error:  # a full disk, a read-only or vanished directory: one line, exit 2
            raise CnnlabError(file_error(error)) from None


@dataclass
class PlainCommand:
    """A cnnlab command without Hydra (its module, cnnlab.commands.<name>, parses its own argv)."""

    name: str
    about: str

    def main(self, argv: list[str]) -> int:
        """Run the command's `main(argv)`; return its exit code."""
        return importlib.import_module(f"cnnlab.commands.{self.name}").main(argv)


def _unwritable_output_dir(overrides: list[str], multirun: bool) -> str | None:
    """One line when the typed hydra.run.dir (hydra.sweep.dir with -m) cannot be created, before Hydra
    tries to (its failure is a traceback); None when it can, or when none was typed."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    typed = [o.split("=", 1)[1].strip("'\"") for o in overrides if o.startswith(f"{key}=")]
    if not typed or "${" in typed[-1]:
        return None
    try:
        Path(typed[-1]).expanduser().mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"{key}={typed[-1]} cannot be created ({error.strerror or error}); choose a writable directory"
    return None


def _unread_keys(cfg: DictConfig, overrides: list[str]) -> list[str]:
    """Keys typed as `+key=value` that hold a value: no config of cnnlab's defines them, so no code
    reads them (`+experiment=…` and other groups are not values)."""
    from omegaconf import OmegaConf

    added = [o[1:].split("=", 1)[0] for o in overrides if o.startswith("+") and not o.startswith("++")]
    return [
        key
        for key in added
        if not key.startswith("hydra.") and not isinstance(OmegaConf.select(cfg, key), DictConfig | None)
    ]


def _expand_sweep(overrides: list[str]) -> list[list[str]]:
    """Each job's overrides of a -m sweep (choice and range sweeps; others are checked per job)."""
    from cnnlab.app import sweep_callback

    try:
        return sweep_callback.planned_jobs(overrides)
    except Exception as error:
        if "does not support sweep type" in str(error):  # e.g. interval(): the sweeper's business
            return [[o for o in overrides if "(" not in o]]
        raise ConfigError(f"cannot parse the overrides: {first_line(error)}") from None


def _one_line(error: Exception, command: HydraCommand, overrides: list[str]) -> ConfigError:
    """Turn a Hydra/OmegaConf composition error into one actionable line."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(error, MissingConfigException) and error.options is not None:
        group, _, option = (error.missing_cfg_file or "").rpartition("/")
        options = sorted(error.options)
        plugins = " (Hydra's launcher/sweeper plugins: pip install 'cnnlab[sweep,slurm]')"
        return ConfigError(
            unknown(group, option, options)
            + (plugins if group.startswith("hydra/") and not did_you_mean(option, options) else "")
        )
    if "Ambiguous value for argument" in str(error):  # key=a,b without -m
        typed = str(error).split("'")[1]
        return ConfigError(
            f"{typed}: a comma-separated list is a sweep; add -m (cnnlab {command.name} -m {typed}) to run "
            "one job per value, or write a list value as key=[a,b]"
        )
    if isinstance(error, OverrideParseException):
        return ConfigError(f"{first_line(error)}; overrides look like key=value (e.g. optimizer.lr=0.01)")
    message = str(error)
    if "Could not override" in message or "Could not append" in message:
        key = message.split("'")[1]
        known = _all_keys(command, [o for o in overrides if not o.lstrip("+~").startswith(key)])
        leaf = key.rpartition(".")[2]
        same_leaf = [k for k in known if k.rpartition(".")[2] == leaf]
        hint = f" (did you mean {same_leaf[0]}?)" if same_leaf else did_you_mean(key, known)
        return ConfigError(
            f"unknown config key {key!r}{hint}; `cnnlab {command.name} --cfg job` lists every key "
            f"(use +{key}=… to add a new one)"
        )
    if isinstance(error, OmegaConfBaseException):
        return ConfigError(f"invalid config: {first_line(error)}")
    return ConfigError(f"invalid overrides: {first_line(error)}")


def _all_keys(command: HydraCommand, overrides: list[str]) -> list[str]:
    """Every dotted key of the config composed without the offending override."""
    try:
        cfg = command.compose(overrides)
    except CnnlabError:
        return []

    def walk(node, prefix: str):
        for k in node:
            path = f"{prefix}{k}"
            child = node._get_node(k)
            if isinstance(child, DictConfig):
                yield from walk(child, f"{path}.")
            else:
                yield path

    return list(walk(cfg, ""))
