"""Resuming a run: finding it, and reconciling the resume's command line with the run's own config.

A resume continues the run exactly as it was configured: its config is the one saved in the
checkpoint (config.yaml holds the same), not a new composition of cnnlab's defaults. An override typed
on the resume command line may change only what a continuation can honour exactly: RESUMABLE_CHANGES.
Every other typed change is refused with one line naming the key; applied changes are recorded.
"""

from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from cnnlab.errors import ConfigError
from cnnlab.runs.jobs import JOBS_DIR
from cnnlab.runs.layout import LAST, RunDir, run_roots

# Keys a resume may change: none of them alters what the remaining steps compute, given the same data.
RESUMABLE_CHANGES = (
    "trainer.epochs",  # train longer (or stop sooner); refused where the schedule spans the run's length
    "trainer.visual_every",
    "trainer.checkpoint_every_steps",
    "trainer.threads",
    "trainer.device",  # e.g. a GPU run continued on a CPU
    "data_dir",  # the same files, moved
    "dataset.loader.root",
    "dataset.loader.download",
    "dataset.loader.cache_dir",
    "dataset.loader.workers",
    "sweep.retries",  # how a sweep treats the job, not what it computes
    "sweep.retry_diverged",
    "sweep.jobs_per_gpu",
)
# Options added to cnnlab after a run was saved take, for that run, the value that reproduces how it
# ran before they existed (a run saved before validation splits validated on the test split; LeNet
# had no batch normalization; no model zeroed its classifier or residual branches).
BEFORE_THEY_EXISTED = {
    "dataset.val_fraction": 0,
    "dataset.split_seed": 0,
    "model.batch_norm": False,
    "model.zero_init_head": False,
    "model.zero_init_residual": False,
    "augment.name": "none",  # the augment group: runs before it trained on their images as they are
}
# Schedules whose every step depends on the run's length in epochs.
_LENGTH_SCHEDULES = ("cosine", "onecycle")


def _quote(path: Path) -> str:
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_checkpoint(target: Path) -> Path:
    """The checkpoint a resume of `target` loads: the file named, or a run directory's last.pt."""
    checkpoint = target if target.suffix == ".pt" else RunDir(target).last
    if not checkpoint.is_file():
        raise ConfigError(
            f"trainer.resume={target}: no {checkpoint.name} in {checkpoint.parent}; give a cnnlab run "
            "directory (outputs/train/<date>/<time>), a checkpoint in it, or trainer.resume=latest"
        )
    return checkpoint


def resume_overrides(target: Path, extra: list[str]) -> list[str]:
    """The overrides of a resume of `target`: the user's `extra`, the checkpoint, and the run's own
    directory (whose .hydra/ keeps the run's original record)."""
    checkpoint = resume_checkpoint(target)
    return [
        *extra,
        f"trainer.resume={_quote(checkpoint)}",
        f"hydra.run.dir={_quote(checkpoint.parent)}",
        "hydra.output_subdir=null",
    ]


def sweep_resume_overrides(target: str, extra: list[str]) -> list[str]:
    """The overrides that launch a sweep again into its directory `target` (a path, or latest: the
    sweep under outputs/ whose jobs ran last), after the user's `extra` (the sweep's own)."""
    sweep = _latest_sweep() if target == "latest" else Path(target)
    if not (sweep / JOBS_DIR).is_dir():
        raise ConfigError(
            f"sweep.resume={target}: {sweep} holds no sweep (no {JOBS_DIR}/ folder); give a sweep "
            "directory (outputs/train-sweeps/<date>/<time>) or sweep.resume=latest"
        )
    return [*extra, f"hydra.sweep.dir={_quote(sweep)}"]


def _latest_sweep() -> Path:
    jobs = [path for path in run_roots()[1].glob(f"*/*/{JOBS_DIR}") if path.is_dir()]
    if not jobs:
        raise ConfigError(
            f"sweep.resume=latest: no sweep under {run_roots()[1]}; pass the sweep directory instead "
            "(sweep.resume=outputs/train-sweeps/<date>/<time>)"
        )
    return max(jobs, key=lambda path: path.stat().st_mtime).parent


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def _typed(key: str, typed: list[str], wanted: dict, before: dict) -> str | None:
    """The typed override (`key=value`) that sets `key`: itself, or a group or node above it. A group
    typed again with the run's own choice (`optimizer=sgd` on an sgd run) sets nothing."""
    for override in typed:
        name = override.split("=", 1)[0].lstrip("+~")
        if key == name or key.startswith(name + "."):
            same_choice = "." not in name and wanted.get(f"{name}.name", 0) == before.get(f"{name}.name", 1)
            return None if same_choice else override
    return None


def _newer_options(before: dict, wanted: dict) -> dict:
    """Options cnnlab has added since the run was saved, each at the value that reproduces the run
    (BEFORE_THEY_EXISTED) or else its default: those of the request's keys outside a config group,
    and those of the run's own group choices (the request composes cnnlab's default groups)."""
    options = {}
    for key, value in wanted.items():
        group = key.split(".", 1)[0]
        if wanted.get(f"{group}.name") == before.get(f"{group}.name"):
            options[key] = value
    for group in ("model", "dataset", "optimizer", "scheduler", "loss", "augment"):
        choice = before.get(f"{group}.name", BEFORE_THEY_EXISTED.get(f"{group}.name"))
        packaged = resources.files("cnnlab.configs") / group / f"{choice}.yaml"
        if packaged.is_file():
            node = yaml.safe_load(packaged.read_text()) or {}
            node.pop("defaults", None)  # Hydra's composition list (vgg_small extends vgg), not an option
            flat = _flatten(node, f"{group}.")
            options.update({k: v for k, v in flat.items() if not (isinstance(v, str) and "${" in v)})
    return {key: BEFORE_THEY_EXISTED.get(key, value) for key, value in options.items()}


def _moved_with_data_dir(before: dict, wanted: dict, changes: dict) -> None:
    """Paths the run derived from data_dir (resolved when it was saved) follow a changed data_dir."""
    if "data_dir" not in changes:
        return
    old, new = (str(value) for value in changes["data_dir"])
    for key in ("dataset.loader.root", "dataset.loader.cache_dir"):
        path = before.get(key)
        if key not in changes and isinstance(path, str) and path.startswith(old):
            changes[key] = [path, new + path[len(old) :]]


def reconcile(
    requested: DictConfig, saved: dict[str, Any], typed: list[str], done_epochs: int
) -> tuple[DictConfig, dict]:
    """The config a resume runs with — the `saved` config with the `typed` overrides' allowed changes
    applied, and options cnnlab added since the run at their defaults — and the changes as
    {key: [before, after]}; any other typed change is a ConfigError. `done_epochs`: epochs trained."""
    wanted = _flatten(OmegaConf.to_container(requested, resolve=True))
    before = _flatten(saved)
    # Options newer than the run, of the run's own model and dataset (the request composes cnnlab's
    # default groups unless typed): the value that reproduces the run, else their default.
    added = {key: value for key, value in _newer_options(before, wanted).items() if key not in before}
    before.update(added)
    typed = [o for o in typed if not o.startswith(("trainer.resume=", "hydra."))]
    changes = {}
    # A group's `name` first: `model=lenet` is named by model.name, not by the first option it changes.
    for key in sorted(set(wanted) | set(before), key=lambda k: (not k.endswith(".name"), k)):
        if key == "trainer.resume" or key not in before or wanted.get(key) == before.get(key):
            continue
        override = _typed(key, typed, wanted, before)
        if override is None:
            continue  # not asked for: cnnlab's defaults changed since, or a resume without .hydra/
        if key not in RESUMABLE_CHANGES:
            what = "" if override.startswith(key + "=") else f" sets {key}={wanted.get(key)!r}, which"
            raise ConfigError(
                f"trainer.resume: {override}{what} differs from the run's {key}={before.get(key)!r}; "
                "a resume continues the run as configured and cannot change it: start a new run, or resume "
                f"without it (a resume may change only {', '.join(RESUMABLE_CHANGES)})"
            )
        changes[key] = [before.get(key), wanted.get(key)]
    _moved_with_data_dir(before, wanted, changes)
    if "trainer.epochs" in changes:
        _check_new_length(saved.get("scheduler", {}), *changes["trainer.epochs"], done_epochs)
    config = OmegaConf.create(saved)
    for key, after in {**added, **{key: after for key, (_, after) in changes.items()}}.items():
        OmegaConf.update(config, key, after, force_add=True)
    config.trainer.resume = requested.trainer.resume
    return config, changes


def _check_new_length(scheduler: dict, old: int, new: int, done_epochs: int) -> None:
    """A resume may lengthen or shorten a run only where no step's learning rate depends on its length."""
    warmup = scheduler.get("warmup_epochs") or 0
    if new < max(done_epochs, 1):
        raise ConfigError(
            f"trainer.resume: trainer.epochs={new} is fewer than the {done_epochs} epochs the run has "
            "trained; give at least that many"
        )
    if scheduler.get("name") in _LENGTH_SCHEDULES or warmup > min(old, new):
        raise ConfigError(
            f"trainer.resume: trainer.epochs cannot change from {old} to {new}: the learning-rate schedule "
            f"(scheduler={scheduler.get('name')}, warm-up {warmup} epochs) spans the run's length; start a "
            "new run with the longer schedule"
        )


def _matchable(config: dict) -> dict:
    """A run's config as trainer.resume=latest compares it: without the keys a resume may change, and
    with stream=auto standing for the mode it chose (a run records what auto decided)."""
    flat = _flatten(config)
    for key in (*RESUMABLE_CHANGES, "trainer.resume"):
        flat.pop(key, None)
    if flat.get("dataset.loader.stream") in (True, False):
        flat["dataset.loader.stream"] = "auto"
    return flat


def find_run_to_resume(command, overrides: list[str]) -> Path:
    """The newest run under outputs/ with a last.pt whose saved config equals this config, but for
    the keys a resume may change (so `trainer.resume=latest trainer.epochs=30` extends it)."""
    wanted = _matchable(OmegaConf.to_container(command.compose(overrides), resolve=True))
    candidates = []
    for root in run_roots():
        for last in Path(root).glob(f"**/{LAST}"):
            config_file = RunDir(last.parent).config
            if not config_file.is_file():
                continue
            try:
                saved = yaml.safe_load(config_file.read_text())
            except (OSError, yaml.YAMLError):
                continue  # unreadable: not a run this config could have made
            if isinstance(saved, dict) and _matchable(saved) == wanted:
                candidates.append(last)
    if not candidates:
        raise ConfigError(
            "trainer.resume=latest: no run under outputs/ has a last.pt and this config (other than "
            f"{', '.join(RESUMABLE_CHANGES)}); pass the run directory instead "
            "(trainer.resume=outputs/train/<date>/<time>)"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime).parent


def check_work_left(run: Path, done_epochs: int, epochs: int, scheduler: str) -> None:
    """A resume of a run that has trained all its epochs is one line saying what to do instead."""
    if done_epochs < epochs:
        return
    extend = (
        "start a new run with more trainer.epochs"
        if scheduler in _LENGTH_SCHEDULES
        else f"extend it with trainer.epochs={epochs + 10} (or more), or start a new run"
    )
    raise ConfigError(
        f"trainer.resume: {run} has finished all {epochs} of its epochs, so there is nothing to resume; "
        f"{extend} (scheduler={scheduler})"
    )
