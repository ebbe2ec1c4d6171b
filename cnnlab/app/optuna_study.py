"""Continue an Optuna search whose study is kept in storage (hydra.sweeper.storage=sqlite:///…).

Hydra's Optuna sweeper adds `n_trials` trials to a stored study each time it runs and numbers its
jobs from 0 again. cnnlab's (hydra_plugins/cnnlab_sweepers) first settles the trials that an
interrupted sweep asked for but never told (the sweeper tells a whole batch after its last job ends),
from the sweep's job records: a finished job tells its result; a killed, failed or never started one
runs again as the same job, in its own directory (a killed one from its last.pt). Then the sweeper adds
only the trials that `n_trials` still lacks, each job numbered as its trial.
"""

from itertools import groupby
from pathlib import Path
from typing import Any

from hydra.utils import instantiate

from cnnlab.console import console
from cnnlab.runs.jobs import JobRecord, read_jobs


def continue_study(sweeper: Any) -> None:
    """Settle the stored study's untold trials and set `sweeper` (Hydra's OptunaSweeperImpl, after its
    setup) to add the trials that n_trials still lacks; a new or in-memory study: nothing to do."""
    import optuna
    from optuna.trial import TrialState

    if sweeper.storage is None:
        return
    try:
        study = optuna.load_study(study_name=sweeper.study_name, storage=sweeper.storage)
    except KeyError:  # no such study yet: Hydra's sweeper creates it
        return
    records = {record.num: record for record in read_jobs(Path(sweeper.sweep_dir))}
    fixed = fixed_overrides(records, study.trials)
    # Only a sweep launched again into its own directory settles trials: elsewhere a running trial
    # may be another sweep's, sharing the study.
    untold = (
        [trial for trial in study.trials if trial.state == TrialState.RUNNING] if fixed is not None else []
    )
    again = []
    for trial in untold:
        record = records.get(trial.number)
        if record is not None and record.status == "finished" and ran_for(record, trial.params):
            tell(study, trial.number, record.result)
        else:  # killed, failed, or never started: run again as job `trial.number` (from its last.pt)
            again.append(trial)
    # The launcher numbers a batch's jobs from its first: consecutive trials launch together.
    for _, group in groupby(enumerate(again), key=lambda pair: pair[1].number - pair[0]):
        batch = [trial for _, trial in group]
        overrides = [[*(f"{name}={value}" for name, value in t.params.items()), *fixed] for t in batch]
        returns = sweeper.launcher.launch(overrides, initial_job_idx=batch[0].number)
        for trial, returned in zip(batch, returns, strict=True):
            tell(study, trial.number, returned.return_value)
    sweeper.job_idx = len(study.trials)  # a job's number is its trial's
    sweeper.n_trials = max(sweeper.n_trials - len(study.trials), 0)
    seed = sweeper.config.hydra.sweeper.sampler.get("seed")
    if seed is not None:  # the sampler's first seed would propose the study's first trials again
        sweeper.sampler = instantiate(sweeper.config.hydra.sweeper.sampler, seed=seed + len(study.trials))
    console.print(
        f"Optuna study {study.study_name}: {len(study.trials)} trial(s) so far ({len(again)} interrupted, "
        f"run again); {sweeper.n_trials} to go"
    )


def fixed_overrides(records: dict[int, JobRecord], trials: list[Any]) -> list[str] | None:
    """The overrides every trial of this sweep shares (its jobs' overrides but the trial's own
    parameters); None when no job of the sweep directory ran one of the study's trials."""
    for number, record in records.items():
        if number < len(trials) and ran_for(record, trials[number].params):
            return [o for o in record.overrides if o.split("=", 1)[0] not in trials[number].params]
    return None


def ran_for(record: JobRecord | None, params: dict[str, Any]) -> bool:
    """Whether the job `record` ran with a trial's `params` (its overrides are `name=value`)."""
    return record is not None and all(f"{name}={value}" in record.overrides for name, value in params.items())


def tell(study: Any, number: int, result: Any) -> None:
    """Tell the study trial `number`'s result: a number completes it, anything else fails it."""
    from optuna.trial import TrialState

    if isinstance(result, int | float):
        study.tell(number, values=[float(result)])
    else:
        study.tell(number, state=TrialState.FAIL)
