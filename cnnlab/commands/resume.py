"""Finding the run to resume and the overrides that recreate its config in its own directory."""

from pathlib import Path

import yaml
from omegaconf import OmegaConf

from cnnlab.errors import ConfigError

# Hydra keeps each run's command-line overrides here; resuming replays them.
_OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
_RUN_ROOTS = ("outputs/train", "outputs/train-sweeps")


def _quote(path: Path) -> str:
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_overrides(target: Path, extra: list[str]) -> list[str]:
    """The saved overrides of the run at `target` (a run directory or a checkpoint in it), then `extra`."""
    run_dir = target.parent if target.is_file() else target
    if not (run_dir / "last.pt").is_file():
        raise ConfigError(
            f"trainer.resume={target}: no last.pt in {run_dir}; give a cnnlab run directory "
            "(outputs/train/<date>/<time>) or trainer.resume=latest"
        )
    saved_file = run_dir / _OVERRIDES_FILE
    saved = yaml.safe_load(saved_file.read_text()) if saved_file.is_file() else []
    kept = [o for o in saved if not o.startswith(("trainer.resume=", "hydra."))]
    return [*kept, *extra, f"trainer.resume={_quote(run_dir)}", f"hydra.run.dir={_quote(run_dir)}"]


def find_run_to_resume(command, overrides: list[str]) -> Path:
    """The newest run under outputs/ with a last.pt whose saved config equals this config."""
    wanted = OmegaConf.to_container(command.compose(overrides), resolve=True)
    wanted["trainer"].pop("resume", None)
    candidates = []
    for root in _RUN_ROOTS:
        for last in Path(root).glob("**/last.pt"):
            config_file = last.parent / "config.yaml"
            if not config_file.is_file():
                continue
            saved = yaml.safe_load(config_file.read_text())
            saved.get("trainer", {}).pop("resume", None)
            if saved == wanted:
                candidates.append(last)
    if not candidates:
        raise ConfigError(
            "trainer.resume=latest: no run under outputs/ has a last.pt and this exact config; "
            "pass the run directory instead (trainer.resume=outputs/train/<date>/<time>)"
        )
    return max(candidates, key=lambda p: p.stat().st_mtime).parent
