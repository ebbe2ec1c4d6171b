"""An Optuna search whose study is kept in SQLite, killed with -9 and launched again into its directory,
continues its study to n_trials in total; without a kept study, launching again is refused."""

import pytest
from helpers import SLOW_RUN, job_records, learning_curves, metrics, one_error_line, run_cli, start, sweep_dir
from test_sweep_resume_cli import kill_job

optuna = pytest.importorskip("optuna")

# Three trials asked together (a batch: the sweeper tells them when its last job ends).
SEARCH = [
    "hparams_search=optuna",
    "hydra.sweeper.storage=sqlite:///study.db",
    "hydra.sweeper.n_jobs=3",
    *SLOW_RUN,
]


def trials(root):
    return optuna.load_study(study_name="cnnlab", storage=f"sqlite:///{root}/study.db").trials


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    """(an uninterrupted search of 3 trials, the root of one killed in job 1 (job 0 finished, job 2 not
    started) and resumed to 4 trials, its study as the kill left it, the resume's output)."""
    reference, victim = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("victim")
    assert run_cli("train", "-m", *SEARCH, "hydra.sweeper.n_trials=3", cwd=reference).returncode == 0
    kill_job(start(victim, "-m", *SEARCH, "hydra.sweeper.n_trials=4"), victim, "outputs/*/*/*/1_*")
    left = trials(victim)
    result = run_cli("train", "-m", *SEARCH, "hydra.sweeper.n_trials=4", "sweep.resume=latest", cwd=victim)
    return reference, victim, left, result


def test_the_killed_batch_is_run_again_as_its_own_jobs_and_the_study_reaches_n_trials(searches):
    reference, victim, left, result = searches
    assert result.returncode == 0, result.stderr
    assert [trial.state.name for trial in left] == ["RUNNING"] * 3  # a batch is told when it ends
    assert "Optuna study cnnlab: 3 trial(s) so far (2 interrupted, run again); 1 to go" in result.stdout
    assert result.stdout.count("resuming at epoch 2") == 1  # job 1, from its last.pt
    study = trials(victim)
    assert [trial.state.name for trial in study] == ["COMPLETE"] * 4
    records = job_records(sweep_dir(victim))
    assert [r["num"] for r in records] == [0, 1, 2, 3] and {r["status"] for r in records} == {"finished"}
    assert [r["attempts"] for r in records] == [1, 2, 1, 1]
    for trial, record in zip(study, records, strict=True):
        assert trial.value == metrics(sweep_dir(victim) / record["directory"])["best"]["val/acc"]
        assert trial.value == record["result"]
    # The first three trials are those of the uninterrupted search, to the last logged number.
    for trial, record, earlier in zip(study, records, job_records(sweep_dir(reference)), strict=False):
        assert record["directory"] == earlier["directory"]
        assert learning_curves(sweep_dir(victim) / record["directory"]) == learning_curves(
            sweep_dir(reference) / earlier["directory"]
        )
        assert trial.value == earlier["result"]
    assert "cnnlab report: 4 run(s)" in result.stdout


def test_a_larger_n_trials_adds_only_the_missing_trials(searches):
    _, victim, _, _ = searches
    more = run_cli("train", "-m", *SEARCH, "hydra.sweeper.n_trials=5", "sweep.resume=latest", cwd=victim)
    assert more.returncode == 0, more.stderr
    assert "4 trial(s) so far (0 interrupted, run again); 1 to go" in more.stdout
    assert [trial.state.name for trial in trials(victim)] == ["COMPLETE"] * 5
    assert [record["num"] for record in job_records(sweep_dir(victim))] == [0, 1, 2, 3, 4]
    assert "finished when the sweep last ran" not in more.stdout  # nothing launched but the new trial


def test_an_optuna_search_without_a_kept_study_is_not_launched_again(tmp_path):
    args = ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=1", "trainer.epochs=1"]
    assert run_cli("train", *args, cwd=tmp_path).returncode == 0
    again = run_cli("train", *args, "sweep.resume=latest", cwd=tmp_path)
    assert again.returncode == 2
    assert "Optuna search whose study is kept" in one_error_line(again.stderr)
