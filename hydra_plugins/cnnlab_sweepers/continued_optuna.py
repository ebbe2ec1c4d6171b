"""Hydra's Optuna sweeper, continuing a study kept in storage to n_trials in total
(hparams_search=optuna selects it; the work is in cnnlab.app.optuna_study)."""

from importlib.util import find_spec
from typing import Any

# Hydra imports every module of hydra_plugins when it starts: without the sweep extra
# (hydra-optuna-sweeper) this one defines nothing, rather than make Hydra warn about it.
if find_spec("hydra_plugins.hydra_optuna_sweeper") is not None:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

    class ContinuedOptunaSweeper(OptunaSweeper):
        """OptunaSweeper whose sweep first settles the stored study's interrupted trials."""

        def sweep(self, arguments: list[str]) -> Any:
            """Continue the stored study (if any), then run Hydra's Optuna sweep."""
            from cnnlab.app.optuna_study import continue_study

            continue_study(self.sweeper)
            return super().sweep(arguments)
