"""Sweeps beyond one process (joblib, Optuna, submitit), the jobs' records, and TensorBoard HParams."""

import csv
import re
from pathlib import Path

import joblib
import pytest
import yaml
from helpers import job_records, metrics, run_cli, run_dirs, sweep_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from cnnlab.cli import main

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def hparams_of(run_dir: Path) -> tuple[dict, list[str], dict[str, float]]:
    """(hyperparameters, metric tags, metric values): what the HParams dashboard shows for the run."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    values = {}
    for key, value in start.session_start_info.hparams.items():
        values[key] = value.string_value if value.WhichOneof("kind") == "string_value" else value.number_value
    tags = [info.name.tag for info in experiment.metric_infos]
    return values, tags, {tag: events.Scalars(tag)[-1].value for tag in tags}


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory):
    """Two jobs in two joblib worker processes; lr=1e6 diverges. The workers get no thread limit from us."""
    root = tmp_path_factory.mktemp("joblib")
    with pytest.MonkeyPatch.context() as patch:
        for name in THREAD_VARIABLES:  # joblib sets them in its workers unless the user already did
            patch.delenv(name, raising=False)
        result = run_cli(
            "train", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer.lr=0.1,1e6",
            "trainer.clip_grad_norm=null",
            "trainer.epochs=2", cwd=root,
        )  # fmt: skip
    return sweep_dir(root), result


def test_joblib_jobs_run_at_once_in_two_processes_sharing_the_cores(joblib_sweep):
    sweep, result = joblib_sweep
    first, second = job_records(sweep)
    assert first["pid"] != second["pid"]
    assert max(first["started"], second["started"]) < min(first["ended"], second["ended"])  # overlapping
    threads = max(1, joblib.cpu_count() // 2)
    assert result.stdout.count(f"on cpu ({threads} threads)") == 2, result.stdout


def test_joblib_sweep_reports_its_failed_job_and_exits_1(joblib_sweep):
    sweep, result = joblib_sweep
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    summary, listed = result.stderr.splitlines()[-2:]
    assert summary == "cnnlab train: error: 1 job(s) failed:"
    job = "job 1 (optimizer.lr=1000000.0,trainer.clip_grad_norm=null,trainer.epochs=2)"
    assert listed.startswith(f"cnnlab train: error: {job}: loss became non-finite at epoch 1"), listed
    with (sweep / "report.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["optimizer.lr"], row["status"]) for row in rows] == [
        ("0.1", "finished"),
        ("1000000.0", "failed"),
    ]
    assert float(rows[0]["best_val_acc"]) == metrics(sweep / rows[0]["run"])["best"]["val/acc"] > 0.5
    assert "cnnlab report: 2 run(s)" in result.stdout


def test_each_job_logs_its_overrides_and_results_for_the_hparams_dashboard(joblib_sweep):
    sweep, _ = joblib_sweep
    finished, failed = (sweep / record["directory"] for record in job_records(sweep))
    values, tags, results = hparams_of(finished)
    assert values == {"optimizer.lr": 0.1, "trainer.epochs": 2}
    assert tags == [
        "hparams/best_val_acc",
        "hparams/final_val_acc",
        "hparams/final_train_loss",
        "hparams/test_acc",
        "hparams/test_loss",
    ]
    assert results["hparams/test_acc"] == pytest.approx(metrics(finished)["test"]["test/acc"])
    found = metrics(finished)
    assert results["hparams/best_val_acc"] == pytest.approx(found["best"]["val/acc"])
    assert results["hparams/final_train_loss"] == pytest.approx(found["final"]["train/loss"])
    # No add_hparams sub-run: the only folders are Hydra's and the projector's (<epoch>/penultimate).
    folders = sorted(p.name for p in finished.iterdir() if p.is_dir())
    assert folders == [".hydra", "00002"] and (finished / "00002" / "penultimate").is_dir()
    events = EventAccumulator(str(failed))
    events.Reload()
    with pytest.raises(KeyError):  # a diverged run has no results to compare
        events.PluginTagToContent("hparams")


def test_single_run_logs_its_command_line_overrides_as_hparams(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "model=lenet", "optimizer.lr=0.5", "trainer.epochs=1", "resize=[20,20]"]) == 0
    (run_dir,) = run_dirs(tmp_path)
    values, _, results = hparams_of(run_dir)
    assert values == {"model": "lenet", "optimizer.lr": 0.5, "trainer.epochs": 1, "resize": "[20, 20]"}
    assert results["hparams/final_val_acc"] == pytest.approx(metrics(run_dir)["final"]["val/acc"])
    assert "cnnlab report" not in capsys.readouterr().out  # a single run prints no sweep report


def test_optuna_preset_runs_4_trials_and_reports_the_best_parameters(cli):
    result = cli("train", "-m", "hparams_search=optuna", "hydra.sweeper.n_trials=4", "trainer.epochs=1")
    assert result.returncode == 0, result.stderr
    sweep = sweep_dir(cli.cwd)
    runs = run_dirs(cli.cwd)
    assert len(runs) == 4 and all(metrics(run)["status"] == "finished" for run in runs)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(metrics(run)["best"]["val/acc"] for run in runs)
    assert set(best["best_params"]) == {"optimizer.lr", "optimizer.weight_decay", "trainer.batch_size"}
    assert 0.003 <= best["best_params"]["optimizer.lr"] <= 0.5
    assert best["best_params"]["trainer.batch_size"] in (32, 64, 128)
    assert re.search(r"Best parameters: \{'optimizer.lr': ", result.stdout)
    assert "cnnlab report: 4 run(s)" in result.stdout
    output = result.stdout + result.stderr
    assert "setup plugin alembic" not in output and "A new study created" not in output  # libraries quiet


def test_submitit_local_launcher_runs_a_job(cli):
    result = cli("train", "-m", "hydra/launcher=submitit_local", "trainer.epochs=1")
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(cli.cwd)
    assert metrics(run_dir)["status"] == "finished"
    logs = list((sweep_dir(cli.cwd) / ".submitit").glob("*/*_log.out"))
    assert any("epoch 1/1" in log.read_text() for log in logs)  # the training ran inside submitit's job
    assert "cnnlab report: 1 run(s)" in result.stdout
