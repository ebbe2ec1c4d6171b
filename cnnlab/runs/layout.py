"""A run directory's layout — the one place that names its files — and where runs live."""

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

CONFIG, METRICS, LAST, BEST = "config.yaml", "metrics.json", "last.pt", "best.pt"
HYDRA = ".hydra"  # Hydra's record of the job: config.yaml, hydra.yaml, overrides.yaml
CHECKPOINTS = ("best", "last")  # the checkpoints a run keeps, as commands name them


@dataclass(frozen=True)
class RunDir:
    """The files of one run directory."""

    path: Path

    @property
    def config(self) -> Path:
        """The run's fully resolved config, as `cnnlab train` saved it."""
        return self.path / CONFIG

    @property
    def metrics(self) -> Path:
        """How the run ended: status, figures, history."""
        return self.path / METRICS

    @property
    def last(self) -> Path:
        """The latest state: what a resume continues."""
        return self.path / LAST

    @property
    def best(self) -> Path:
        """The state of the best validation accuracy: what the test split, evaluate and predict use."""
        return self.path / BEST

    def checkpoint(self, name: str) -> Path:
        """best.pt or last.pt by its name in CHECKPOINTS."""
        return self.path / f"{name}.pt"

    def hydra(self, name: str) -> Path:
        """One of Hydra's records of the job (hydra.yaml, overrides.yaml)."""
        return self.path / HYDRA / name


def run_roots(command: str = "train") -> tuple[Path, Path]:
    """Where `command`'s single runs and sweeps are made: the fixed part of configs/hydra/cnnlab.yaml's
    run.dir and sweep.dir (outputs/train, outputs/train-sweeps)."""
    hydra = yaml.safe_load((resources.files("cnnlab.configs") / "hydra" / "cnnlab.yaml").read_text())
    roots = (
        hydra[kind]["dir"].replace("${hydra.job.name}", command).split("/${")[0] for kind in ("run", "sweep")
    )
    return tuple(Path(root) for root in roots)
